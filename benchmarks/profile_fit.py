"""Where a 4D fit spends its time: cProfile of `reconstruction.fit.fit` on one ground-truth orbit.

    python benchmarks/profile_fit.py [--preset fast] [--method scgs] [--coarse 300] [--fine 200] [--size 256]
        [--device cuda] [--orbit DIR] [--no-profile] [--repeat N] [--count-ops] [--field KEY=VALUE]
        [--config KEY=VALUE] [--kernels]

Without --orbit it renders one procedural asset (seed 0) first. Prints wall seconds per iteration and the
functions with the most own time (host waits for the GPU show up under the calls that synchronise: .item(),
bool(tensor), .cpu(), float(tensor)). ``--kernels`` (CUDA) instead runs torch.profiler over one fit and prints the
GPU's busy time beside the wall time — whether the fit is bound by its kernels or by the host launching them — and
the kernels that take the most of it.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import dataclasses
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import torch

from diffusion4d.assets.procedural import write_procedural_dataset
from diffusion4d.data.render_job import RenderSettings, asset_uid, run_render_job
from diffusion4d.reconstruction.fit import PRESETS, fit


def stub_rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **_):
    """A RenderOutput of the right shapes that depends (trivially) on every input: for counting ops only."""
    from diffusion4d.reconstruction.rasterize import RenderOutput

    C, N = viewmats.shape[0], means.shape[-2]
    # means [N, 3] (shared) or [C, N, 3] (per camera, the fine stage) broadcast against the cameras
    means2d = means[..., :2].expand(C, N, 2) * Ks[:, None, 0, :2] + viewmats[:, None, :2, 3]  # [C, N, 2]
    value = 0.5 + 1e-3 * (means.mean() + quats.mean() + scales.mean() + opacities.mean() + colors.mean())
    image = value.expand(C, height, width, 1)
    return RenderOutput(image.expand(C, height, width, 3), image, image, means2d,
                        torch.ones(C, N, dtype=torch.int32, device=means.device))


def count_ops(run) -> collections.Counter:
    """ATen ops dispatched while ``run()`` runs (forward and backward), by name."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counts[str(func)] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        run()
    return counts


def print_kernel_time(run, iters: int, top: int) -> None:
    """Wall time of ``run()`` beside the sum of its GPU kernels' times (kernels of one stream do not overlap, so
    the sum is the GPU's busy time), per iteration, and the kernels with the most time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    # the kernels' own rows (the ops that launched them carry the same time again)
    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6  # µs → s
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    print(f"wall {wall:.2f} s ({1000 * wall / iters:.2f} ms/iteration, profiler overhead included); GPU busy "
          f"{busy:.2f} s ({1000 * busy / iters:.2f} ms/iteration, {100 * busy / wall:.0f} % of wall); "
          f"{launches / iters:.0f} kernel launches per iteration")
    print(events.table(sort_by="self_device_time_total", row_limit=top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--method", default="scgs")
    parser.add_argument("--coarse", type=int, default=300)
    parser.add_argument("--fine", type=int, default=200)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--orbit", help="an orbit folder in the official layout (default: render one asset)")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--no-profile", action="store_true", help="time only (no cProfile overhead)")
    parser.add_argument("--repeat", type=int, default=1, help="timed fits (the best one is reported)")
    parser.add_argument("--count-ops", action="store_true",
                        help="count the ATen ops (≈ kernel launches on CUDA) and the tensor→host scalar reads "
                             "(each a device sync on CUDA) per iteration instead of timing")
    parser.add_argument("--stub-rasterizer", action="store_true",
                        help="with --count-ops: replace the rasterizer by a trivial differentiable stand-in, so that "
                             "the counts are the fit's own (what runs around the one gsplat call on CUDA)")
    parser.add_argument("--kernels", action="store_true",
                        help="CUDA: GPU kernel time vs wall time over one fit (torch.profiler), top kernels; the "
                             "profiler is slow: pair it with a short --coarse 50 --fine 60")
    parser.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                        help="override a deformation-field argument (JSON value); repeatable")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="override a plain FitConfig field (JSON value); repeatable")
    args = parser.parse_args()
    config = PRESETS[args.preset][args.method]
    field = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.field)}
    config = dataclasses.replace(config, field={**config.field, **field},
                                 **{k: json.loads(v) for k, v in (item.split("=", 1) for item in args.config)})
    densify = dataclasses.replace(config.densify, start=min(config.densify.start, args.coarse // 10),
                                  stop=int(args.coarse * 0.6), every=max(args.coarse // 12, 25))
    config = dataclasses.replace(config, coarse_iters=args.coarse, fine_iters=args.fine,
                                 size=args.size or config.size, densify=densify)
    tmp = Path(tempfile.mkdtemp(prefix="profile_fit_"))
    orbit = Path(args.orbit) if args.orbit else None
    if orbit is None:
        assets = write_procedural_dataset(tmp / "assets", 2, seed=0, progress=False)[1:]  # the spinning top
        run_render_job(assets, tmp / "orbits", RenderSettings(size=config.size, frames=24), workers=1, progress=False)
        orbit = tmp / "orbits" / asset_uid(assets[0])
    fit(orbit, tmp / "warm", args.method, dataclasses.replace(config, coarse_iters=20, fine_iters=20),
        device=args.device, progress=False, log=lambda *_: None)  # JIT builds, cuDNN/cuBLAS selection
    iters = config.coarse_iters + config.fine_iters
    if args.count_ops:
        if args.stub_rasterizer:
            import diffusion4d.reconstruction.fit as fit_module

            fit_module.rasterize = stub_rasterize
            # Adam's step counts live on the host unless fused (as the fit uses on CUDA): reading them is no device
            # sync on CUDA, so leave them out of the host reads here
            adam = torch.optim.Adam
            torch.optim.Adam = lambda *a, fused=None, **k: adam(*a, fused=True, **k)
        counts = count_ops(lambda: fit(orbit, tmp / "count", args.method, config, device=args.device,
                                       progress=False, log=lambda *_: None))
        reads = counts["aten._local_scalar_dense.default"] + counts["aten.is_nonzero.default"]
        print(f"{args.preset}/{args.method} on {args.device}, {config.size}², {iters} iterations: "
              f"{sum(counts.values()) / iters:.1f} ATen ops and {reads / iters:.2f} host scalar reads per iteration")
        for name, n in counts.most_common(args.top):
            print(f"{n / iters:10.2f}  {name}")
        return
    if args.kernels:
        print_kernel_time(lambda: fit(orbit, tmp / "kernels", args.method, config, device=args.device,
                                      progress=False, log=lambda *_: None), iters, args.top)
        return
    profiler = cProfile.Profile()
    best = None
    for k in range(args.repeat):
        start, cpu_start = time.perf_counter(), os.times()
        if not args.no_profile:
            profiler.enable()
        fit(orbit, tmp / f"fit{k}", args.method, config, device=args.device, progress=False, log=lambda *_: None)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        profiler.disable()
        cpu_end = os.times()
        seconds = time.perf_counter() - start
        cpu = cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system
        best = min(best or (seconds, cpu), (seconds, cpu))
    seconds, cpu = best
    overhead = "" if args.no_profile else ", profiler overhead included"
    print(f"{args.preset}/{args.method} on {args.device}, {config.size}², {iters} iterations, "
          f"torch threads {torch.get_num_threads()}: {seconds:.2f} s ({1000 * seconds / iters:.2f} ms per iteration "
          f"wall, {1000 * cpu / iters:.2f} ms CPU{overhead})")
    if args.no_profile:
        return
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
