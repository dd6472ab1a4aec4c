"""SC-GS's skinning alone: milliseconds per forward + backward of ControlPointField at N Gaussians × S times.

    python benchmarks/bench_skinning.py [--gaussians 5000] [--times 2] [--device cpu|cuda]

To compare two versions of the code side by side, run it twice in one session with PYTHONPATH pointing at each
``src`` (e.g. a ``git archive HEAD src`` copy), as BENCHMARKS.md's session-10 rows do.
"""

from __future__ import annotations

import argparse
import time

import torch

import diffusion4d
from diffusion4d.reconstruction.deformation import ControlPointField


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=5000)
    parser.add_argument("--times", type=int, default=2, help="S: times (views) per call")
    parser.add_argument("--control-points", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    N, device = args.gaussians, args.device
    means = (torch.rand(N, 3, device=device) - 0.5).requires_grad_()
    quats = torch.nn.functional.normalize(torch.randn(N, 4, device=device), dim=-1).requires_grad_()
    log_scales = (torch.randn(N, 3, device=device) * 0.1 - 3).requires_grad_()
    field = ControlPointField(num_points=args.control_points, time_frequencies=3).to(device)
    field.setup(means.detach())
    times = torch.rand(args.times).tolist()

    def step():
        m, q, s = field(means, quats, log_scales, times)
        (m.sum() + q.sum() + s.sum()).backward()

    for _ in range(3):  # warm-up: allocator, kernels
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - start) / args.iters
    print(f"{diffusion4d.__file__}: N {N}, S {args.times}, M {args.control_points}, {device}, torch threads "
          f"{torch.get_num_threads()}: {ms:.2f} ms per forward + backward")


if __name__ == "__main__":
    main()
