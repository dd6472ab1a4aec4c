"""3D-aware classifier-free guidance, Eq. (3) of Sec. 3.3."""

from __future__ import annotations

import torch


def three_d_aware_cfg(
    eps_cond: torch.Tensor,
    eps_uncond: torch.Tensor | None,
    eps_3d: torch.Tensor | None,
    w1: float,
    w2: float,
) -> torch.Tensor:
    """Eq. (3): ε̂ = ε(z,y,m) + w1·(ε(z,y,m) − ε(z)) + w2·(ε(z,y,m) − ε̄(z,y)).

    eps_cond = ε_θ(z_t, y, m, t), eps_uncond = ε_θ(z_t, t), eps_3d = ε̄_θ(z_t, y, t) of the frozen 3D-aware model.
    The combination is linear, so it applies unchanged to v-predictions (all three must predict the same
    thing).
    A branch whose weight is 0 may be None.
    """
    if w1 != 0 and eps_uncond is None:
        raise ValueError("three_d_aware_cfg: w1 != 0 needs the unconditional prediction eps_uncond")
    if w2 != 0 and eps_3d is None:
        raise ValueError("three_d_aware_cfg: w2 != 0 needs the 3D-aware base model's prediction eps_3d")
    out = eps_cond
    if w1 != 0:
        out = out + w1 * (eps_cond - eps_uncond)
    if w2 != 0:
        out = out + w2 * (eps_cond - eps_3d)
    return out


def reused_guidance(eps_cond: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """ε̂ ≈ ε_θ(z_t, y, m, t) + g, with g = w1·(ε − ε(z)) + w2·(ε − ε̄) of Eq. (3) taken from an earlier step.

    The guidance term g is a difference of two predictions at the same z_t, and it varies slowly along the sampling
    path; reusing it for a few steps between full evaluations (as guidance-caching methods for video diffusion do)
    leaves one batch-B model call per step in place of a batch-2B and a batch-B one.
    """
    return eps_cond + guidance
