"""How large may the default bundle's UNets grow before `make demo` passes its 120 s on the CPU (issue 21,
deliverable 2)? Random weights, the shipped bundle's architecture at wider channel counts, side by side in one run.

    python benchmarks/bench_capacity.py [--widths 1 1.5 2] [--steps 10] [--calls 2] [--threads 2] [--bundle DIR]

For each width multiplier k, the image 4D-aware UNet of the bundle is rebuilt with every ``block_out_channels``
scaled by k (rounded to the norm groups), randomly initialised, and put in the bundle's image pipeline. It samples one
orbit as `make demo` does (``--steps`` DDIM steps, the bundle's guidance), once untimed, then ``--calls`` times.
Reported per width: parameters, the fp16 file size, the minimum seconds per orbit and its ratio to k = 1. `make demo`
samples two orbits (V̄′ from the 3D-aware base, then V), so a bundle whose two image UNets are k times wider adds
about 2 × (t_k − t_1) seconds to the demo's time, at the same quality of every other stage.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffusion4d.diffusion.components import unet_class
from diffusion4d.pipelines.default import load_default


def widened(config: dict, k: float) -> torch.nn.Module:
    """The image UNet of ``config`` with channels × k, rounded to multiples of its norm groups; random weights."""
    groups = config["norm_num_groups"]
    channels = [max(groups, round(c * k / groups) * groups) for c in config["block_out_channels"]]
    keep = {key: value for key, value in config.items() if not key.startswith("_")}
    torch.manual_seed(0)
    return unet_class("image")(**{**keep, "block_out_channels": channels}).eval()


def seconds_per_orbit(pipe, image: torch.Tensor, steps: int, calls: int) -> float:
    pipe(image=image, steps=steps, seed=0, progress=False)  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        pipe(image=image, steps=steps, seed=0, progress=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bundle", help="default: the shipped bundle")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_default("image", bundle=args.bundle)
    config = dict(pipe.unet.config)
    image = torch.rand(3, pipe.image_size, pipe.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = []
    for k in args.widths:
        pipe.unet = widened(config, k)
        params = sum(t.numel() for t in pipe.unet.parameters())
        rows.append({"width": k, "channels": list(pipe.unet.config.block_out_channels), "params_m": params / 1e6,
                     "fp16_mb": params * 2 / 1e6, "s": seconds_per_orbit(pipe, image, args.steps, args.calls)})
        print(rows[-1], flush=True)
    print(f"\n{args.steps} DDIM steps, guidance w1 {pipe.w1} w2 {pipe.w2}, {args.threads} threads, random weights\n")
    print("| width | channels | parameters | fp16 | s per orbit | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| ×{r['width']:g} | {r['channels']} | {r['params_m']:.1f} M | {r['fp16_mb']:.1f} MB | {r['s']:.2f} | "
              f"{r['s'] / rows[0]['s']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
