"""Image and motion metrics, one definition each for curation, training and evaluation: PSNR and SSIM (paper
Sec. 4.2; SSIM also curates the dataset, Sec. 3.2) and the 3D-to-4D motion magnitude of Eq. 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity of Wang et al. (2004), Gaussian-weighted, per image.

    Args:
        x, y: images [B, C, H, W] (or [C, H, W]) on the scale ``data_range`` (1.0 for [0, 1]).
    Returns:
        SSIM [B]: the mean over channels and all fully-inside ("valid") window positions.
    The window shrinks to the image for images smaller than ``window_size``.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x[None], y[None]
    x, y = x.double(), y.double()  # variances are small differences of large sums: keep them exact
    B, C, H, W = x.shape
    size = min(window_size, H, W)
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    kernel = (g[:, None] * g[None, :]).expand(C, 1, size, size)

    def blur(img):  # separable would be faster; images here are small and this stays obviously correct
        return F.conv2d(img, kernel, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: 10·log10(data_range² / MSE).

    Args:
        x, y: images [B, C, H, W] (or [C, H, W]) on the scale ``data_range`` (1.0 for [0, 1]).
    Returns:
        PSNR [B] (float64). Identical images have MSE 0 and PSNR +inf; it is reported as inf, not capped,
        so a caller averaging over a test set sees it instead of a silently chosen ceiling.
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x[None], y[None]
    if x.dim() != 4:
        raise ValueError(f"psnr needs images [B, C, H, W] or [C, H, W], got {tuple(x.shape)}")
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))
    # mse == 0 divides by zero on purpose: IEEE gives +inf, which is the right answer for identical images
    return 10.0 * torch.log10(data_range**2 / mse)


def motion_magnitude(dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """3D-to-4D motion magnitude, Eq. (1): m(V) = (1/T) Σ_i ‖I_i − Ī_i‖²₂.

    Args:
        dynamic: the orbit V, [..., T, C, H, W]; view i at time τ_i.
        static: the orbit V̄ of the same cameras at τ0, same shape.
    Returns:
        m [...]: the squared difference averaged over the elements of each frame (so m does not grow with the
        resolution or channel count) and then over the T frames.

    One definition serves pixels and latents (Eq. 2 uses it on VAE latents z0, z̄0). On pixels, the package's
    convention is RGB in [0, 1] composited on a white background (`data.layout.composite`), so m ∈ [0, 1].
    """
    if dynamic.shape != static.shape:
        raise ValueError(
            f"motion magnitude needs orbits of one shape, got {tuple(dynamic.shape)} and {tuple(static.shape)}")
    return (dynamic - static).pow(2).mean(dim=(-3, -2, -1)).mean(dim=-1)
