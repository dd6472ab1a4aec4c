"""Where a training step of the small default-model UNets goes, and what makes it faster (issue 7's GPU budget).

One step = forward at a random timestep under bf16 autocast, L_ldm, backward, gradient clipping, fused AdamW — what
`diffusion4d train` does per micro-step, on synthetic latents of the default's shapes (B × 4 × 24 × 16 × 16).
Variants, timed side by side in one process (the same model weights and inputs):

  eager      diffusers' layers as they are
  cudnn      + torch.backends.cudnn.benchmark (cuDNN times its convolution algorithms once per shape)
  tconv      + the temporal convolutions as matrix products (acceleration.use_matmul_temporal_convs)
  attn=NAME  + scaled_dot_product_attention restricted to one backend: flash, efficient, cudnn or math (the small
             models' heads are 8-16 wide and the temporal sequences 24 long: flash's backward led the profile)
  compiled   + the UNet blocks compiled (acceleration.compile_blocks; the compile time is the first step's)
  graph      + the whole step (forward, backward, clipping, AdamW) captured once in a CUDA graph and replayed: what
             is left without the host's dispatch cost (the eager step's host time matched its GPU time)

    python benchmarks/profile_train_step.py [--kind image|text] [--batch-size 32] [--steps 20] [--profile]
        [--variants eager,cudnn,tconv,graph]

``--profile`` prints the 25 CUDA kernels with the most time over 5 steps of the first variant, and the host time.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffusion4d.diffusion.acceleration import compile_blocks, raised_recompile_limits, use_matmul_temporal_convs
from diffusion4d.diffusion.graphed_step import GraphedStep
from diffusion4d.diffusion.losses import noised_latents
from diffusion4d.models.conditions import Condition
from diffusion4d.models.presets import build_unet
from diffusion4d.models.unets import first_view_image_latents


def synthetic_batch(kind: str, unet, batch: int, frames: int, device) -> tuple[torch.Tensor, torch.Tensor, Condition]:
    g = torch.Generator(device).manual_seed(0)
    z0 = torch.randn(batch, 4, frames, 16, 16, generator=g, device=device)
    cond = Condition(motion=torch.rand(batch, generator=g, device=device),
                     motion_keep=torch.ones(batch, device=device))
    width = unet.config.cross_attention_dim
    if kind == "text":
        cond.encoder_hidden_states = torch.randn(batch, 16, width, generator=g, device=device)
    else:
        cond.image_embeddings = torch.randn(batch, width, generator=g, device=device)
        cond.image_latents = first_view_image_latents(z0[:, :, 0], frames)
    return z0, torch.randint(1000, (batch,), generator=g, device=device), cond


ATTENTION: list = []  # the SDPA backends the steps may use (empty: PyTorch's choice)


def make_step(unet, optimizer, z0, t, cond, alphas_cumprod, autocast_cache: bool = True):
    import contextlib

    from torch.nn.attention import sdpa_kernel

    noise = torch.randn_like(z0)
    z_t = noised_latents(z0, noise, t, alphas_cumprod)

    def step(zero_grad: bool = True):
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        backends = sdpa_kernel(ATTENTION) if ATTENTION else contextlib.nullcontext()
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=autocast_cache), backends:
            out = unet(z_t, t, cond).float()
        loss = (out - noise).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        return loss

    return step


def graph_step(unet, z0, t, cond, alphas_cumprod):
    """The step of :func:`make_step` replayed by `GraphedStep` (what `train --cuda-graph` does): a capturable AdamW,
    autocast without its weight-cast cache. The inputs are fixed here, so the graph needs no input buffers."""
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=True, capturable=True)
    step = make_step(unet, optimizer, z0, t, cond, alphas_cumprod, autocast_cache=False)
    graphed = GraphedStep(lambda inputs, check: step(zero_grad=False),
                          lambda: optimizer.zero_grad(set_to_none=True), models=(unet,))
    return lambda: graphed({})


def time_steps(step, count: int) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(count):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


def apply_variant(unet, name: str) -> None:
    """Cumulative: each variant keeps the earlier ones' changes (an attn= variant replaces the one before)."""
    if name == "cudnn":
        torch.backends.cudnn.benchmark = True
    elif name == "tconv":
        use_matmul_temporal_convs(unet, eval_only=False)  # the UNet trains: its layers are in training mode
    elif name.startswith("attn="):
        from torch.nn.attention import SDPBackend

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name.split("=", 1)[1]]
        ATTENTION[:] = [backend]
    elif name == "compiled":
        compile_blocks(unet)  # lazily: the next step compiles


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=("image", "text"), default="image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--variants", default="eager,cudnn,tconv,graph")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_train_step.py needs a CUDA device")
    device = torch.device("cuda")
    torch.manual_seed(0)
    unet = build_unet(args.kind, "small").to(device).train()
    params = sum(p.numel() for p in unet.parameters())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=True)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, device=device) ** 2  # scaled_linear, as in train
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    z0, t, cond = synthetic_batch(args.kind, unet, args.batch_size, args.frames, device)
    step = make_step(unet, optimizer, z0, t, cond, alphas_cumprod)
    print(f"{args.kind} UNet (small, {params / 1e6:.2f} M params), batch {args.batch_size} × {args.frames} frames "
          f"× 16², bf16 autocast, {torch.cuda.get_device_name()}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    base = None
    # the compiled variant's blocks compile during its steps; the raised limits change nothing for the others
    with raised_recompile_limits():
        for name in args.variants.split(","):
            apply_variant(unet, name)
            start = time.perf_counter()
            try:
                if name == "graph":
                    step = graph_step(unet, z0, t, cond, alphas_cumprod)
                step()  # compiles, for "compiled"; cuDNN's timing runs, for "cudnn"
                torch.cuda.synchronize()
            except RuntimeError as exc:  # e.g. an attention backend without a kernel for these head sizes
                print(f"{name:<15} failed: {str(exc).splitlines()[0]}")
                ATTENTION.clear()
                continue
            first = time.perf_counter() - start
            torch.cuda.reset_peak_memory_stats()
            seconds = time_steps(step, args.steps)
            base = base or seconds
            print(f"{name:<15} {1000 * seconds:8.1f} ms/step  ({seconds / base:.2f}× eager)  "
                  f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, first step {first:.1f} s")


if __name__ == "__main__":
    main()
