"""What reusing Eq. 3's guidance term costs in quality and saves in time, on the default models (issue 4).

    python benchmarks/bench_guidance_reuse.py [--every 1,2,3,4] [--count 8] [--steps 25] [--conditions image,static]
        [--bundle DIR] [--device cpu|cuda] [--workers N] [--json FILE]

The held-out procedural assets of `bench_default_quality.py` (seed 1) are rendered once; then, per condition and per
k in ``--every``, every asset's orbit is sampled with ``OrbitPipeline.guidance_every = k`` (k = 1: Eq. 3 at every
step, the reference), the same seed, steps, guidance and motion (the ground truth's m). Printed per k, as means over
the assets: the sampling time and its ratio to k = 1 (same process, side by side), PSNR / SSIM of the orbit against
the ground-truth V (views 1…T−1, as `bench_default_quality.py` scores), the difference in that PSNR from k = 1, and
PSNR of the orbit against k = 1's own orbit (how far reuse moves the sample; ∞ when identical).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_default_quality import ground_truth, prompt_of, to_unit
from bench_reconstruct import _scores
from diffusion4d.assets.procedural import write_procedural_dataset
from diffusion4d.data.render_job import RenderSettings, asset_uid, run_render_job
from diffusion4d.io import write_json_atomic
from diffusion4d.metrics import motion_magnitude, psnr
from diffusion4d.pipelines.default import default_bundle_dir, load_default, read_manifest


def orbit_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two orbits [T, 3, H, W] in [0, 1] over all their pixels at once (one MSE; inf when identical)."""
    return float(psnr(a.flatten(0, 1)[None], b.flatten(0, 1)[None])[0])


def table(condition: str, by_k: dict, args, frames: int, size: int, pipe) -> str:
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    ref = by_k[1]
    lines = [f"\n**{condition}** ({args.count} held-out assets, {frames} views at {size}², {args.steps} DDIM steps, "
             f"w1 {pipe.w1}, w2 {pipe.w2}; {args.device}, {where})\n",
             "| k | sample s | × k=1 | PSNR vs GT | Δ vs k=1 | SSIM | PSNR vs k=1's orbit |",
             "|---|---|---|---|---|---|---|"]
    for k, r in by_k.items():
        lines.append(f"| {k} | {r['seconds']:.2f} | {r['seconds'] / ref['seconds']:.2f} | {r['psnr']:.2f} | "
                     f"{r['psnr'] - ref['psnr']:+.2f} | {r['ssim']:.3f} | {r['psnr_vs_k1']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", default="1,2,3,4", help="comma-separated k values; 1 is always included (reference)")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--conditions", default="image,static")
    p.add_argument("--bundle")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="render processes for the held-out assets (default: up to 8)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    ks = sorted({1, *(int(k) for k in args.every.split(",") if k)})
    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    manifest = read_manifest(bundle)
    size, frames = manifest["image_size"], manifest["num_frames"]
    root = Path(tempfile.mkdtemp(prefix="bench_guidance_reuse_"))
    try:
        assets = write_procedural_dataset(root / "assets", args.count, seed=1, progress=False)
        report = run_render_job(assets, root / "orbits", RenderSettings(size=size, frames=frames, random_starts=0),
                                workers=args.workers, progress=False)
        if report.failed:
            raise SystemExit(report.summary())
        uids = [asset_uid(path) for path in assets]
        results = {}
        for condition in args.conditions.split(","):
            pipe = load_default(condition, device=args.device, bundle=bundle)
            rows = {k: [] for k in ks}
            for seed, uid in enumerate(uids):
                _, target, static = ground_truth(root / "orbits" / uid)
                prompt = prompt_of(condition, root / "orbits" / uid, size, frames)
                m = float(motion_magnitude(target, static))
                reference = None
                for k in ks:  # side by side: every k on this asset before the next asset
                    pipe.guidance_every = k
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    pred = to_unit(pipe(**prompt, motion=m, steps=args.steps, seed=seed, progress=False))
                    seconds = time.perf_counter() - start
                    reference = pred if k == 1 else reference
                    p_gt, s_gt = _scores(pred, target)
                    rows[k].append({"seconds": seconds, "psnr": p_gt, "ssim": s_gt,
                                    "psnr_vs_k1": orbit_psnr(pred, reference)})
                print(f"{condition} {uid}: " + ", ".join(
                    f"k={k} {rows[k][-1]['psnr']:.2f} dB ({rows[k][-1]['seconds']:.1f} s)" for k in ks), flush=True)
            results[condition] = {k: {key: float(np.mean([r[key] for r in rs])) for key in rs[0]}
                                   for k, rs in rows.items()}
            # printed before the next condition starts: a run stopped midway keeps what it finished
            print(table(condition, results[condition], args, frames, size, pipe), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record = {"bundle": str(bundle), "count": args.count, "steps": args.steps, "device": args.device,
              "results": {c: {str(k): r for k, r in by_k.items()} for c, by_k in results.items()}}
    if args.json:
        write_json_atomic(Path(args.json), record)
    return record


if __name__ == "__main__":
    main()
