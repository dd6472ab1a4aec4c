"""One sampling step's noise prediction ε̂: the model calls behind Eq. (3), and behind its guidance reuse.

`guidance.py` holds the equations on tensors; this module makes the denoiser calls whose outputs they combine, in
the order the sampler has always made them. `PlainGuidedDenoiser` is the reference that `sampling.sample_latents`
runs on the CPU (and on a GPU without speed-ups); `acceleration.GuidedDenoiser` is its CUDA-graph twin, built from
the same functions and checked against it by the GPU tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffusion4d.diffusion.guidance import reused_guidance, three_d_aware_cfg
from diffusion4d.models.conditions import Condition

Denoiser = Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor]


@dataclass(frozen=True)
class GuidanceBranches:
    """The denoiser calls of Eq. (3), with their conditions already on the sampling device and dtype.

    Attributes:
        model: the 4D-aware denoiser ε_θ(z_t, y, m, t).
        cond_in: its condition for one call on [z, z]: ``Condition.cat([cond, uncond])`` (batch 2B), or ``cond``
            alone (batch B) when w1 == 0.
        w1, w2: the guidance weights of Eq. (3).
        base_model / base_in: the frozen 3D-aware ε̄_θ(z, y) and its condition (batch B); called only when w2 != 0.
        cond_only: the conditional branch's condition alone (batch B), for the steps that reuse the guidance term;
            None when the sampler does not reuse it.
    """

    model: Denoiser
    cond_in: Condition
    w1: float
    w2: float
    base_model: Denoiser | None = None
    base_in: Condition | None = None
    cond_only: Condition | None = None

    @property
    def reuses_guidance(self) -> bool:
        return self.cond_only is not None


def conditional_and_unconditional(
    branches: GuidanceBranches, z: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ε_θ(z_t, y, m), ε_θ(z_t)) in float32 from one model call on [z, z] at batch 2B: the unconditional half is
    None when w1 == 0, and the call then runs on z alone."""
    if branches.w1 != 0:
        out = branches.model(torch.cat([z, z]), torch.cat([t, t]), branches.cond_in)
        eps_cond, eps_uncond = out.float().chunk(2)
        return eps_cond, eps_uncond
    return branches.model(z, t, branches.cond_in).float(), None


def three_d_aware_prediction(
    branches: GuidanceBranches, z: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (3) evaluated: (ε̂, ε_θ(z_t, y, m)) at the model input z [B, ...] and timesteps t [B].

    The reference order of the work: the batch-2B call, then ε̄ (when w2 != 0), then the combination. The conditional
    prediction comes back too, for the guidance term ε̂ − ε_θ(z_t, y, m) that later steps may reuse."""
    eps_cond, eps_uncond = conditional_and_unconditional(branches, z, t)
    eps_3d = branches.base_model(z, t, branches.base_in).float() if branches.w2 != 0 else None
    return three_d_aware_cfg(eps_cond, eps_uncond, eps_3d, branches.w1, branches.w2), eps_cond


def reused_guidance_prediction(
    branches: GuidanceBranches, z: torch.Tensor, t: torch.Tensor, guidance: torch.Tensor
) -> torch.Tensor:
    """ε̂ ≈ ε_θ(z_t, y, m) + g (`guidance.reused_guidance`): one model call at batch B on the conditional branch's
    condition, plus the guidance term g kept from the last full step."""
    return reused_guidance(branches.model(z, t, branches.cond_only).float(), guidance)


class PlainGuidedDenoiser:
    """ε̂ of one sampling step, op by op from Python: ``eps = denoiser(z_in, t, full)`` (float32).

    ``full`` steps evaluate Eq. (3) (`three_d_aware_prediction`) and, when ``branches`` reuse guidance, keep its term
    ε̂ − ε_θ(z_t, y, m); the other steps add that term to one batch-B call (`reused_guidance_prediction`). The
    reference twin of `acceleration.GuidedDenoiser`, which makes the same calls from a CUDA graph.
    """

    def __init__(self, branches: GuidanceBranches, batch: int, device: str | torch.device):
        self.branches, self.batch, self.device = branches, batch, device
        self.guidance: torch.Tensor | None = None  # the last full step's ε̂ − ε_θ(z_t, y, m)

    def __call__(self, z_in: torch.Tensor, t, full: bool = True) -> torch.Tensor:
        t_b = torch.full((self.batch,), int(t), device=self.device, dtype=torch.long)
        if not full:
            if self.guidance is None:
                raise ValueError("PlainGuidedDenoiser: a call with full=False needs an earlier full call that kept "
                                 "the guidance term (branches with cond_only)")
            return reused_guidance_prediction(self.branches, z_in, t_b, self.guidance)
        eps, eps_cond = three_d_aware_prediction(self.branches, z_in, t_b)
        if self.branches.reuses_guidance:
            self.guidance = eps - eps_cond
        return eps
