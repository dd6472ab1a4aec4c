"""Where one full-size sampling step goes, kernel by kernel (issue 4: the compiled 3-branch step is ~79 ms on an H200,
against ~28 ms of matrix work at the chip's bf16 rate).

One step of Eq. 3 = ε_θ on the conditional and unconditional latents (one batch-2 call) + ε̄ on one latent, full-size
ModelScope-T2V UNets (random weights), 24 frames at 256², bf16 — eager, or with the UNet blocks compiled
(``--compile``; a cold compile takes minutes). The step is profiled outside a CUDA graph (a graph shows up as one
launch), so launch gaps are not counted: the table is the GPU's own time per kernel class and the top kernels.

    python benchmarks/profile_sampler.py [--compile] [--channels-last] [--frames 24]
        [--size 256] [--steps 3] [--top 25]

``--channels-last`` stores the UNets' 4-D weights channels-last (``torch.channels_last``), a probe for the session-4
profile's largest kernel: cuDNN's NCHW → NHWC conversion of every convolution's input (17 ms of a 125 ms step).
Whether the activations then stay channels-last through diffusers' 5-D reshapes and GroupNorm is what it measures.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict

import torch

#: kernel name pattern → class (first match wins); cuDNN/cuBLAS/Triton kernel names as the profiler shows them
CLASSES = (
    ("attention", r"flash|fmha|attention|sdpa"),
    ("convolution", r"conv|implicit_gemm|xmma_fprop|cudnn|dgrad|wgrad"),
    ("matmul", r"gemm|cutlass|sm90_xmma|nvjet|matmul"),
    ("normalisation", r"norm"),
    ("triton (fused by Inductor)", r"triton"),
    ("copies / layout", r"copy|transpose|permute|cat|index"),
)


def kernel_class(name: str) -> str:
    lowered = name.lower()
    return next((cls for cls, pattern in CLASSES if re.search(pattern, lowered)), "other elementwise")


def main(argv=None) -> None:
    from torch.profiler import ProfilerActivity, profile

    from diffusion4d.diffusion.acceleration import compile_blocks, recompile_limits_for
    from diffusion4d.models.conditions import Condition
    from diffusion4d.models.presets import build_unet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile", action="store_true", help="compile the UNet blocks first (acceleration.compile_blocks)")
    p.add_argument("--channels-last", action="store_true", help="the UNets' 4-D weights in channels-last memory")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    device, dtype = "cuda", torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        ours = build_unet("text", "full").to(dtype).eval()
        base = build_unet("text", "full", motion_embedding=False).to(dtype).eval()
    h = args.size // 8
    z = torch.randn(2, 4, args.frames, h, h, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    text = torch.randn(2, 77, 1024, device=device, dtype=dtype)
    cond = Condition(encoder_hidden_states=text, motion=torch.full((2,), 0.02, device=device),
                     motion_keep=torch.tensor([1.0, 0.0], device=device))
    base_cond = Condition(encoder_hidden_states=text[:1])
    if args.channels_last:  # the 2-D convolutions only: the temporal Conv3d weights are 5-D
        for module in (*ours.modules(), *base.modules()):
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    if args.compile:
        start = time.perf_counter()
        compile_blocks(ours)
        compile_blocks(base)

    def step():
        with torch.inference_mode(), recompile_limits_for(ours, base):  # raised where --compile compiled blocks
            ours(z, t, cond)
            base(z[:1], t[:1], base_cond)

    for _ in range(3):  # warm-up (and, with --compile, the compilation)
        step()
    torch.cuda.synchronize()
    if args.compile:
        print(f"compile + warm-up: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    wall_ms = 1000 * (time.perf_counter() - start) / args.steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_time_total > 0 and e.key != "" and
               not e.key.startswith(("aten::", "cuda", "Memcpy", "Memset"))]
    total = sum(e.device_time_total for e in kernels) / 1000 / args.steps
    by_class = defaultdict(float)
    for e in kernels:
        by_class[kernel_class(e.key)] += e.device_time_total / 1000 / args.steps
    variant = " + ".join(["compiled blocks" if args.compile else "eager"]
                         + ["channels-last weights"] * args.channels_last)
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, {args.frames} frames at {args.size}², "
          f"{variant}: one 3-branch step {wall_ms:.1f} ms wall (no CUDA graph), {total:.1f} ms of kernels")
    print(f"{'kernel class':<30}{'ms/step':>9}{'share':>8}")
    for cls, ms in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"{cls:<30}{ms:>9.2f}{ms / total:>8.1%}")
    print(f"\n{'top kernels':<90}{'ms/step':>9}{'calls':>7}")
    for e in sorted(kernels, key=lambda e: -e.device_time_total)[: args.top]:
        print(f"{e.key[:88]:<90}{e.device_time_total / 1000 / args.steps:>9.2f}{e.count // args.steps:>7}")


if __name__ == "__main__":
    main()
