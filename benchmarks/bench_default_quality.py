"""Quality of a default-model bundle on held-out procedural assets (issue 7, deliverable 2), per condition.

    python benchmarks/bench_default_quality.py [--bundle DIR] [--count 20] [--steps 25] [--device cpu|cuda]
        [--conditions image,static,text] [--gltf FILE ...]
        [--reconstruct [--fit-preset cpu|fast]] [--motion M] [--json FILE] [--out DIR]

Per asset k of ``write_procedural_dataset(N, seed=1)`` (the bundle was trained on seed 0), its ground-truth front
orbit V and static orbit V̄ are rendered at the bundle's size and view count; then, for each condition,
  image:  prompt = V's τ0 front view (``multi_frame0.png``, loaded as `generate --image` loads it),
  static: prompt = V̄ (loaded as `generate --static` loads it),
  text:   prompt = the asset's caption (only when asked for; its copy-τ0 column is a reference, not a baseline),
the orbit is sampled with `load_default(condition)` and 3D-aware CFG (the bundle's w1, w2 unless ``--w1 / --w2``;
``--steps`` DDIM steps, seed k),
conditioned on the ground truth's motion magnitude m(V, V̄) (or ``--motion``). Scores, all on white in [0, 1]:
  PSNR / SSIM  generated V vs ground-truth V, the same cameras and times, views 1…T−1 (view 0 is the prompt's own
               camera at τ0, where the baseline is exact), beside the trivial copy-τ0 baseline: for static, V̄
               itself (the asset frozen at τ0); for image, the prompt image repeated at every view;
  m            Eq. 1 over all T views, of the generated V against the ground-truth V̄ (for static that is the very
               orbit the model was given; for image the model never saw V̄), beside the ground truth's m(V, V̄);
  4D           with ``--reconstruct``: the whole product path instead, `diffusion4d generate` with the bundle (its
               guidance; V̄′ from the 3D-aware base for image prompts, then V, then the default fit method with the
               ``--fit-preset`` schedule, as `make demo` runs it with ``--fit-preset cpu --steps 10``); its orbit
               is scored as above, and the 4D asset rendered at the ground-truth cameras and times too. The
               seconds are then generate's whole time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_reconstruct import _scores
from diffusion4d.assets.procedural import write_procedural_dataset
from diffusion4d.data import layout
from diffusion4d.data.render_job import RenderSettings, asset_uid, run_render_job
from diffusion4d.io import write_json_atomic
from diffusion4d.metrics import motion_magnitude
from diffusion4d.pipelines.default import default_bundle_dir, load_default, read_manifest
from diffusion4d.pipelines.orbit import load_image_prompt, load_static_prompt, write_orbit

CONDITIONS = ("image", "static")  # the default; "text" is measured when asked for
ALL_CONDITIONS = (*CONDITIONS, "text")
#: table columns: (JSON key, header, format); the fit's three only with --reconstruct
COLUMNS = [("sample_s", "sample s", ".1f"), ("psnr", "PSNR", ".2f"), ("copy_psnr", "copy PSNR", ".2f"),
           ("ssim", "SSIM", ".3f"), ("copy_ssim", "copy SSIM", ".3f"), ("m", "m", ".4f"), ("m_gt", "m GT", ".4f")]
FIT_COLUMNS = [("fit_psnr", "4D PSNR", ".2f"), ("fit_ssim", "4D SSIM", ".3f")]


def to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] → [T, 3, H, W] in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def ground_truth(folder: Path) -> tuple[layout.Orbit, torch.Tensor, torch.Tensor]:
    """(V's orbit record, V [T, 3, S, S], V̄ [T, 3, S, S]) of a rendered asset, on white in [0, 1]."""
    orbit = layout.read_orbit(folder, layout.DYNAMIC)
    return orbit, layout.composite(orbit.images), layout.composite(layout.read_orbit(folder, layout.STATIC).images)


def prompt_of(condition: str, folder: Path, size: int, frames: int) -> dict:
    """The pipeline's keyword prompt for ``condition``, from the ground-truth orbit folder."""
    if condition == "image":
        return {"image": load_image_prompt(layout.frame_path(folder, layout.DYNAMIC, 0), size)}
    if condition == "text":
        return {"prompt": caption_of(folder)}
    return {"static": load_static_prompt(folder, size, frames)[0]}


def caption_of(folder: Path) -> str:
    """The asset's caption, as the render job recorded it (ValueError naming the file when it has none)."""
    caption = json.loads((folder / layout.METADATA).read_text()).get("caption")
    if not caption:
        raise ValueError(f"{folder / layout.METADATA}: no caption, so no text prompt for this asset")
    return caption


def copy_baseline(condition: str, target: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """The copy-τ0 prediction [T, 3, S, S]: V̄ for static prompts, the τ0 front view everywhere for image ones and,
    as a reference only, for text ones (a text prompt gives no image to copy)."""
    return static if condition == "static" else target[:1].expand_as(target)


def generate_4d(args, bundle: Path, condition: str, gt_dir: Path, gen_dir: Path, orbit: layout.Orbit, seed: int,
                motion: float) -> tuple[np.ndarray, float, torch.Tensor]:
    """The product path, `diffusion4d generate` with the bundle (what `make demo` runs): the prompt → V̄′ (image) →
    V → 4D Gaussians (the default method, the fit preset of ``args.fit_preset``) → (V uint8 [T, S, S, 3], seconds,
    the asset's renders [T, 3, S, S] at the ground-truth cameras and times)."""
    from diffusion4d.pipelines.generate import FIT_PRESET, GenerateSettings, Prompt, generate
    from diffusion4d.reconstruction.asset import Asset4D

    preset = next(k for k, v in FIT_PRESET.items() if v == args.fit_preset)
    if condition == "image":
        prompt = Prompt.one_of(image=layout.frame_path(gt_dir, layout.DYNAMIC, 0))
    elif condition == "static":
        prompt = Prompt.one_of(static=gt_dir)
    else:
        prompt = Prompt.one_of(text=caption_of(gt_dir))
    start = time.perf_counter()
    generate(prompt, gen_dir, GenerateSettings(motion=motion, seed=seed, preset=preset, steps=args.steps,
                                               device=args.device, bundle=bundle, overwrite=True, progress=False))
    seconds = time.perf_counter() - start
    renders = renders_at(Asset4D.load(gen_dir / "asset4d"), orbit)
    generated = np.stack([np.asarray(Image.open(layout.frame_path(gen_dir / "orbit", layout.DYNAMIC, i)))[..., :3]
                          for i in range(len(orbit.c2w))])
    return generated, seconds, renders


def renders_at(asset, orbit: layout.Orbit) -> torch.Tensor:
    """A 4D asset rendered at the orbit's cameras and times, [T, 3, S, S] in [0, 1] on the CPU."""
    S = orbit.images.shape[1]
    with torch.no_grad():
        frames = torch.stack([asset.render(c2w, orbit.x_fov, orbit.y_fov, S, S, float(t))
                              for c2w, t in zip(orbit.c2w, orbit.timestamps)])
    return frames.permute(0, 3, 1, 2).clamp(0, 1).cpu()


def render_held_out(root: Path, count: int, size: int, frames: int, gltf: list[str] | None = None) -> list[str]:
    """The uids of ``count`` procedural assets of seed 1 (never trained on), or of the ``gltf`` files, rendered into
    ``root/orbits``: the front orbit V and its static orbit V̄, ``frames`` views at ``size``²."""
    start = time.perf_counter()
    assets = [Path(g) for g in gltf] if gltf else write_procedural_dataset(root / "assets", count, seed=1,
                                                                            progress=False)
    report = run_render_job(assets, root / "orbits", RenderSettings(size=size, frames=frames, random_starts=0),
                            workers=1, progress=False)
    if report.failed:  # a real asset that does not load is reported; the others are measured
        print(report.summary(), flush=True)
    rendered = [asset_uid(path) for path in assets if (root / "orbits" / asset_uid(path) / layout.METADATA).exists()]
    if not rendered:
        raise SystemExit(f"no asset could be rendered into {root / 'orbits'}")
    print(f"{len(rendered)} held-out assets rendered ({frames} views at {size}²) in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return rendered


def evaluate_condition(condition: str, args, bundle: Path, uids: list[str], root: Path) -> list[dict]:
    manifest = read_manifest(bundle)
    size, frames = manifest["image_size"], manifest["num_frames"]
    pipe = load_default(condition, device=args.device, bundle=bundle)
    if args.w1 is not None or args.w2 is not None:  # else the bundle's guidance for this condition
        pipe.w1, pipe.w2 = pipe.w1 if args.w1 is None else args.w1, pipe.w2 if args.w2 is None else args.w2
    rows = []
    for seed, uid in enumerate(uids):
        gt_dir, gen_dir = root / "orbits" / uid, root / condition / uid
        orbit, target, static = ground_truth(gt_dir)
        m_gt = float(motion_magnitude(target, static))
        motion = m_gt if args.motion is None else args.motion
        fit = None
        if args.reconstruct:  # sampled inside generate, with the bundle's guidance
            generated, sample_s, fit = generate_4d(args, bundle, condition, gt_dir, gen_dir, orbit, seed, motion)
        else:
            start = time.perf_counter()
            generated = pipe(**prompt_of(condition, gt_dir, size, frames), motion=motion, steps=args.steps,
                             seed=seed, progress=False, c2w=orbit.c2w)
            sample_s = time.perf_counter() - start
            write_orbit(generated, gen_dir / "orbit", c2w=orbit.c2w)
        pred = to_unit(generated)
        (p, s), (cp, cs) = _scores(pred, target), _scores(copy_baseline(condition, target, static), target)
        row = {"uid": uid, "seed": seed, "sample_s": sample_s, "psnr": p, "ssim": s, "copy_psnr": cp,
               "copy_ssim": cs, "m": float(motion_magnitude(pred, static)), "m_gt": m_gt, "w1": pipe.w1,
               "w2": pipe.w2}
        if fit is not None:
            row.update(zip(("fit_psnr", "fit_ssim"), _scores(fit, target)))
        print(f"{condition} {uid}: {p:.2f} dB (copy {cp:.2f}), SSIM {s:.3f}, m {row['m']:.4f} (GT {m_gt:.4f}), "
              f"{sample_s:.1f} s" + (f"; 4D asset {row['fit_psnr']:.2f} dB" if fit is not None else ""),
              flush=True)
        rows.append(row)
    return rows


def guidance_note(args) -> str:
    given = ", ".join(f"{k} {v}" for k, v in (("w1", args.w1), ("w2", args.w2)) if v is not None)
    return f"guidance {given}" if given else "each condition's guidance from the bundle"


def mean_row(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("uid", "seed")}


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| asset | " + " | ".join(head for _, head, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in [(r["uid"], r) for r in rows] + [("**mean**", mean_row(rows))]:
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:{fmt}}" for k, _, fmt in columns) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="default-model bundle (default: the one shipped in the package)")
    p.add_argument("--count", type=int, default=20, help="held-out procedural assets (seed 1)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--motion", type=float, help="m to condition on (default: each ground truth's m(V, V̄))")
    p.add_argument("--w1", type=float, help="guidance w1 of Eq. 3 (default: the bundle's, manifest 'guidance')")
    p.add_argument("--w2", type=float, help="guidance w2 of Eq. 3 (default: the bundle's)")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated: image,static,text")
    p.add_argument("--gltf", nargs="+", help="measure these glTF/GLB assets (e.g. the Khronos samples) instead of "
                                             "procedural ones; their static orbit is the asset at τ0")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reconstruct", action="store_true", help="also fit each generated orbit and score its renders")
    p.add_argument("--fit-preset", choices=("cpu", "fast"), default="cpu")
    p.add_argument("--json", help="write the rows and means to this file")
    p.add_argument("--out", help="keep assets, orbits, samples and fits here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.count < 1 or args.steps < 1:
        p.error("--count and --steps must be ≥ 1")
    args.conditions = tuple(c for c in args.conditions.split(",") if c)
    if not args.conditions or set(args.conditions) - set(ALL_CONDITIONS):
        p.error(f"--conditions takes a comma-separated subset of {','.join(ALL_CONDITIONS)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    manifest = read_manifest(bundle)  # FileNotFoundError naming the folder before anything is rendered
    size, frames = manifest["image_size"], manifest["num_frames"]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_default_quality_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        uids = render_held_out(root, args.count, size, frames, args.gltf)
        results = {c: evaluate_condition(c, args, bundle, uids, root) for c in args.conditions}
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    columns = COLUMNS + (FIT_COLUMNS if args.reconstruct else [])
    fit_note = f"; through `generate`, fit preset {args.fit_preset}, the default method" if args.reconstruct else ""
    motion = "each ground truth's m" if args.motion is None else f"m = {args.motion}"
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"\nbundle {bundle}; {args.count} held-out procedural assets (seed 1), {frames} views at {size}²; "
          f"{guidance_note(args)}, {args.steps} DDIM steps, conditioned on {motion}{fit_note}; "
          f"{args.device} ({where})")
    for condition in args.conditions:
        print(f"\n**{condition} condition**\n\n{markdown_table(results[condition], columns)}")
    record = {"bundle": str(bundle), "count": args.count, "steps": args.steps, "w1": args.w1, "w2": args.w2,
              "motion": args.motion, "size": size, "frames": frames, "device": args.device,
              "fit_preset": args.fit_preset if args.reconstruct else None,
              "rows": results, "means": {c: mean_row(rows) for c, rows in results.items()}}
    if args.json:
        write_json_atomic(Path(args.json), record)
    return record


if __name__ == "__main__":
    main()
