"""The sampling loop: DDIM over a diffusers scheduler with 3D-aware classifier-free guidance (Eq. 3).

The loop knows nothing of architectures: it only calls ``model(sample, timestep, cond)`` (see
`diffusion4d.models.conditions`). Building the conditions (prompt, motion m, the unconditional branch's empty
prompt with ``motion_keep = 0``, the base model's condition) is the pipeline's job.

    settings = SamplerSettings(steps=50, w1=7.0, w2=0.5, device="cuda", speedups=SamplerSpeedups())
    z0 = sample_latents(model, scheduler, cond, uncond, latent_shape=(4, 24, 32, 32), seeds=[0],
                        base_model=base, base_cond=base_cond, settings=settings)

Each step's ε̂ comes from a denoiser object (`guided_step.PlainGuidedDenoiser`, the reference, or its CUDA-graph
twin `acceleration.GuidedDenoiser`); `denoise` is the DDIM loop around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from diffusion4d.diffusion.acceleration import GuidedDenoiser, SamplerSpeedups, recompile_limits_for
from diffusion4d.diffusion.guided_step import Denoiser, GuidanceBranches, PlainGuidedDenoiser
from diffusion4d.models.conditions import Condition

#: ``eps = denoiser(z_in, t, full=...)``: ε̂ of one step (a `PlainGuidedDenoiser` or an `acceleration.GuidedDenoiser`)
StepDenoiser = Callable[..., torch.Tensor]


def check_guidance_every(k) -> int:
    """``k`` itself if it is a valid ``guidance_every`` (an integer ≥ 1), else ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"guidance_every must be an integer >= 1, got {k!r}")
    return k


@dataclass(frozen=True)
class SamplerSettings:
    """How `sample_latents` samples (the paper's Sec. 4.1 defaults: DDIM 50 steps, w1 = 7.0, w2 = 0.5).

    Attributes:
        steps: DDIM steps (the scheduler's ``set_timesteps``).
        w1, w2: the guidance weights of Eq. (3). w1 == 0 needs no unconditional condition, w2 == 0 no base model.
        guidance_every: k. 1 is Eq. (3) exactly at every step. With k > 1 the guidance branches run only at steps
            0, k, 2k, …; the steps between reuse that step's guidance term (`guidance.reused_guidance`) and call the
            model once at batch B: about (3 + (k − 1)) / 3k of the 3-branch work. An approximation (the term changes
            slowly from one step to the next); `benchmarks/bench_guidance_reuse.py` measures its cost.
        device: where the models run and the loop state lives.
        dtype: the models' input dtype; the loop state, guidance and scheduler steps stay in float32.
        progress: show a progress bar.
        speedups: on a CUDA ``device``, run each step through `acceleration.GuidedDenoiser` (CUDA graphs, ε̄ on a
            second stream): a `SamplerSpeedups`, or True for the default one. None / False (default) or a CPU device:
            the plain `PlainGuidedDenoiser`, the reference. Same calls, same results (up to the order of
            floating-point work); the first step also pays a one-off graph capture.
    """

    steps: int = 50
    w1: float = 7.0
    w2: float = 0.5
    guidance_every: int = 1
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    progress: bool = True
    speedups: SamplerSpeedups | bool | None = None

    def __post_init__(self):
        check_guidance_every(self.guidance_every)
        if self.speedups is True:  # frozen: normalise through object.__setattr__, as dataclasses advise
            object.__setattr__(self, "speedups", SamplerSpeedups())
        elif self.speedups is False:
            object.__setattr__(self, "speedups", None)

    @property
    def guided(self) -> bool:
        return self.w1 != 0 or self.w2 != 0

    @property
    def reuses_guidance(self) -> bool:
        return self.guided and self.guidance_every > 1

    @property
    def uses_cuda_graph_path(self) -> bool:
        return self.speedups is not None and torch.device(self.device).type == "cuda"


def initial_noise(latent_shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """z_T ~ N(0, I) [B, *latent_shape], sample b drawn on the CPU from its own generator seeded with seeds[b]:
    a sample is the same whether drawn alone or in a batch, and on any device."""
    shape = tuple(latent_shape)
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


def _per_sample_shape(latent_shape: Sequence[int], batch: int) -> tuple[int, ...]:
    """(C, T, h, w) of one sample, from itself or from (B, C, T, h, w) with B == batch."""
    shape = tuple(latent_shape)
    if len(shape) == 5:
        if shape[0] != batch:
            raise ValueError(f"latent_shape {shape} has batch {shape[0]} but {batch} seeds were given")
        shape = shape[1:]
    return shape


def _check_batch(name: str, cond: Condition | None, batch: int) -> None:
    if cond is not None and cond.tensors() and cond.batch_size != batch:
        raise ValueError(f"{name} has batch size {cond.batch_size}, expected {batch} (one per seed)")


def _check_branches(cond, uncond, base_model, base_cond, settings: SamplerSettings, batch: int) -> None:
    """ValueError unless the conditions and models are what Eq. (3) with these weights calls (batch B each)."""
    w1, w2 = settings.w1, settings.w2
    if w1 != 0 and uncond is None:
        raise ValueError("w1 != 0 needs the unconditional condition `uncond`")
    if w2 != 0 and (base_model is None or base_cond is None):
        raise ValueError("w2 != 0 needs the frozen 3D-aware `base_model` and its `base_cond` (or pass w2=0)")
    _check_batch("cond", cond, batch)
    _check_batch("uncond", uncond if w1 != 0 else None, batch)
    _check_batch("base_cond", base_cond if w2 != 0 else None, batch)


def guidance_branches(model: Denoiser, cond: Condition, uncond: Condition | None, base_model: Denoiser | None,
                      base_cond: Condition | None, settings: SamplerSettings) -> GuidanceBranches:
    """The model calls of Eq. (3) for these settings, their conditions moved to the settings' device and dtype."""
    device, dtype, w1, w2 = settings.device, settings.dtype, settings.w1, settings.w2
    return GuidanceBranches(
        model=model,
        cond_in=(Condition.cat([cond, uncond]) if w1 != 0 else cond).to(device, dtype),  # both branches, one call
        w1=w1,
        w2=w2,
        base_model=base_model,
        base_in=base_cond.to(device, dtype) if w2 != 0 else None,
        cond_only=cond.to(device, dtype) if settings.reuses_guidance else None,  # the reusing steps' batch-B call
    )


def step_denoiser(branches: GuidanceBranches, sample_shape: tuple[int, ...],
                  settings: SamplerSettings) -> StepDenoiser:
    """The CUDA-graph `GuidedDenoiser` where the settings ask for speed-ups on a CUDA device, else its reference
    twin `PlainGuidedDenoiser`."""
    if settings.uses_cuda_graph_path:
        return GuidedDenoiser(branches, sample_shape, dtype=settings.dtype, device=settings.device,
                              speedups=settings.speedups)
    return PlainGuidedDenoiser(branches, sample_shape[0], settings.device)


def _check_finite(eps: torch.Tensor, step: int, steps: int, t) -> None:
    if not torch.isfinite(eps).all():
        raise FloatingPointError(f"non-finite denoiser output at step {step + 1}/{steps} (t={int(t)})")


def denoise(z: torch.Tensor, scheduler, denoiser: StepDenoiser, settings: SamplerSettings) -> torch.Tensor:
    """DDIM (eta = 0) from z_T over ``scheduler.timesteps``: each step's ε̂ from ``denoiser``, a full Eq. (3) step
    at every k-th step when the guidance term is reused (k = ``settings.guidance_every``), else at every step."""
    timesteps = scheduler.timesteps
    for i, t in enumerate(tqdm(timesteps, desc="DDIM", disable=not settings.progress)):
        z_in = scheduler.scale_model_input(z, t).to(settings.dtype)
        full = not settings.reuses_guidance or i % settings.guidance_every == 0
        eps = denoiser(z_in, int(t), full=full)
        _check_finite(eps, i, len(timesteps), t)
        z = scheduler.step(eps, t, z).prev_sample
    return z


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
    settings: SamplerSettings = SamplerSettings(),  # noqa: B008 - frozen, so one shared default is safe
) -> torch.Tensor:
    """Denoise len(seeds) latent videos with DDIM (eta = 0) and 3D-aware CFG (Eq. 3); returns ẑ0 [B, C, T, h, w] in
    ``settings.dtype``.

    Args:
        model: the 4D-aware denoiser ε_θ(z_t, y, m, t).
        scheduler: a diffusers scheduler (``DDIMScheduler``) configured like the model's training; its timesteps are
            reset here (``set_timesteps(settings.steps)``).
        cond / uncond: conditions of the conditional branch ε_θ(z, y, m) and the unconditional one ε_θ(z) (batch B
            each); ``uncond`` may be None when w1 == 0.
        latent_shape: (C, T, h, w) of one sample (a leading B equal to len(seeds) is also accepted).
        seeds: one seed per sample.
        base_model / base_cond: the frozen 3D-aware model ε̄_θ(z, y) and its condition; needed only when w2 != 0.
        settings: steps, guidance weights, guidance reuse, device, dtype, speed-ups (`SamplerSettings`).
    Per full step: one ``model`` call on [z, z] with ``Condition.cat([cond, uncond])`` (batch 2B; batch B when
    w1 == 0) and one ``base_model`` call when w2 != 0.
    """
    shape = _per_sample_shape(latent_shape, len(seeds))
    _check_branches(cond, uncond, base_model, base_cond, settings, len(seeds))
    branches = guidance_branches(model, cond, uncond, base_model, base_cond, settings)
    scheduler.set_timesteps(settings.steps)
    z = initial_noise(shape, seeds).to(settings.device) * scheduler.init_noise_sigma
    with torch.inference_mode():
        denoiser = step_denoiser(branches, (len(seeds), *shape), settings)  # compile_blocks, where asked, runs here
        with recompile_limits_for(model, base_model):  # raised only where compiled blocks may compile
            z = denoise(z, scheduler, denoiser, settings)
    return z.to(settings.dtype).clone()  # a normal tensor, not an inference-mode one (usable with autograd later)
