"""The sampling loop: DDIM over a diffusers scheduler with 3D-aware classifier-free guidance (Eq. 3).

The loop knows nothing of architectures: it only calls ``model(sample, timestep, cond)`` (see
`diffusion4d.models.conditions`). Building the conditions (prompt, motion m, the unconditional branch's empty
prompt with ``motion_keep = 0``, the base model's condition) is the pipeline's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from diffusion4d.diffusion.acceleration import GuidedDenoiser, SamplerSpeedups
from diffusion4d.diffusion.guidance import reused_guidance, three_d_aware_cfg
from diffusion4d.models.conditions import Condition

Denoiser = Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor]


def initial_noise(latent_shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """z_T ~ N(0, I) [B, *latent_shape], sample b drawn on the CPU from its own generator seeded with seeds[b]:
    a sample is the same whether drawn alone or in a batch, and on any device."""
    shape = tuple(latent_shape)
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


def check_guidance_every(k) -> int:
    """``k`` itself if it is a valid ``guidance_every`` (an integer ≥ 1), else ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"guidance_every must be an integer >= 1, got {k!r}")
    return k


def _check_batch(name: str, cond: Condition | None, batch: int) -> None:
    if cond is not None and cond.tensors() and cond.batch_size != batch:
        raise ValueError(f"{name} has batch size {cond.batch_size}, expected {batch} (one per seed)")


def sample_latents(
    model: Denoiser,
    scheduler,
    cond: Condition,
    uncond: Condition | None,
    *,
    latent_shape: Sequence[int],
    seeds: Sequence[int],
    base_model: Denoiser | None = None,
    base_cond: Condition | None = None,
    w1: float = 7.0,
    w2: float = 0.5,
    steps: int = 50,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    speedups: SamplerSpeedups | bool | None = None,
    guidance_every: int = 1,
) -> torch.Tensor:
    """Denoise len(seeds) latent videos with DDIM (eta = 0) and 3D-aware CFG; returns ẑ0 [B, C, T, h, w] in ``dtype``.

    Args:
        model: the 4D-aware denoiser ε_θ(z_t, y, m, t).
        scheduler: a diffusers scheduler (``DDIMScheduler``) configured like the model's training; its timesteps are
            reset here (``set_timesteps(steps)``).
        cond / uncond: conditions of the conditional branch ε_θ(z, y, m) and the unconditional one ε_θ(z) (batch B
            each); ``uncond`` may be None when w1 == 0.
        latent_shape: (C, T, h, w) of one sample (a leading B equal to len(seeds) is also accepted).
        seeds: one seed per sample.
        base_model / base_cond: the frozen 3D-aware model ε̄_θ(z, y) and its condition; needed only when w2 != 0.
        w1, w2: the guidance weights of Eq. (3) (paper: 7.0 and 0.5, DDIM 50 steps).
        dtype: the models' input dtype; the loop state, guidance and scheduler steps stay in float32.
        speedups: on a CUDA ``device``, run each step's model calls through `acceleration.GuidedDenoiser` (CUDA
            graphs, ε̄ on a second stream): ``True`` for the default `SamplerSpeedups`, or one to choose. None /
            False (default) or a CPU device: the plain loop below, the reference. Same calls, same results (up to
            the order of floating-point work); the first step also pays a one-off graph capture.
        guidance_every: k. 1 (default) is Eq. (3) exactly at every step. With k > 1 the guidance branches run only at
            steps 0, k, 2k, …; the steps between reuse that step's guidance term (see `reused_guidance`) and call
            ``model`` once at batch B: about (3 + (k − 1)) / 3k of the 3-branch work. An approximation (the guidance
            term changes slowly from one step to the next); `benchmarks/bench_guidance_reuse.py` measures its cost.
    Per full step: one ``model`` call on [z, z] with ``Condition.cat([cond, uncond])`` (batch 2B; batch B when
    w1 == 0) and one ``base_model`` call when w2 != 0.
    """
    B = len(seeds)
    latent_shape = tuple(latent_shape)
    if len(latent_shape) == 5:
        if latent_shape[0] != B:
            raise ValueError(f"latent_shape {latent_shape} has batch {latent_shape[0]} but {B} seeds were given")
        latent_shape = latent_shape[1:]
    if w1 != 0 and uncond is None:
        raise ValueError("w1 != 0 needs the unconditional condition `uncond`")
    if w2 != 0 and (base_model is None or base_cond is None):
        raise ValueError("w2 != 0 needs the frozen 3D-aware `base_model` and its `base_cond` (or pass w2=0)")
    _check_batch("cond", cond, B)
    _check_batch("uncond", uncond if w1 != 0 else None, B)
    _check_batch("base_cond", base_cond if w2 != 0 else None, B)
    check_guidance_every(guidance_every)
    guided = w1 != 0 or w2 != 0

    cond_in = (Condition.cat([cond, uncond]) if w1 != 0 else cond).to(device, dtype)
    reuse = guided and guidance_every > 1
    cond_only = cond.to(device, dtype) if reuse else None  # the batch-B call of the steps that reuse the term
    base_in = base_cond.to(device, dtype) if w2 != 0 else None
    scheduler.set_timesteps(steps)
    z = initial_noise(latent_shape, seeds).to(device) * scheduler.init_noise_sigma
    if speedups is True:
        speedups = SamplerSpeedups()
    use_fast = bool(speedups) and torch.device(device).type == "cuda"

    with torch.inference_mode():
        fast = None
        if use_fast:
            fast = GuidedDenoiser(model, cond_in, w1=w1, w2=w2, base_model=base_model, base_in=base_in,
                                  sample_shape=(B, *latent_shape), dtype=dtype, device=device, speedups=speedups,
                                  cond_only=cond_only)
        guidance = None  # the last full step's guidance term, ε̂ − ε_θ(z, y, m)
        for i, t in enumerate(tqdm(scheduler.timesteps, desc="DDIM", disable=not progress)):
            z_in = scheduler.scale_model_input(z, t).to(dtype)
            full = not guided or i % guidance_every == 0
            if fast is not None:
                eps = fast(z_in, int(t), full=full)  # Eq. (3) or its reuse, as below
            else:
                t_b = torch.full((B,), int(t), device=device, dtype=torch.long)
                if not full:
                    eps = reused_guidance(model(z_in, t_b, cond_only).float(), guidance)
                else:
                    if w1 != 0:  # conditional and unconditional branches in one call
                        out = model(torch.cat([z_in, z_in]), torch.cat([t_b, t_b]), cond_in)
                        eps_cond, eps_uncond = out.float().chunk(2)
                    else:
                        eps_cond, eps_uncond = model(z_in, t_b, cond_in).float(), None
                    eps_3d = base_model(z_in, t_b, base_in).float() if w2 != 0 else None
                    eps = three_d_aware_cfg(eps_cond, eps_uncond, eps_3d, w1, w2)  # Eq. (3)
                    guidance = eps - eps_cond
            if not torch.isfinite(eps).all():
                n = len(scheduler.timesteps)
                raise FloatingPointError(f"non-finite denoiser output at step {i + 1}/{n} (t={int(t)})")
            z = scheduler.step(eps, t, z).prev_sample
    return z.to(dtype).clone()  # a normal tensor, not an inference-mode one (usable with autograd later)
