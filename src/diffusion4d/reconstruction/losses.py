"""Losses of the 4D fit (paper Sec. 3.4): L_gs = λ_l1 L1 + λ_lpips L_lpips + λ_depth L_depth (+ λ_arap L_arap).

Images are [B, 3, H, W] in [0, 1], composited on white. With LPIPS weights (`perceptual_from_files`, a
``perceptual(pred, target) -> [B]`` callable) the image term is the paper's λ_l1 L1 + λ_lpips L_lpips; without them
D-SSIM (3DGS's λ = 0.2 mix with L1) stands in for LPIPS.
The ARAP term lives with the control-point field (deformation.arap_loss), which owns its neighbour graph.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@functools.lru_cache(maxsize=16)
def _window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: torch.device):
    """Separable Gaussian window as two depthwise kernels ([C, 1, 1, S], [C, 1, S, 1]), like metrics.ssim's.
    Cached: the fit calls SSIM every step with the same shape, and building it costs several kernel launches."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.view(1, 1, 1, size).expand(channels, 1, 1, size), g.view(1, 1, size, 1).expand(channels, 1, size, 1)


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable float32 SSIM [B] of images [B, C, H, W] in [0, 1]: diffusion4d.metrics.ssim's definition
    (Gaussian window 11/1.5, valid positions, k1 0.01, k2 0.03) with a separable blur, for training."""
    B, C, H, W = x.shape
    size = min(window_size, H, W)
    gx, gy = _window(size, sigma, C, x.dtype, x.device)
    # the five local moments in one batched blur (two convolutions instead of ten)
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    mu_x, mu_y, xx, yy, xy = F.conv2d(F.conv2d(stacked, gx, groups=C), gy, groups=C).split(B)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def photometric(pred: torch.Tensor, target: torch.Tensor, dssim_weight: float = 0.2,
                perceptual: Perceptual | None = None, lpips_weight: float = 0.0) -> torch.Tensor:
    """The image term of L_gs. With a perceptual network (and λ_lpips > 0): the paper's L1 + λ_lpips LPIPS
    (Sec. 3.4, following 4DGS). Without one: 3DGS's (1 − λ) L1 + λ (1 − SSIM), D-SSIM standing in for LPIPS."""
    if perceptual is not None and lpips_weight > 0:
        return l1(pred, target) + lpips_weight * perceptual(pred, target).mean()
    return (1 - dssim_weight) * l1(pred, target) + dssim_weight * (1 - ssim(pred, target)).mean()


def perceptual_from_files(weights: str | Path | None, backbone: str | Path | None, net: str = "alex",
                          device: str | torch.device = "cpu") -> Perceptual | None:
    """The LPIPS network of the fit's loss from local files (``--lpips-weights``: the lpips release's linear layers,
    ``--lpips-backbone``: a torchvision AlexNet/VGG16 state dict), or None when neither is given (the fit then uses
    D-SSIM in its place).

    Built once per fit, before any fitting starts, so that a bad file fails at once and by name: one file without
    the other (ValueError), a missing file (FileNotFoundError), a file of another layout or that would need code to
    unpickle (ValueError; read with ``weights_only=True`` or safetensors, evaluation.pretrained.load_state_dict_safely).
    """
    if weights is None and backbone is None:
        return None
    if weights is None or backbone is None:
        absent = "--lpips-weights" if weights is None else "--lpips-backbone"
        raise ValueError(f"LPIPS in the fit needs both --lpips-weights and --lpips-backbone; {absent} is missing")
    for flag, path in (("--lpips-weights", weights), ("--lpips-backbone", backbone)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file ({flag})")
    from diffusion4d.evaluation.lpips import LPIPS

    return LPIPS.from_files(weights, backbone, net).to(device)


def silhouette_chamfer(points2d: torch.Tensor, weights: torch.Tensor, targets: torch.Tensor,
                       target_valid: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric 2D chamfer distance between the projected Gaussian centres and the object's pixels, per view.

    points2d [V, N, 2] and targets [V, P, 2] in pixels (targets: pixels sampled inside each view's object mask);
    weights [V, N] in [0, 1] (the Gaussians' opacities: transparent ones need not lie inside, nor count as
    covering); target_valid [V] bool (views whose mask had pixels); scale: the image side, so distances are in
    image widths. Both directions are mean distances (not squared: a far part must not dominate):

        L = mean_v [ Σ_n w_n min_p ‖u_n − q_p‖ / Σ_n w_n  +  mean_p min_{n: w_n > ½} ‖q_p − u_n‖ ].

    Unlike a photometric loss it has a gradient for a part that does not overlap its target at all — the first
    term pulls every Gaussian into the silhouette, the second pulls the nearest ones out to uncovered object
    pixels — which is what large motions seen from one camera per time need.
    """
    d = torch.cdist(points2d / scale, targets / scale)  # [V, N, P]
    inside = (weights * d.min(-1).values).sum(-1) / weights.sum(-1).clamp_min(1e-6)
    far = torch.finfo(d.dtype).max / 4
    covered = d.masked_fill((weights <= 0.5)[..., None], far).min(1).values  # [V, P]
    cover = torch.where(covered < far, covered, torch.zeros_like(covered)).mean(-1)  # no opaque Gaussian: 0
    per_view = (inside + cover) * target_valid
    return per_view.sum() / target_valid.sum().clamp_min(1)


def edge_weights(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(−mean_c |∂I|) along x [B, 1, H, W−1] and y [B, 1, H−1, W] of target images [B, 3, H, W]: they depend on
    the targets only, so the fit computes them once per view."""
    dx_i = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    dy_i = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return torch.exp(-dx_i), torch.exp(-dy_i)


def edge_aware_smoothness(depth: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """mean |∂D| · w over x and y of a depth [B, 1, H, W], with the :func:`edge_weights` w of its target."""
    dx_d = (depth[..., :, 1:] - depth[..., :, :-1]).abs()
    dy_d = (depth[..., 1:, :] - depth[..., :-1, :]).abs()
    return (dx_d * weights[0]).mean() + (dy_d * weights[1]).mean()


def depth_smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the rendered expected depth [B, 1, H, W] guided by the target image [B, 3, H, W]:
    mean |∂D| · exp(−mean_c |∂I|) over x and y (Godard et al.), so depth may jump only where the image does."""
    return edge_aware_smoothness(depth, edge_weights(image))
