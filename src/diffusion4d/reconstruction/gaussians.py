"""Canonical 3D Gaussians (the τ0 state of a 4D asset) and quaternion helpers.

Parameters are stored unconstrained, as 3DGS does, so that an optimiser can move them freely and the PLY export is
the standard one: ``log_scales`` (scale = exp), ``opacity_logits`` (opacity = sigmoid), ``sh0`` (the degree-0
spherical-harmonic coefficient: colour = 0.5 + C0·sh0) and quaternions (w, x, y, z) that need not be unit length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

#: Degree-0 real spherical harmonic, Y_00 = 1 / (2 sqrt(pi)).
SH_C0 = 0.28209479177387814


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] [..., 3] → degree-0 SH coefficient [..., 3] (inverse of :func:`sh0_to_rgb` before clamping)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """Degree-0 SH coefficient [..., 3] → RGB [..., 3], clamped to [0, 1] as 3DGS viewers do."""
    return (0.5 + SH_C0 * sh0).clamp(0.0, 1.0)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Quaternions (w, x, y, z) [N, 4], any non-zero length → rotation matrices [N, 3, 3] (normalised first)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, -1).reshape(*quats.shape[:-1], 3, 3)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a ⊗ b of quaternions (w, x, y, z) [N, 4]: rotating by b, then by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def _knn_mean_distance(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """Mean distance [N] of each point to its k nearest neighbours (chunked so memory stays O(chunk·N))."""
    n = points.shape[0]
    if n < 2:
        return torch.ones(n, dtype=points.dtype, device=points.device)
    k = min(k, n - 1)
    out = []
    for start in range(0, n, chunk):
        d = torch.cdist(points[start:start + chunk], points)
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(-1))  # column 0 is the point itself
    return torch.cat(out)


@dataclass
class Gaussians:
    """N canonical Gaussians; when fitted, every field is a leaf tensor with ``requires_grad``.

    Fields: ``means`` [N, 3] (world, glTF axes), ``quats`` [N, 4] (w, x, y, z), ``log_scales`` [N, 3],
    ``opacity_logits`` [N], ``sh0`` [N, 3] (colour = 0.5 + SH_C0·sh0).
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh0: Tensor

    def __post_init__(self):
        n = self.means.shape[0] if self.means.dim() == 2 else -1
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,), "sh0": (n, 3)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} must have shape {list(shape)} (N = {n}), got {list(got)}")

    # -- derived quantities -------------------------------------------------------------------------------------
    @property
    def num(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rgb(self) -> Tensor:
        return sh0_to_rgb(self.sh0)

    # -- plumbing -----------------------------------------------------------------------------------------------
    def parameters(self) -> dict[str, Tensor]:
        """name → tensor, in field order (what an optimiser's param groups and densification index into)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _map(self, fn) -> "Gaussians":
        return Gaussians(**{name: fn(t) for name, t in self.parameters().items()})

    def detach(self) -> "Gaussians":
        return self._map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> "Gaussians":
        return self._map(lambda t: t.to(*args, **kwargs))

    def requires_grad_(self, flag: bool = True) -> "Gaussians":
        for t in self.parameters().values():
            t.requires_grad_(flag)
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """Contiguous detached tensors keyed by field name — ready for ``safetensors.torch.save_file``."""
        return {name: t.detach().contiguous() for name, t in self.parameters().items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "Gaussians":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"Gaussians state dict lacks {missing} (has {sorted(state)})")
        return cls(**{n: state[n] for n in names})

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def init_from_points(cls, points: Tensor, rgb: Tensor, opacity: float = 0.1,
                         scale: float | None = None) -> "Gaussians":
        """Isotropic Gaussians at ``points`` [N, 3] with colours ``rgb`` [N, 3] in [0, 1].

        Scale: ``scale`` if given, else each point's mean distance to its 3 nearest neighbours (as 3DGS does).
        """
        points = torch.as_tensor(points, dtype=torch.float32)
        rgb = torch.as_tensor(rgb, dtype=torch.float32, device=points.device)
        if points.dim() != 2 or points.shape[1] != 3 or rgb.shape != points.shape:
            raise ValueError(f"points and rgb must both be [N, 3], got {list(points.shape)} and {list(rgb.shape)}")
        n = points.shape[0]
        if scale is None:
            dist = _knn_mean_distance(points).clamp_min(1e-7)
        else:
            dist = torch.full((n,), float(scale), device=points.device)
        quats = torch.zeros(n, 4, device=points.device)
        quats[:, 0] = 1.0
        return cls(
            means=points.clone(),
            quats=quats,
            log_scales=dist.log()[:, None].repeat(1, 3),
            opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity)), device=points.device),
            sh0=rgb_to_sh0(rgb.clamp(0.0, 1.0)),
        )

    @classmethod
    def init_random(cls, n: int, radius: float = 0.5, seed: int = 0, opacity: float = 0.1) -> "Gaussians":
        """``n`` Gaussians uniformly in a ball of ``radius`` with random colours (reproducible from ``seed``)."""
        if n < 1:
            raise ValueError(f"need at least one Gaussian, got n = {n}")
        gen = torch.Generator().manual_seed(seed)
        direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        r = radius * torch.rand(n, 1, generator=gen) ** (1 / 3)  # cube root: uniform in volume
        rgb = torch.rand(n, 3, generator=gen)
        # the mean spacing of n points in the ball, so that the initial Gaussians roughly tile it
        spacing = radius * (4 / 3 * math.pi / n) ** (1 / 3)
        return cls.init_from_points(direction * r, rgb, opacity=opacity, scale=0.5 * spacing)


def rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for an integer ``index`` of any shape, with a backward that is the same run to run on the CPU:
    ``index_select``'s backward (``index_add``) sums in index order, where advanced indexing's (``index_put`` with
    accumulate) adds atomically from several threads once the gradient is large, in an order that varies."""
    return x.index_select(0, index.reshape(-1)).reshape(*index.shape, *x.shape[1:])
