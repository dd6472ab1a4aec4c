"""Can the default model's recipe overfit a handful of orbits? (issue 21, deliverable 1: diagnose before scaling)

    python benchmarks/probe_overfit.py --out DIR [--assets 4] [--steps-3d 1500] [--steps-4d 1000]
        [--schedule sd|zero-snr] [--cameras] [--bundle B] [--sample-steps 25] [--json FILE]

The first ``--assets`` procedural assets of seed 0 (the default model's training seed) are rendered at the bundle's
size and view count, one front orbit V and its static orbit V̄ each, and encoded with the bundle's VAE. On those
orbits alone, from scratch, the recipe's three image-path models are trained as `train_default_model.py` trains them
(small preset, learned image encoder, v-prediction; bf16 and a CUDA graph on a GPU):
    image 3D-aware ε̄ (V̄ from its first view)  →  image 4D-aware ε and static 4D-aware ε (V from m and the condition).
Each orbit is then sampled back from its own condition (w1 = 1, w2 = 0: the model alone, no guidance) and scored on
white against its ground truth: view 0 (the prompt's own view) and views 1…T−1 apart, beside the VAE's round trip of
the same frames (the ceiling) and copy-τ0 (the prompt image everywhere; V̄ for the static model).

A recipe that cannot bring its own training orbits back near the VAE's ceiling has a bug or a bottleneck in its
conditioning, latent scaling, noise schedule or sampler; scaling it up would not help.

    --schedule sd        Stable Diffusion's scaled-linear betas, "leading" timesteps (the bundle of session 5)
    --schedule zero-snr  the same betas rescaled to zero terminal SNR, "trailing" timesteps (Lin et al. 2024)
    --cameras            the models also get each frame's camera (CameraEmbedding)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench_default_quality import to_unit
from diffusion4d.io import write_json_atomic
from diffusion4d.metrics import motion_magnitude, psnr

SCHEDULES = {  # TrainConfig fields of each --schedule
    "sd": dict(rescale_betas_zero_snr=False, timestep_spacing="leading"),
    "zero-snr": dict(rescale_betas_zero_snr=True, timestep_spacing="trailing"),
}


def make_data(out: Path, count: int, size: int, frames: int) -> Path:
    """out/orbits: the first ``count`` procedural assets of seed 0, front orbit + static orbit each, all kept."""
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.curate import CurationConfig, curate
    from diffusion4d.data.render_job import RenderSettings, run_render_job

    assets = write_procedural_dataset(out / "assets", count=count, seed=0, progress=False)
    run_render_job(assets, out / "orbits", RenderSettings(frames=frames, size=size, random_starts=0), progress=False)
    curate(out / "orbits", CurationConfig(s_low=-1.0, s_high=1.0, val_fraction=0.0), progress=False)
    return out / "orbits"


def float32_vae(bundle: Path, out: Path) -> Path:
    from diffusers import AutoencoderKL

    if not (out / "config.json").exists():
        AutoencoderKL.from_pretrained(bundle / "vae", torch_dtype=torch.float32).save_pretrained(out)
    return out


def train_models(args, orbits: Path, vae: Path, runs: Path) -> dict[str, Path]:
    from diffusion4d.diffusion.train import TrainConfig, train

    gpu = torch.cuda.is_available()
    common = dict(data=str(orbits), preset="small", vae=str(vae), image_encoder="learned",
                  batch_size=args.assets, mixed_precision="bf16" if gpu else "no", cuda_graph=gpu,
                  prediction_type="v_prediction", ema_decay=0.995, log_every=50, data_workers=0,
                  camera_embedding=args.cameras, latent_cache=str(runs / "latents.safetensors"),
                  **SCHEDULES[args.schedule])
    plan = {"image_3d": dict(condition="image", stage="3d", max_steps=args.steps_3d, lr=2e-4),
            "image_4d": dict(condition="image", stage="4d", max_steps=args.steps_4d, lr=1e-4),
            "static_4d": dict(condition="static", stage="4d", max_steps=args.steps_4d, lr=1e-4)}
    done = {}
    for name, kw in plan.items():
        init = str(done["image_3d"]) if kw["stage"] == "4d" else None
        config = TrainConfig(out=str(runs / name), init=init, checkpoint_every=kw["max_steps"], **common, **kw)
        start = time.perf_counter()
        done[name] = train(config, resume=True, progress=False)
        last = json.loads((done[name] / "loss.jsonl").read_text().splitlines()[-1])
        print(f"[{name}] {kw['max_steps']} steps in {time.perf_counter() - start:.1f} s, last loss "
              f"{last['loss']:.4f}", flush=True)
    return done


def score(args, orbits: Path, runs: dict[str, Path]) -> list[dict]:
    from diffusion4d.data import layout
    from diffusion4d.data.dataset import read_manifest
    from diffusion4d.pipelines.orbit import OrbitPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipes = {c: OrbitPipeline.from_run(runs[f"{c}_4d"], base=runs["image_3d"], device=device)
             for c in ("image", "static")}
    rows = []
    for k, entry in enumerate(r for r in read_manifest(orbits) if r.get("kept")):
        folder = orbits / entry["uid"]
        dynamic, static = layout.read_orbit(folder, layout.DYNAMIC), layout.read_orbit(folder, layout.STATIC)
        target, still = layout.composite(dynamic.images), layout.composite(static.images)
        size = target.shape[-1]
        pipe = pipes["image"]
        roundtrip = to_unit(pipe.decode(pipe.encode(target * 2 - 1)))
        m = float(motion_magnitude(target, still))
        row = {"uid": entry["uid"], "vae_view0": float(psnr(roundtrip, target)[0]),
               "vae_others": float(psnr(roundtrip, target)[1:].mean()), "m_gt": m}
        for condition, pipe in pipes.items():
            prompt = {"image": target[0] * 2 - 1} if condition == "image" else {"static": still * 2 - 1}
            frames = to_unit(pipe(**prompt, motion=m, w1=1.0, w2=0.0, steps=args.sample_steps, seed=k,
                                  progress=False, c2w=dynamic.c2w))
            copy = target[:1].expand_as(target) if condition == "image" else still
            views = psnr(frames, target)
            row.update({f"{condition}_view0": float(views[0]), f"{condition}_others": float(views[1:].mean()),
                        f"{condition}_copy": float(psnr(copy, target)[1:].mean()),
                        f"{condition}_m": float(motion_magnitude(frames, still))})
            if args.frames_out:
                out = Path(args.frames_out) / f"{condition}_{entry['uid']}.npy"
                out.parent.mkdir(parents=True, exist_ok=True)
                np.save(out, (frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        rows.append(row)
        print(" ".join(f"{key} {value:.2f}" if isinstance(value, float) else str(value)
                       for key, value in row.items()), f"({size}²)", flush=True)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--bundle", help="the bundle whose VAE, size and view count are used (default: the shipped one)")
    p.add_argument("--assets", type=int, default=4)
    p.add_argument("--steps-3d", type=int, default=1500)
    p.add_argument("--steps-4d", type=int, default=1000)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="sd")
    p.add_argument("--cameras", action="store_true")
    p.add_argument("--size", type=int, help="image side (default: the bundle's; 64 makes a CPU probe practical)")
    p.add_argument("--frames", type=int, help="views per orbit (default: the bundle's)")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--json", help="write the rows and their means here")
    p.add_argument("--frames-out", help="save each sampled orbit here as uint8 .npy (for a contact sheet)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from diffusion4d.pipelines.default import default_bundle_dir, read_manifest

    args = parse_args(argv)
    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    manifest = read_manifest(bundle)
    out = Path(args.out)
    orbits = out / "orbits" if (out / "orbits" / "manifest.jsonl").exists() else make_data(
        out, args.assets, args.size or manifest["image_size"], args.frames or manifest["num_frames"])
    runs = train_models(args, orbits, float32_vae(bundle, out / "vae"), out / "runs")
    rows = score(args, orbits, runs)
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "uid"}
    print("means: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
    record = {"schedule": args.schedule, "cameras": args.cameras, "steps_3d": args.steps_3d,
              "steps_4d": args.steps_4d, "assets": args.assets, "rows": rows, "means": means}
    if args.json:
        write_json_atomic(Path(args.json), record)
    return record


if __name__ == "__main__":
    main()
