"""Adaptive density control of 3DGS (Kerbl et al. 2023, Sec. 5.2), one code path for every rasterizer backend.

Gaussians are a dict of parameters ``means [N,3], quats [N,4], log_scales [N,3], opacity_logits [N], sh0 [N,3]``
with one Adam param group each (``group["name"]`` = the key). Densification needs only the gradient of the
projected means (``RenderOutput.means2d``, retained) and the radii, which both backends return:

* clone Gaussians whose mean screen-space gradient is large and whose scale is small (under-reconstruction),
* split those that are large into two samples of themselves at 1/1.6 of the scale (over-reconstruction),
* prune near-transparent or huge ones, and periodically reset opacities so floaters must earn their opacity back.

The optimizer's moments follow the rows: kept rows keep theirs, new rows start at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffusion4d.reconstruction.gaussians import quat_to_rotmat


@dataclass(frozen=True)
class DensifyConfig:
    start: int = 100  # iterations of each stage before the first densification
    stop: int = 1000  # no densification after this iteration of the stage
    every: int = 100
    grad_threshold: float = 2e-4  # mean ‖∂L/∂μ2d‖ in NDC units (gsplat's / 3DGS's threshold)
    scale_threshold: float = 0.01  # clone below, split above (× scene extent)
    prune_opacity: float = 0.005
    prune_scale: float = 0.1  # × scene extent
    reset_every: int = 0  # opacity reset period (0 = never; 3DGS uses 3000)
    max_gaussians: int = 200_000
    extent: float = 1.0  # scene extent: assets are normalised to the unit cube


class GradientStats:
    """Running sums of the screen-space gradient norm per Gaussian (and how often each was visible)."""

    def __init__(self, n: int, device=None):
        self.grad = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)

    def add(self, means2d_grad: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> None:
        """Accumulate one render's ∂L/∂μ2d [C, N, 2] (pixels) for the Gaussians with radii [C, N] > 0."""
        g = means2d_grad.detach()
        # pixels → NDC, so the threshold does not depend on the resolution
        norm = torch.hypot(g[..., 0] * (width / 2), g[..., 1] * (height / 2))
        visible = radii > 0
        self.grad += (norm * visible).sum(0)
        self.count += visible.sum(0)

    def mean(self) -> torch.Tensor:
        return self.grad / self.count.clamp_min(1)

    def state(self) -> dict[str, torch.Tensor]:
        return {"grad": self.grad, "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> GradientStats:
        stats = cls(0)
        stats.grad, stats.count = state["grad"].clone(), state["count"].clone()
        return stats


def _rebuild(params: nn.ParameterDict, optimizer: torch.optim.Optimizer, keep: torch.Tensor,
             new_rows: dict[str, torch.Tensor]) -> None:
    """Replace every parameter by cat(param[keep], new_rows[name]), carrying Adam's moments along."""
    for group in optimizer.param_groups:
        name = group["name"]
        old = group["params"][0]
        value = torch.cat([old.detach()[keep], new_rows[name].to(old.dtype)])
        param = nn.Parameter(value)
        state = optimizer.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                extra = torch.zeros_like(new_rows[name])
                state[key] = torch.cat([state[key][keep], extra])
            optimizer.state[param] = state
        group["params"][0] = param
        params[name] = param


def _take(params: nn.ParameterDict, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.detach()[mask] for k, v in params.items()}


def densify_and_prune(params: nn.ParameterDict, optimizer: torch.optim.Optimizer, stats: GradientStats,
                      config: DensifyConfig, generator: torch.Generator, prune_large: bool = True) -> dict:
    """One densification step; returns counts {cloned, split, pruned}. The caller makes fresh GradientStats."""
    with torch.no_grad():
        scales = params["log_scales"].exp().amax(-1)
        grads = stats.mean()
        big_grad = grads >= config.grad_threshold
        room = config.max_gaussians - len(scales)
        if big_grad.sum() > max(room, 0):  # cap the growth: keep only the strongest gradients
            big_grad = torch.zeros_like(big_grad)
            if room > 0:
                big_grad[grads.topk(room).indices] = True
        small = scales <= config.scale_threshold * config.extent
        clone, split = big_grad & small, big_grad & ~small
        opacity = params["opacity_logits"].sigmoid()
        prune = opacity < config.prune_opacity
        if prune_large:
            prune |= scales > config.prune_scale * config.extent

        cloned = _take(params, clone)
        halves = _take(params, split)
        rot = quat_to_rotmat(halves["quats"])
        std = halves["log_scales"].exp()
        noise = torch.randn((2, *std.shape), generator=generator, device="cpu").to(std.device)
        offsets = (rot[None] @ (noise * std[None])[..., None])[..., 0]  # samples of the Gaussian itself
        new = {k: torch.cat([cloned[k], v, v]) for k, v in halves.items()}
        new["means"] = torch.cat([cloned["means"], halves["means"] + offsets[0], halves["means"] + offsets[1]])
        new["log_scales"][len(cloned["means"]):] -= torch.log(torch.tensor(1.6))
        keep = ~(split | prune)
        # new rows (clones and split halves) are not pruned this step: they were chosen for their gradients
        _rebuild(params, optimizer, keep, new)
    return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int((prune & ~split).sum())}


def reset_opacity(params: nn.ParameterDict, optimizer: torch.optim.Optimizer, ceiling: float = 0.01) -> None:
    """Clamp every opacity to ≤ ``ceiling`` and forget its Adam moments (3DGS's periodic reset)."""
    with torch.no_grad():
        logits = params["opacity_logits"]
        logits.clamp_(max=float(torch.logit(torch.tensor(ceiling))))
        state = optimizer.state.get(logits)
        if state:
            state["exp_avg"].zero_()
            state["exp_avg_sq"].zero_()
