"""Training views of the 4D fit: an orbit in the official layout → image, alpha and camera tensors; visual hull.

Cameras always come from the per-view JSON (``layout.read_orbit``), never from the orbit formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.reconstruction.losses import edge_weights
from diffusion4d.reconstruction.rasterize import viewmats_from_c2w


@dataclass
class Views:
    rgb: torch.Tensor  # [V, 3, H, W] in [0, 1], composited on white
    alpha: torch.Tensor  # [V, 1, H, W] in [0, 1]
    has_alpha: bool  # False for opaque RGB orbits (generated ones): alpha is then no supervision
    c2w: torch.Tensor  # [V, 4, 4] glTF axes, OpenGL camera axes
    Ks: torch.Tensor  # [V, 3, 3] pixels
    times: torch.Tensor  # [V] τ of each view
    x_fov: float
    y_fov: float

    def __len__(self) -> int:
        return len(self.rgb)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[-1], self.rgb.shape[-2]  # (width, height)

    def subset(self, index) -> Views:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Views(self.rgb[idx], self.alpha[idx], self.has_alpha, self.c2w[idx], self.Ks[idx], self.times[idx],
                     self.x_fov, self.y_fov)

    @staticmethod
    def cat(views: list[Views]) -> Views:
        first = views[0]
        return Views(*(torch.cat([getattr(v, k) for v in views]) for k in ("rgb", "alpha")),
                     all(v.has_alpha for v in views),
                     *(torch.cat([getattr(v, k) for v in views]) for k in ("c2w", "Ks", "times")),
                     first.x_fov, first.y_fov)


@dataclass
class TrainingViews:
    """Views as the fit's steps consume them, everything derived from the targets and cameras computed once, on the
    device: a step only slices these tensors (no per-step copies, camera inversions or host reads of times).

    rgb [V, 3, H, W]; alpha [V, 1, H, W]; viewmats [V, 4, 4] world-to-camera (OpenCV axes, the rasterizer's);
    Ks [V, 3, 3]; edges (x [V, 1, H, W−1], y [V, 1, H−1, W]): losses.edge_weights of rgb; times: τ per view, floats;
    mask_points [V, P, 2]: pixel centres drawn (fixed, with replacement) from each view's :func:`object_masks`, and
    mask_valid [V] bool: the mask had pixels — the targets of losses.silhouette_chamfer.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    has_alpha: bool
    viewmats: torch.Tensor
    Ks: torch.Tensor
    edges: tuple[torch.Tensor, torch.Tensor]
    times: list[float]
    mask_points: torch.Tensor
    mask_valid: torch.Tensor

    @classmethod
    def from_views(cls, views: Views, device, mask_samples: int = 512) -> TrainingViews:
        rgb = views.rgb.to(device)
        points, valid = mask_pixels(object_masks(views), mask_samples)
        return cls(rgb, views.alpha.to(device), views.has_alpha, viewmats_from_c2w(views.c2w).to(device),
                   views.Ks.to(device), edge_weights(rgb), [float(t) for t in views.times], points.to(device),
                   valid.to(device))

    def __len__(self) -> int:
        return len(self.rgb)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[-1], self.rgb.shape[-2]  # (width, height)

    def take(self, index: list[int]) -> TrainingViews:
        """The views at these indices; one index (the common case) is a slice, which copies nothing."""
        if len(index) == 1:
            pick = slice(index[0], index[0] + 1)
        else:
            pick = torch.as_tensor(index, dtype=torch.long).to(self.rgb.device, non_blocking=True)
        return TrainingViews(self.rgb[pick], self.alpha[pick], self.has_alpha, self.viewmats[pick], self.Ks[pick],
                             (self.edges[0][pick], self.edges[1][pick]), [self.times[i] for i in index],
                             self.mask_points[pick], self.mask_valid[pick])


def read_views(folder: Path, kind: str, size: int) -> Views:
    """One orbit as training views at size² (area-resampled). An all-transparent frame is an error naming it."""
    orbit = layout.read_orbit(folder, kind)
    rgba = torch.as_tensor(orbit.images).float().div(255).permute(0, 3, 1, 2)  # [T, 4, H, W]
    for i, a in enumerate(rgba[:, 3]):
        if a.max() == 0:
            raise ValueError(f"{layout.frame_path(folder, kind, i)}: the frame is fully transparent (no object)")
    if rgba.shape[-1] != size or rgba.shape[-2] != size:
        # premultiplied, so resampling does not bleed the transparent pixels' colour into the edges
        premult = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], 1)
        premult = F.interpolate(premult, size=(size, size), mode="area" if rgba.shape[-1] > size else "bilinear")
        alpha = premult[:, 3:]
        rgba = torch.cat([premult[:, :3] / alpha.clamp_min(1e-6), alpha], 1)
    alpha = rgba[:, 3:]
    rgb = rgba[:, :3] * alpha + (1 - alpha)
    T = len(rgb)
    times = torch.zeros(T) if kind == layout.STATIC else torch.as_tensor(orbit.timestamps, dtype=torch.float32)
    K = torch.as_tensor(cameras.intrinsics(orbit.x_fov, orbit.y_fov, size, size), dtype=torch.float32)
    return Views(rgb.contiguous(), alpha.contiguous(), bool((orbit.images[..., 3] < 255).any()),
                 torch.as_tensor(orbit.c2w, dtype=torch.float32), K.expand(T, 3, 3).clone(), times,
                 orbit.x_fov, orbit.y_fov)


def object_masks(views: Views) -> torch.Tensor:
    """[V, H, W] bool: the alpha where there is one, else 'not white background' (generated RGB orbits)."""
    if views.has_alpha:
        return views.alpha[:, 0] > 0.5
    return (views.rgb < 0.95).any(1)


def mask_pixels(masks: torch.Tensor, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel centres [V, count, 2] as (u, v), drawn uniformly with replacement from each mask [V, H, W] bool by a
    fixed generator; valid [V] bool: the mask had any pixel — an empty one gets zeros, marked invalid)."""
    V, H, W = masks.shape
    flat = masks.reshape(V, H * W).float()
    valid = flat.sum(-1) > 0
    weights = torch.where(valid[:, None], flat, torch.ones_like(flat))  # multinomial needs a non-zero row
    idx = torch.multinomial(weights, count, replacement=True, generator=torch.Generator().manual_seed(seed))
    uv = torch.stack([idx % W, idx // W], -1).float() + 0.5
    return uv * valid[:, None, None], valid


def project(points: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates [V, N, 2] (u right, v down) and depth [V, N] of world points [N, 3] in views c2w [V, 4, 4]."""
    w2c = torch.linalg.inv(c2w)
    cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    depth = -cam[..., 2]
    u = K[:, None, 0, 2] + K[:, None, 0, 0] * cam[..., 0] / depth
    v = K[:, None, 1, 2] - K[:, None, 1, 1] * cam[..., 1] / depth
    return torch.stack([u, v], -1), depth


def visual_hull(views: Views, count: int, generator: torch.Generator, fraction: float = 1.0,
                half_extent: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Carve random points of the cube [−h, h]³ by the object masks: keep those inside ≥ ``fraction`` of the masks.

    Returns ``(points [≤count, 3], colours [≤count, 3])``, the colour being the mean of the views' pixels there.
    Static orbits carve with fraction 1 (the exact hull); a moving object needs < 1, or its moving parts vanish.
    """
    masks = object_masks(views)
    W, H = views.size
    kept, colours, tries = [], [], 0
    while sum(len(k) for k in kept) < count and tries < 8:
        tries += 1
        pts = (torch.rand(count * 8, 3, generator=generator) * 2 - 1) * half_extent
        uv, depth = project(pts, views.c2w, views.Ks)
        px = uv.floor().long()
        inside = (px[..., 0] >= 0) & (px[..., 0] < W) & (px[..., 1] >= 0) & (px[..., 1] < H) & (depth > 0)
        x, y = px[..., 0].clamp(0, W - 1), px[..., 1].clamp(0, H - 1)
        vidx = torch.arange(len(views))[:, None]
        hit = inside & masks[vidx, y, x]  # [V, N]
        ok = hit.float().mean(0) >= fraction - 1e-6
        col = views.rgb[vidx, :, y, x]  # [V, N, 3]
        col = (col * hit[..., None]).sum(0) / hit.sum(0).clamp_min(1)[:, None]
        kept.append(pts[ok])
        colours.append(col[ok])
    points, colours = torch.cat(kept)[:count], torch.cat(colours)[:count]
    return points, colours


def random_points(count: int, generator: torch.Generator, half_extent: float = 0.5):
    """Fallback initialisation: uniform points in the unit cube, grey."""
    pts = (torch.rand(count, 3, generator=generator) * 2 - 1) * half_extent
    return pts, torch.full((count, 3), 0.5)


def has_orbit(folder: Path, kind: str) -> bool:
    return layout.frame_path(folder, kind, 0).exists()

