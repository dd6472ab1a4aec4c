"""Time one forward + backward of the Gaussian rasterizer (torch reference on the CPU; gsplat and the torch
reference on CUDA when there is a GPU).

    .venv/bin/python benchmarks/bench_rasterizer.py [--gaussians 3000] [--size 128] [--cameras 1]

The scene is what a fit at the CPU preset sees midway: Gaussians uniform in a ball of radius 0.5 (the unit-cube
asset), scales ≈ half the mean spacing, opacities ≈ 0.5, seen from the orbit cameras (distance 2, fov 39.6°).
"""

from __future__ import annotations

import argparse
import time

import torch

from diffusion4d import cameras
from diffusion4d.reconstruction import Gaussians, render_gaussians


def time_step(g: Gaussians, c2w, size: int, backend: str, tile_size: int, repeats: int) -> tuple[float, float, int]:
    """Median (forward ms, forward+backward ms) over ``repeats`` after one warm-up, and the pairs' Gaussian count."""
    x_fov, y_fov = cameras.fov_xy(cameras.DEFAULT_FOV_DEG, size, size)
    sync = torch.cuda.synchronize if g.means.is_cuda else (lambda: None)
    fwd, total = [], []
    for _ in range(repeats + 1):
        for t in g.parameters().values():
            t.grad = None
        sync()
        t0 = time.perf_counter()
        out = render_gaussians(g, c2w, x_fov, y_fov, size, size, backend=backend, tile_size=tile_size)
        sync()
        t1 = time.perf_counter()
        (out.rgb.mean() + out.alpha.mean()).backward()
        sync()
        t2 = time.perf_counter()
        fwd.append(1e3 * (t1 - t0))
        total.append(1e3 * (t2 - t0))
    fwd, total = sorted(fwd[1:]), sorted(total[1:])
    return fwd[len(fwd) // 2], total[len(total) // 2], int((out.radii > 0).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    c2w = cameras.orbit_camera_to_world(24)[: args.cameras]
    g = Gaussians.init_random(args.gaussians, radius=0.5, seed=0, opacity=0.5)
    print(f"{args.gaussians} Gaussians, {args.cameras} camera(s), {args.size}x{args.size}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads")
    runs = [("torch", "cpu", 8), ("torch", "cpu", 16), ("torch", "cpu", 32)]
    if torch.cuda.is_available():
        runs += [("torch", "cuda", 16)]
        try:
            import gsplat  # noqa: F401

            runs += [("gsplat", "cuda", 16)]
        except ImportError:
            print("gsplat not installed: skipping its timing (pip install 'diffusion4d[gpu]')")
    for backend, device, tile in runs:
        gd = g.to(device).requires_grad_()
        fwd, total, visible = time_step(gd, c2w, args.size, backend, tile, args.repeats)
        tile_note = f"tile {tile:2d}" if backend == "torch" else "       "
        print(f"  {backend:6s} {device:4s} {tile_note}: forward {fwd:8.2f} ms   forward+backward {total:8.2f} ms   "
              f"({visible} visible)")


if __name__ == "__main__":
    main()
