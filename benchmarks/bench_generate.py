"""End-to-end image → 4D asset time per stage (`diffusion4d generate --image`): V̄′, V, fit, export.

    # CPU, the cpu preset (the issue's goal: ≤ 120 s on a plain 2-core machine), with the shipped bundle, a given
    # one, or small-preset models with random weights (timing only) when neither exists:
    python benchmarks/bench_generate.py --preset cpu [--bundle DIR | --random-small]
    # GPU, the gpu preset with full-size UNets (random weights: timing only; the goal is ≤ 30 s in all):
    python benchmarks/bench_generate.py --preset gpu --full-size [--steps 50] [--dtype bf16]

The image prompt is the front view of a procedural asset at the model's size. The model load and the prompt's
preparation are outside the stage times (reported apart); each stage's time is what `generate` records in
timing.json. ``--repeats N`` runs the whole thing N times in fresh folders (on a GPU the first run also pays the
one-off costs: CUDA graph capture, gsplat's JIT build when it is not cached) and reports each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusion4d.pipelines.generate import STAGES, GenerateSettings, Prompt, generate, procedural_image_prompt
from diffusion4d.pipelines.orbit import OrbitPipeline


def random_small_bundle(folder: Path) -> Path:
    """A bundle of small-preset models with random weights (the shipped model's sizes, for timing)."""
    from diffusers import DDIMScheduler

    from diffusion4d.diffusion.train_vae import build_vae
    from diffusion4d.models.image_tokens import LearnedImageEncoder
    from diffusion4d.models.presets import build_unet
    from diffusion4d.pipelines.default import MODELS, write_bundle

    torch.manual_seed(0)
    build_vae().save_pretrained(folder / "vae")
    runs = {}
    for name in sorted({p for pair in MODELS.values() for p in pair}):
        kind = "text" if name.startswith("text") else "image"
        run = folder / "runs" / name
        unet = build_unet(kind, "small")
        unet.save_pretrained(run / "unet")
        DDIMScheduler().save_pretrained(run / "scheduler")
        LearnedImageEncoder(unet.config.cross_attention_dim).save_pretrained(run / "image_encoder")
        size = unet.config.sample_size * 8
        (run / "run.json").write_text(json.dumps({"condition": name.split("_")[0], "num_frames": 24,
                                                  "image_size": size, "text_encoder": "minilm",
                                                  "image_encoder": "learned"}))
        runs[name] = run
    return write_bundle(folder / "default", runs, folder / "vae", {"note": "random weights, for timing"})


def full_size_pipeline(dtype: torch.dtype, frames: int = 24, size: int = 256, preset: str = "full",
                       device: str = "cuda") -> OrbitPipeline:
    """Image → orbit with full-size UNets (4D-aware + 3D-aware base; random weights) and a random ×8 VAE.
    (``preset="tiny"``, ``device="cpu"``: the same construction at toy size, to check this script on a CPU.)"""
    from diffusers import AutoencoderKL, DDIMScheduler

    from diffusion4d.models.image_tokens import LearnedImageEncoder
    from diffusion4d.models.presets import build_unet

    torch.manual_seed(0)
    with torch.device(device):  # initialised on the GPU: far faster than 2 × 1.4 B parameters on the CPU
        unet = build_unet("image", preset).to(dtype).eval()
        base = build_unet("image", preset).to(dtype).eval()
        # 4 levels: the ×8 factor of the paper's SD VAE; small widths (its cost is a few decodes, not the loop)
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(32, 64, 128, 128), norm_num_groups=32, latent_channels=4)
        vae = vae.to(dtype).eval()
        encoder = LearnedImageEncoder(unet.config.cross_attention_dim).to(dtype).eval()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False)
    return OrbitPipeline(unet=unet, vae=vae, scheduler=scheduler, encoders={"image": encoder}, condition="image",
                         num_frames=frames, image_size=size, base_unet=base, device=device, dtype=dtype)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--bundle", help="default-model bundle (default: the shipped one)")
    p.add_argument("--random-small", action="store_true", help="small-preset models with random weights")
    p.add_argument("--full-size", action="store_true", help="GPU: full-size UNets with random weights")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the preset's)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="--full-size weights")
    p.add_argument("--method", choices=("4dgs", "scgs"), default="4dgs")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--guidance-every", default="", metavar="K[,K…]",
                   help="guidance reuse k of both samplings (default: the preset's); several: each in turn, "
                        "side by side in this process")
    p.add_argument("--out", help="keep the outputs here (default: a temporary folder)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    device = "cuda" if args.preset == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--preset gpu needs a CUDA device")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_generate_"))
    root.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    pipeline, bundle = None, args.bundle
    if args.full_size:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        pipeline = full_size_pipeline(dtype)
        size, frames, what = pipeline.image_size, pipeline.num_frames, f"full-size UNets, random weights, {args.dtype}"
    else:
        from diffusion4d.pipelines.default import default_bundle_dir, load_default, read_manifest

        if args.random_small or (bundle is None and not (default_bundle_dir() / "manifest.json").is_file()):
            print("no bundle given or shipped: small-preset models with random weights (timing only)")
            bundle = random_small_bundle(root / "random_small")
        bundle = Path(bundle or default_bundle_dir())
        manifest = read_manifest(bundle)
        size, frames, what = manifest["image_size"], manifest["num_frames"], f"bundle {bundle}"
        pipeline = load_default("image", device=device, bundle=bundle)  # loaded once, outside the stage times
    load_s = time.perf_counter() - start
    image = procedural_image_prompt(root, size, frames)
    print(f"model ready in {load_s:.1f} s ({what}); prompt {image}")

    rows = []
    for every in [int(k) for k in args.guidance_every.split(",") if k] or [None]:
        for k in range(args.repeats):
            settings = GenerateSettings(preset=args.preset, steps=args.steps, guidance_every=every,
                                        method=args.method, device=device, progress=False)
            result = generate(Prompt.one_of(image=image), root / f"run{k}_k{every}", settings, pipeline=pipeline)
            every_used = json.loads((result.out / "stages.json").read_text())["inputs"].get("guidance_every", 1)
            rows.append({**result.stages, "total": result.seconds, "guidance_every": every_used})
            print(f"run {k}, guidance every {every_used}: " + ", ".join(f"{name} {rows[-1][name]:.1f} s"
                                                                       for name in (*STAGES, "total")))
    steps = json.loads(result.timing.read_text())["steps"]
    header = f"| run | guidance every | {' | '.join(STAGES)} | total |"
    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"\nimage → 4D, preset {args.preset} ({what}; {frames} views at {size}², {steps} DDIM steps, "
          f"{args.method}) on {where}")
    print(header + "\n" + "|---" * (len(STAGES) + 3) + "|")
    for k, row in enumerate(rows):
        cells = " | ".join(f"{row[n]:.1f} s" for n in (*STAGES, "total"))
        print(f"| {k} | {row['guidance_every']} | {cells} |")
    print(f"(model load {load_s:.1f} s, not in the totals; outputs in {root})")
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "model": what, "steps": steps,
                                               "size": size, "frames": frames, "load_s": load_s, "runs": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
