"""Time one forward + backward of the Gaussian rasterizer (torch reference on the CPU; gsplat and the torch
reference on CUDA when there is a GPU).

    .venv/bin/python benchmarks/bench_rasterizer.py [--gaussians 3000] [--size 128] [--cameras 1]

The scene is what a fit at the CPU preset sees midway: Gaussians uniform in a ball of radius 0.5 (the unit-cube
asset), scales ≈ half the mean spacing, opacities ≈ 0.5, seen from the orbit cameras (distance 2, fov 39.6°).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from diffusion4d import cameras
from diffusion4d.reconstruction import Gaussians, render_gaussians


def time_step(g: Gaussians, c2w, size: int, backend: str, tile_size: int,
              repeats: int) -> tuple[float, float, float, int]:
    """Median wall-clock (forward ms, forward+backward ms) over ``repeats`` after a warm-up, the median CPU time of
    forward+backward (process time: robust to other jobs on a shared machine) and the visible Gaussians."""
    x_fov, y_fov = cameras.fov_xy(cameras.DEFAULT_FOV_DEG, size, size)
    sync = torch.cuda.synchronize if g.means.is_cuda else (lambda: None)
    fwd, total, cpu = [], [], []
    for _ in range(repeats + 1):
        for t in g.parameters().values():
            t.grad = None
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = render_gaussians(g, c2w, x_fov, y_fov, size, size, backend=backend, tile_size=tile_size)
        sync()
        t1 = time.perf_counter()
        (out.rgb.mean() + out.alpha.mean()).backward()
        sync()
        t2, c2 = time.perf_counter(), time.process_time()
        cpu.append(1e3 * (c2 - c0))
        fwd.append(1e3 * (t1 - t0))
        total.append(1e3 * (t2 - t0))
    median = lambda xs: sorted(xs[1:])[len(xs[1:]) // 2]  # noqa: E731
    return median(fwd), median(total), median(cpu), int((out.radii > 0).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    c2w = cameras.orbit_camera_to_world(24)[: args.cameras]
    g = Gaussians.init_random(args.gaussians, radius=0.5, seed=0, opacity=0.5)
    print(f"{args.gaussians} Gaussians, {args.cameras} camera(s), {args.size}x{args.size}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.1f}")
    runs = [("torch", "cpu", 4), ("torch", "cpu", 8), ("torch", "cpu", 16)]
    if torch.cuda.is_available():
        runs += [("torch", "cuda", 16)]
        try:
            import gsplat  # noqa: F401

            runs += [("gsplat", "cuda", 16)]
        except ImportError:
            print("gsplat not installed: skipping its timing (pip install 'diffusion4d[gpu]')")
    for backend, device, tile in runs:
        gd = g.to(device).requires_grad_()
        fwd, total, cpu, visible = time_step(gd, c2w, args.size, backend, tile, args.repeats)
        tile_note = f"tile {tile:2d}" if backend == "torch" else "       "
        print(f"  {backend:6s} {device:4s} {tile_note}: forward {fwd:8.2f} ms   forward+backward {total:8.2f} ms   "
              f"(CPU time {cpu:8.1f} ms; {visible} visible)")


if __name__ == "__main__":
    main()
