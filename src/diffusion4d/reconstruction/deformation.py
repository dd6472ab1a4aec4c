"""Deformation fields of the 4D Gaussians (paper Sec. 3.4): canonical Gaussians → Gaussians at time t.

Two fields, one interface (``forward(means [N,3], quats [N,4] wxyz, log_scales [N,3], t) -> same three at t``, or
for a sequence of S times ``-> [S, N, ·]`` each, in one batched evaluation;
``regularizer(t, t_other) -> {name: weighted loss}``; ``setup(means)`` once the canonical Gaussians exist; constructor
arguments = the JSON config, tensors = the safetensors weights):

* :class:`HexPlaneField` — 4DGS-style: a multi-resolution HexPlane over (x, y, z, t) (six planes xy, xz, yz, xt, yt,
  zt; features multiplied across the planes of one resolution, concatenated over resolutions) and small MLP heads
  for Δposition, Δrotation (a quaternion composed with the canonical one) and Δlog-scale.
* :class:`ControlPointField` — SC-GS-style: M control points, an MLP of (PE(x_cp), PE(t)) giving each a rigid
  transform, and linear blend skinning of every Gaussian by its K nearest control points with RBF weights
  (learnable radius per control point); ARAP between t and t'. Optionally (``growth``) a scale per control point
  too, for parts that grow or shrink.

Both start as the identity (zero-initialised output layers), so a fresh field leaves the coarse result unchanged.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from diffusion4d.reconstruction.gaussians import quat_multiply, quat_to_rotmat, rows


def _times(t) -> tuple[list[float], bool]:
    """(the times as floats, whether t was one time): a float (or 0-d tensor) or a sequence of S floats."""
    if isinstance(t, (int, float)) or (torch.is_tensor(t) and t.dim() == 0):
        return [float(t)], True
    times = [float(x) for x in t]
    if not times:
        raise ValueError("deformation: the sequence of times is empty")
    return times, False


def _residual_quat(raw: torch.Tensor) -> torch.Tensor:
    """A unit quaternion from a head's output [..., 4]: identity + raw, so a zero output is no rotation."""
    identity = torch.zeros_like(raw)
    identity[..., 0] = 1.0
    return F.normalize(identity + raw, dim=-1)


def _mlp(inputs: int, width: int, outputs: int, depth: int) -> nn.Sequential:
    """ReLU MLP whose last layer is zero, so the field starts as the identity."""
    layers, n = [], inputs
    for _ in range(depth - 1):
        layers += [nn.Linear(n, width), nn.ReLU()]
        n = width
    last = nn.Linear(n, outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


# -- 4DGS: HexPlane ---------------------------------------------------------------------------------------------------

_PLANES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # xy, xz, yz, xt, yt, zt over (x, y, z, t)


class HexPlaneField(nn.Module):
    """4DGS-style deformation: HexPlane features → MLP heads (Δμ, Δq, Δlog s).

    Args:
        resolution: spatial plane resolution of the coarsest level; level l has ``resolution·2^l``.
        time_resolution: cells along t (the same at every level: motion is sampled at only T instants).
        levels: number of resolutions (4DGS uses 2).
        features: channels per plane.
        width, depth: of the shared feature MLP and each head.
        bound: half-extent of the box the planes cover (assets live in the unit cube; motion may leave it).
        tv_weight, time_smooth_weight, time_l1_weight: weights of the plane regularisers (K-planes / 4DGS).
    """

    def __init__(self, resolution: int = 32, time_resolution: int = 12, levels: int = 2, features: int = 16,
                 width: int = 64, depth: int = 2, bound: float = 1.0, tv_weight: float = 2e-4,
                 time_smooth_weight: float = 1e-3, time_l1_weight: float = 1e-4):
        super().__init__()
        self.config = dict(resolution=resolution, time_resolution=time_resolution, levels=levels, features=features,
                           width=width, depth=depth, bound=bound, tv_weight=tv_weight,
                           time_smooth_weight=time_smooth_weight, time_l1_weight=time_l1_weight)
        self.bound = bound
        self.register_buffer("plane_axes", torch.tensor(_PLANES), persistent=False)  # [6, 2], on the field's device
        self.planes = nn.ParameterList()
        for level in range(levels):
            res = [resolution * 2**level] * 3 + [time_resolution]
            for a, b in _PLANES:
                # [1, C, H=res_b, W=res_a]; spatial planes uniform like 4DGS, time planes at 1 so that the
                # product across planes starts as the spatial features alone
                shape = (1, features, res[b], res[a])
                plane = torch.ones(shape) if b == 3 else torch.empty(shape).uniform_(0.1, 0.5)
                self.planes.append(nn.Parameter(plane))
        self.trunk = nn.Sequential(nn.Linear(features * levels, width), nn.ReLU())
        self.head_means = _mlp(width, width, 3, depth)
        self.head_quats = _mlp(width, width, 4, depth)
        self.head_scales = _mlp(width, width, 3, depth)

    def setup(self, means: torch.Tensor) -> None:
        """Nothing to place: the planes cover a fixed box."""

    def bind(self, means: torch.Tensor) -> None:
        """Nothing depends on the canonical Gaussians' layout."""

    def features(self, means: torch.Tensor, times: list[float]) -> torch.Tensor:
        """HexPlane features [S, N, features·levels] of points [N, 3] at S times ∈ [0, 1]."""
        S, N = len(times), len(means)
        x = (means / self.bound).clamp(-1, 1)
        # the time coordinate by S fills (the times are host floats: no host→device copy)
        t_coord = torch.stack([torch.full_like(x[:, :1], 2 * tau - 1) for tau in times])  # [S, N, 1] in [-1, 1]
        xyzt = torch.cat([x.expand(S, N, 3), t_coord], -1).reshape(S * N, 4)
        # grid_sample: [..., 0] is width (axis a), [..., 1] height (b); the three spatial planes of a level share a
        # shape, as do its three time planes, so each triple is sampled in one batched call over all S·N points
        # index_select, not xyzt[:, plane_axes]: its backward sums in index order, the same run to run on the CPU
        grids = xyzt.index_select(1, self.plane_axes.flatten()).unflatten(1, self.plane_axes.shape)
        grids = grids.transpose(0, 1)[:, :, None].contiguous()  # [6, S·N, 1, 2]
        per_level = []
        for level in range(len(self.planes) // 6):
            planes = self.planes[level * 6:level * 6 + 6]
            samples = [F.grid_sample(torch.cat(list(planes[k:k + 3])), grids[k:k + 3], mode="bilinear",
                                     align_corners=True) for k in (0, 3)]  # [3, C, S·N, 1] each
            f = samples[0][0] * samples[0][1] * samples[0][2] * samples[1][0] * samples[1][1] * samples[1][2]
            per_level.append(f[..., 0].t())  # [S·N, C]: the product over the six planes (prod's backward is slow)
        return torch.cat(per_level, -1).reshape(S, N, -1)

    def forward(self, means, quats, log_scales, t):
        """The Gaussians at time t (float: [N, ·] each) or at S times (sequence: [S, N, ·] each)."""
        times, single = _times(t)
        h = self.trunk(self.features(means, times))  # [S, N, width]
        means_t = means + self.head_means(h)
        quats_t = quat_multiply(_residual_quat(self.head_quats(h)), quats)
        log_scales_t = log_scales + self.head_scales(h)
        return (means_t[0], quats_t[0], log_scales_t[0]) if single else (means_t, quats_t, log_scales_t)

    def regularizer(self, t: float = 0.0, t_other: float = 0.0) -> dict[str, torch.Tensor]:
        """Total variation of every plane, second-order smoothness along t and |P − 1| of the time planes."""
        tv, smooth, l1 = 0.0, 0.0, 0.0
        for k, plane in enumerate(self.planes):
            has_time = _PLANES[k % 6][1] == 3
            tv = tv + (plane[..., :, 1:] - plane[..., :, :-1]).pow(2).mean()  # along the spatial axis a
            if has_time:
                if plane.shape[2] > 2:
                    smooth = smooth + (plane[:, :, 2:] - 2 * plane[:, :, 1:-1] + plane[:, :, :-2]).pow(2).mean()
                l1 = l1 + (plane - 1).abs().mean()
            else:
                tv = tv + (plane[..., 1:, :] - plane[..., :-1, :]).pow(2).mean()
        c = self.config
        return {"plane_tv": c["tv_weight"] * tv, "time_smooth": c["time_smooth_weight"] * smooth,
                "time_l1": c["time_l1_weight"] * l1}


# -- SC-GS: control points + linear blend skinning ------------------------------------------------------------------


def positional_encoding(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """[x, sin(2^k π x), cos(2^k π x)]_{k<L}: [..., D] → [..., D·(1 + 2L)]."""
    scales = (2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)) * math.pi
    angles = (x[..., None] * scales).flatten(-2)
    return torch.cat([x, angles.sin(), angles.cos()], -1)


def farthest_point_sample(points: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [count] of a farthest-point subset of points [N, 3], deterministic (starts nearest the centroid)."""
    count = min(count, len(points))
    chosen = torch.empty(count, dtype=torch.long, device=points.device)
    chosen[0] = (points - points.mean(0)).norm(dim=-1).argmin()
    dist = (points - points[chosen[0]]).pow(2).sum(-1)
    for k in range(1, count):
        chosen[k] = dist.argmax()
        dist = torch.minimum(dist, (points - points[chosen[k]]).pow(2).sum(-1))
    return chosen


def knn(queries: torch.Tensor, points: torch.Tensor, k: int, exclude_self: bool = False):
    """(squared distances [Q, k], indices [Q, k]) of each query's k nearest points."""
    d2 = torch.cdist(queries, points).pow(2)
    if exclude_self:
        d2 = d2 + torch.diag_embed(torch.full((len(points),), float("inf"), device=points.device))
    d2, idx = d2.topk(min(k, points.shape[0] - int(exclude_self)), dim=-1, largest=False)
    return d2, idx


def arap_loss(points_a: torch.Tensor, points_b: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """As-rigid-as-possible term on control points: neighbour distances at t [M, 3] and at t' [M, 3] agree.

    L = mean_{i, j ∈ N(i)} (‖p_i(t) − p_j(t)‖ − ‖p_i(t') − p_j(t')‖)²; zero for any rigid motion.
    """
    da = (points_a[:, None] - rows(points_a, neighbours)).norm(dim=-1)
    db = (points_b[:, None] - rows(points_b, neighbours)).norm(dim=-1)
    return (da - db).pow(2).mean()


class ControlPointField(nn.Module):
    """SC-GS-style deformation: control points with per-time rigid transforms, blended onto the Gaussians.

    Args:
        num_points: control points M (farthest-point sampled from the canonical means by :meth:`setup`).
        skin_neighbours: K control points blended per Gaussian.
        arap_neighbours: neighbours per control point in the ARAP term.
        width, depth: of the transform MLP; frequencies: positional-encoding octaves of x_cp and of t.
        arap_weight: weight of the ARAP term.
        growth: each control point also gets a scale factor e^g(t) of its neighbourhood (offsets and the Gaussians'
            scales): rigid transforms alone cannot grow or shrink parts (a growing plant's leaves).
    """

    def __init__(self, num_points: int = 256, skin_neighbours: int = 4, arap_neighbours: int = 8, width: int = 128,
                 depth: int = 4, space_frequencies: int = 6, time_frequencies: int = 6, arap_weight: float = 1e-2,
                 growth: bool = False):
        super().__init__()
        self.config = dict(num_points=num_points, skin_neighbours=skin_neighbours, arap_neighbours=arap_neighbours,
                           width=width, depth=depth, space_frequencies=space_frequencies,
                           time_frequencies=time_frequencies, arap_weight=arap_weight, growth=growth)
        self.register_buffer("points", torch.zeros(num_points, 3))  # canonical control points, set by setup()
        self.register_buffer("neighbours", torch.zeros(num_points, max(1, arap_neighbours), dtype=torch.long))
        # [N, K] skinning neighbours of the canonical Gaussians the field is bound to (see bind); [0, K]: none
        self.register_buffer("skin_index", torch.zeros(0, skin_neighbours, dtype=torch.long))
        self.log_radius = nn.Parameter(torch.zeros(num_points))
        inputs = 3 * (1 + 2 * space_frequencies) + (1 + 2 * time_frequencies)
        # (Δq 4, translation 3[, log-growth 1]) per control point
        self.mlp = _mlp(inputs, width, 8 if growth else 7, depth)

    def setup(self, means: torch.Tensor) -> None:
        """Place the control points on the canonical means [N, 3] (FPS) and size their RBF radii."""
        with torch.no_grad():
            idx = farthest_point_sample(means.detach(), self.points.shape[0])
            points = means.detach()[idx]
            if len(points) < self.points.shape[0]:  # fewer Gaussians than control points: repeat the last
                points = torch.cat([points, points[-1:].expand(self.points.shape[0] - len(points), 3)])
            self.points.copy_(points)
            d2, nbrs = knn(points, points, self.neighbours.shape[1], exclude_self=True)
            self.neighbours.copy_(nbrs)
            spacing = d2[:, : self.config["skin_neighbours"]].clamp_min(1e-12).sqrt().mean(-1)
            self.log_radius.copy_(spacing.clamp_min(1e-3).log())
        self.bind(means)

    def bind(self, means: torch.Tensor) -> None:
        """Fix the K skinning neighbours of each canonical Gaussian [N, 3] (a KNN against the control points), so
        that :meth:`forward` does not search them every call. The fit binds at the stage change and after every
        densification (when the Gaussians change); between those the means move only a little, and the skinning
        weights follow them exactly — only the neighbour set is held. Saved with the weights, so a resumed fit and
        the exported asset use the neighbours the training used."""
        with torch.no_grad():
            self.skin_index = knn(means.detach(), self.points, self.config["skin_neighbours"])[1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "skin_index"  # its length is the number of Gaussians bound, unknown at construction
        if key in state_dict:
            self.skin_index = torch.empty_like(state_dict[key], device=self.skin_index.device)
        else:  # weights written before the binding existed: unbound
            state_dict[key] = self.skin_index
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _encoded_points(self) -> torch.Tensor:
        """PE(x_cp) [M, 3·(1 + 2L)], recomputed only when the control points change (setup, loading): keyed on
        the buffer's storage and in-place version counter."""
        key = (self.points.data_ptr(), self.points._version, self.points.device, self.points.dtype)
        if getattr(self, "_pe_key", None) != key:
            self._pe_cache = positional_encoding(self.points, self.config["space_frequencies"])
            self._pe_key = key
        return self._pe_cache

    def _outputs_at(self, times: list[float]) -> torch.Tensor:
        """The MLP's raw outputs [S, M, 7 or 8] for the control points at S times, one call."""
        M = self.points.shape[0]
        space = self._encoded_points()
        time = torch.tensor(times, dtype=space.dtype).to(space.device, non_blocking=True)
        time = positional_encoding(time[:, None], self.config["time_frequencies"])  # [S, 1 + 2L]
        h = torch.cat([space.expand(len(times), *space.shape), time[:, None].expand(-1, M, -1)], -1)
        return self.mlp(h)

    def transforms_at(self, times: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit quaternions [S, M, 4], translations [S, M, 3]) of the control points at S times, one MLP call."""
        out = self._outputs_at(times)
        return _residual_quat(out[..., :4]), out[..., 4:7]

    def transforms(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit quaternions [M, 4], translations [M, 3]) of the control points at time t."""
        q, trans = self.transforms_at([t])
        return q[0], trans[0]

    def control_points_at(self, t: float) -> torch.Tensor:
        """Deformed control points [M, 3] at time t."""
        return self.points + self.transforms(t)[1]

    def skinning(self, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices [N, K] of each Gaussian's nearest control points, normalised RBF weights [N, K]).

        The indices are the bound ones (:meth:`bind`) when the field is bound to N Gaussians, else searched now."""
        idx = self.skin_index if len(self.skin_index) == len(means) else None
        if idx is None:
            with torch.no_grad():
                idx = knn(means.detach(), self.points, self.config["skin_neighbours"])[1]
        d2 = (means.detach()[:, None] - rows(self.points, idx)).pow(2).sum(-1)
        radius = rows(self.log_radius.exp(), idx)
        w = torch.exp(-d2 / (2 * radius**2)) + 1e-8  # the floor keeps far-away Gaussians attached to something
        return idx, w / w.sum(-1, keepdim=True)

    def forward(self, means, quats, log_scales, t):
        """The Gaussians at time t (float: [N, ·] each) or at S times (sequence: [S, N, ·] each): one MLP call for
        the control points' transforms at all S times, then all S skinned at once.

        Linear blend skinning, x_t = Σ_k w_k [g_k R_k (x − p_k) + p_k + t_k] (g_k = e^growth, 1 without growth),
        is evaluated as A x + b with A = Σ_k w_k g_k R_k and b = Σ_k w_k (p_k + t_k − g_k R_k p_k): the same sum,
        but the per-control-point terms are blended in one gather ([S, N, K, 16]) instead of rotating every
        (Gaussian, neighbour) pair — on CUDA those 3×3 products were the fit's largest kernels (BENCHMARKS.md)."""
        times, single = _times(t)
        out = self._outputs_at(times)
        q, trans = _residual_quat(out[..., :4]), out[..., 4:7]  # [S, M, 4], [S, M, 3]
        rot = quat_to_rotmat(q)  # [S, M, 3, 3]
        growth = self.config["growth"]
        if growth:  # each control point also scales its neighbourhood about itself by e^g
            rot = rot * out[..., 7].exp()[..., None, None]
        shift = self.points + trans - (rot * self.points[:, None, :]).sum(-1)  # p + t − g R p  [S, M, 3]
        terms = [rot.flatten(-2), shift, q] + ([out[..., 7:8]] if growth else [])  # blended alike: linear in w
        per_point = torch.cat(terms, -1)  # [S, M, 16 or 17]
        idx, w = self.skinning(means)  # [N, K]
        # index_select (backward: index_add) rather than per_point[:, idx] (backward: a sorting index_put)
        gathered = per_point.index_select(1, idx.flatten()).unflatten(1, idx.shape)  # [S, N, K, 16 or 17]
        blended = (w[..., None] * gathered).sum(-2)  # [S, N, 16 or 17]
        A = blended[..., :9].unflatten(-1, (3, 3))
        means_t = (A * means[:, None, :]).sum(-1) + blended[..., 9:12]
        quats_t = quat_multiply(F.normalize(blended[..., 12:16], dim=-1), quats)  # all near identity: no sign flips
        if growth:
            log_scales_t = log_scales + blended[..., 16:17]  # [S, N, 3]
        else:
            log_scales_t = log_scales.expand(len(times), *log_scales.shape)
        if single:
            return means_t[0], quats_t[0], log_scales_t[0]
        return means_t, quats_t, log_scales_t

    def regularizer(self, t: float = 0.0, t_other: float = 0.0) -> dict[str, torch.Tensor]:
        moved = self.points + self.transforms_at([t, t_other])[1]  # [2, M, 3]
        arap = arap_loss(moved[0], moved[1], self.neighbours)
        return {"arap": self.config["arap_weight"] * arap}


FIELDS = {"4dgs": HexPlaneField, "scgs": ControlPointField}


#: constructor arguments of removed experiments, still in fields saved before their removal: read, warned about
#: and ignored
REMOVED_ARGUMENTS = {"scgs": ("time_knots", "knot_smooth_weight")}


def drop_removed_fields(config: dict, removed: tuple[str, ...], source: str) -> dict:
    """``config`` without the ``removed`` fields, each one present named in a warning that it is ignored."""
    kept = dict(config)
    for name in removed:
        if name in kept:
            del kept[name]
            warnings.warn(f"{source}: the saved field {name!r} belongs to a removed experiment and is ignored",
                          stacklevel=3)
    return kept


def field_from_config(method: str, config: dict, source: str = "the field config") -> nn.Module:
    """The ``method`` field (a key of FIELDS) built from its saved constructor arguments (an asset's field_config);
    ``source`` names the file in warnings."""
    return FIELDS[method](**drop_removed_fields(config, REMOVED_ARGUMENTS.get(method, ()), str(source)))
