"""Differentiable Gaussian rasterization: gsplat on CUDA, and our tiled PyTorch reference everywhere else.

Both backends compute the same thing — gsplat's "classic" 3DGS mode (EWA splatting, Zwicker et al. 2001; Kerbl et
al. 2023) — and return the same :class:`RenderOutput`:

1. project: mean_c = R·μ + t (OpenCV camera axes, +Z forward); Σ_c = R (R_q S Sᵀ R_qᵀ) Rᵀ; the EWA Jacobian J of the
   pinhole projection at the mean, with x/z and y/z clamped to 1.3× the image's half-extent (as gsplat does, so that
   Gaussians far off screen do not blow up); Σ_2D = J Σ_c Jᵀ + eps2d·I (eps2d = 0.3 px², gsplat's default);
2. cull: z < near_plane (0.01) or z > far_plane, det Σ_2D ≤ 0, opacity < 1/255, or box off screen. The box is
   gsplat ≥ 1.5's opacity-aware one: half-extents ceil(k·sqrt(Σ_2D,xx)), ceil(k·sqrt(Σ_2D,yy)) with
   k = min(3.33, sqrt(2 ln(255·o))), i.e. exactly the box where α can reach 1/255. ``radii`` reports max of the two;
3. composite per pixel centre p (pixel (i, j) has its centre at (j + 0.5, i + 0.5)), front to back in camera-z
   order: α_i = min(0.999, o_i exp(−½ dᵀ Σ_2D⁻¹ d)), skipped when α_i < 1/255; C = Σ c_i α_i T_i + T_final·bg,
   T_i = Π_{j<i}(1 − α_j); a pixel stops (exclusively) at the first Gaussian that would take T to ≤ 1e-4.

Depth is the *expected* depth (gsplat's "ED"): Σ w_i z_i / α, with α = Σ w_i clamped below at 1e-10 — so 0 where
nothing was hit. z is the camera-space depth of the Gaussian's centre.

The PyTorch reference tiles the image (8×8 by default). Per tile it keeps the Gaussians whose box covers it and
where α can reach 1/255 at one of its pixel centres (an exact ellipse/rectangle test, which changes no output),
sorted by depth; it writes the exponent of every (pixel, Gaussian) pair as one matmul of per-pair coefficients with
a quadratic basis of the pixel offsets, composites with a cumprod along the Gaussian axis and accumulates colour,
depth and alpha with a bmm; the backward is written out (see _CompositeGroup). Tiles are processed in groups of
similar Gaussian counts so that padding stays small. Known differences from gsplat, each ~1e-6 on the outputs: the
expanded exponent loses a few float32 ulps; exp is exact (gsplat uses __expf); a pixel where rounding makes the
exponent slightly negative is not skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffusion4d import cameras
from diffusion4d.reconstruction.gaussians import Gaussians, quat_to_rotmat, rows

ALPHA_MIN = 1.0 / 255.0  # Gaussians fainter than this at a pixel are skipped there
ALPHA_MAX = 0.999  # gsplat's clamp (the original 3DGS code uses 0.99)
T_MIN = 1e-4  # a pixel is done once its transmittance would drop to this
EPS2D = 0.3  # px², added to the 2D covariance (gsplat's default low-pass filter)
NEAR_PLANE = 0.01
FAR_PLANE = 1e10

#: glTF/OpenGL camera axes (+Y up, looking down −Z) → OpenCV camera axes (+Y down, looking down +Z).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass
class RenderOutput:
    """What both backends return, for C cameras, N Gaussians and an H×W image.

    rgb [C, H, W, 3] composited over the backgrounds; alpha [C, H, W, 1]; depth [C, H, W, 1] expected depth
    (Σ w_i z_i / α, 0 where α = 0); means2d [C, N, 2] projected centres in pixels (call ``retain_grad()`` before
    backward to read its gradient; meaningful only where radii > 0); radii [C, N] int32 pixel radius (0 = culled).

    One exception: gsplat with per-camera Gaussians returns means2d as gsplat made it, [C, 1, N, 2] (its batch
    layout) — the very tensor the images depend on, since a reshaped view made afterwards would get no gradient.
    ``means2d.grad.reshape(*radii.shape, 2)`` is [C, N, 2] for every backend and input form.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor


# -- cameras ----------------------------------------------------------------------------------------------------
def viewmats_from_c2w(c2w) -> Tensor:
    """Camera-to-world [C, 4, 4] (OpenGL camera axes, glTF world) → world-to-camera [C, 4, 4] in OpenCV axes."""
    if not isinstance(c2w, Tensor):
        c2w = torch.as_tensor(np.asarray(c2w, dtype=np.float32))
    if c2w.dim() == 2:
        c2w = c2w[None]
    if c2w.shape[-2:] != (4, 4):
        raise ValueError(f"c2w must be [C, 4, 4], got {list(c2w.shape)}")
    w2c = torch.linalg.inv(c2w.to(torch.float64))
    dtype = c2w.dtype if c2w.is_floating_point() else torch.float32
    return (_GL_TO_CV.to(w2c.device) @ w2c).to(dtype)


def intrinsics_matrix(x_fov: float, y_fov: float, width: int, height: int) -> Tensor:
    """Pinhole K [3, 3] in pixels (principal point at the image centre), from :func:`diffusion4d.cameras.intrinsics`."""
    return torch.as_tensor(cameras.intrinsics(x_fov, y_fov, width, height), dtype=torch.float32)


# -- input checks -----------------------------------------------------------------------------------------------
def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds,
                  check_finite=True):
    """Shapes: shared Gaussians (means [N, 3], quats [N, 4], scales [N, 3]) or per-camera ones ([C, N, ·]);
    opacities [N], colors [N, 3], viewmats [C, 4, 4], Ks [C, 3, 3], backgrounds [C, 3] either way."""
    n = means.shape[-2] if means.dim() in (2, 3) else -1
    c = viewmats.shape[0] if viewmats.dim() == 3 else -1
    per_camera = means.dim() == 3
    lead = (c, n) if per_camera else (n,)
    expected = {"means": (means, (*lead, 3)), "quats": (quats, (*lead, 4)), "scales": (scales, (*lead, 3)),
                "opacities": (opacities, (n,)), "colors": (colors, (n, 3)), "viewmats": (viewmats, (c, 4, 4)),
                "Ks": (Ks, (c, 3, 3))}
    if backgrounds is not None:
        expected["backgrounds"] = (backgrounds, (c, 3))
    form = "per-camera Gaussians [C, N, ·]" if per_camera else "shared Gaussians [N, ·]"
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"rasterize: {name} must have shape {list(shape)} (N = {n} Gaussians, C = {c} "
                             f"cameras, {form}; means is [N, 3] or [C, N, 3]), got {list(tensor.shape)}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"rasterize: image size must be positive, got {width}x{height}")
    if not check_finite:
        return
    names = ("means", "quats", "scales", "opacities", "colors")
    finite = torch.stack([torch.isfinite(expected[name][0]).all() for name in names])
    if not bool(finite.all()):  # one device sync per call, not one per tensor
        bad = [name for name, ok in zip(names, finite.tolist()) if not ok]
        raise ValueError(f"rasterize: {', '.join(bad)} contains NaN or infinite values")


# -- projection (differentiable) -------------------------------------------------------------------------------
def project_points(points: Tensor, viewmats: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection of world points [N, 3] (every camera) or [C, N, 3] (camera c its own) into viewmats
    [C, 4, 4] (world-to-camera, OpenCV axes), Ks [C, 3, 3] → (pixel coordinates [C, N, 2], depths [C, N]); the
    centres the rasterizer splats at. Points behind the camera get depth ≤ 0 (their coordinates are meaningless)."""
    cam = points @ viewmats[:, :3, :3].transpose(-1, -2) + viewmats[:, None, :3, 3]
    z = cam[..., 2]
    safe = torch.where(z.abs() > 1e-6, z, torch.full_like(z, 1e-6))
    uv = cam[..., :2] / safe[..., None] * Ks[:, None, [0, 1], [0, 1]] + Ks[:, None, [0, 1], [2, 2]]
    return uv, z


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int, eps2d: float = EPS2D, near_plane: float = NEAR_PLANE,
                      far_plane: float = FAR_PLANE):
    """EWA projection of shared Gaussians (means [N, 3], quats [N, 4], scales [N, 3], seen by every camera) or
    per-camera ones ([C, N, ·]: camera c sees its own copy), opacities [N], into viewmats [C, 4, 4], Ks [C, 3, 3]
    → ``(means2d [C, N, 2], conics [C, N, 3] = (a, b, c) of Σ_2D⁻¹, depths [C, N], radii_xy [C, N, 2] int32, 0
    where culled)``. Culled entries hold finite but meaningless values."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    # one path for both forms: [N, ·] broadcasts against the camera axis C, [C, N, ·] pairs with it
    mean_c = means @ R.transpose(-1, -2) + t[:, None]  # [C, N, 3]
    M = quat_to_rotmat(quats) * scales[..., None, :]  # R_q S
    covar = M @ M.transpose(-1, -2)  # [N, 3, 3] or [C, N, 3, 3]
    covar_c = R[:, None] @ covar @ R[:, None].transpose(-1, -2)  # [C, N, 3, 3]

    x, y, z = mean_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries (and their gradients) finite
    fx, fy, cx, cy = (Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None])
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.minimum(torch.maximum(y / z, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], -1).reshape(*z.shape, 2, 3)
    cov2d = J @ covar_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    ok = in_depth & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)

    with torch.no_grad():
        o = opacities.detach()[None].expand_as(z)
        ok = ok & (o >= ALPHA_MIN)
        extend = torch.sqrt(2 * torch.log(o.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp(max=3.33)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        mx, my = means2d.detach().unbind(-1)
        ok = ok & ((rx > 0) | (ry > 0))
        ok = ok & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], -1).where(ok[..., None], torch.zeros_like(rx)[..., None]).to(torch.int32)
    return means2d, conics, mean_c[..., 2], radii


# -- tile binning (no gradients) --------------------------------------------------------------------------------
def _min_exponent_on_rect(x0, x1, y0, y1, conics):
    """min of ½ dᵀ Σ⁻¹ d over d ∈ [x0, x1] × [y0, y1] (offsets from the Gaussian's centre), per pair [M]."""
    a, b, c = conics.unbind(-1)
    q = lambda x, y: 0.5 * (a * x * x + c * y * y) + b * x * y  # noqa: E731
    # a convex quadratic not minimised inside the rectangle is minimised on its boundary: try all four edges
    edges = [q(x, torch.minimum(torch.maximum(-b * x / c, y0), y1)) for x in (x0, x1)]
    edges += [q(torch.minimum(torch.maximum(-b * y / a, x0), x1), y) for y in (y0, y1)]
    inside = (x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0)
    return torch.where(inside, torch.zeros_like(a), torch.stack(edges).amin(0))


def _bin_tiles(means2d: Tensor, conics: Tensor, depths: Tensor, radii: Tensor, opacities: Tensor, tile: int,
               tiles_x: int, tiles_y: int):
    """(tile id, flat Gaussian id c·N + n) of every tile a Gaussian can reach, sorted by tile, then depth.

    Candidates are the tiles under the Gaussian's box (as gsplat); of those we keep the ones where α can reach
    1/255 at some pixel centre, which drops box corners without changing any output."""
    C, N = depths.shape
    visible = (radii > 0).any(-1).reshape(-1)
    flat = torch.nonzero(visible).squeeze(1)
    flat = flat[torch.argsort(depths.reshape(-1)[flat], stable=True)]
    flat = flat[torch.argsort(flat // N, stable=True)]  # camera-major, then front to back
    cam = flat // N
    m = means2d.reshape(-1, 2)[flat].double()
    r = radii.reshape(-1, 2)[flat].double()
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile).clamp(0, tiles_y).long()
    w = x1 - x0
    counts = w * (y1 - y0)
    owner = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), counts)
    local = torch.arange(len(owner), device=flat.device) - (torch.cumsum(counts, 0) - counts)[owner]
    tx, ty = x0[owner] + local % w[owner], y0[owner] + local // w[owner]

    # pixel centres of the tile, relative to the Gaussian's centre; 1e-3 of slack covers rounding in the renderer
    px0, py0 = tx.double() * tile + 0.5 - m[owner, 0], ty.double() * tile + 0.5 - m[owner, 1]
    sigma_min = _min_exponent_on_rect(px0, px0 + tile - 1, py0, py0 + tile - 1,
                                      conics.reshape(-1, 3)[flat][owner].double())
    reach = torch.log(opacities.detach().double()[flat % N] / ALPHA_MIN)[owner]
    keep = sigma_min <= reach + 1e-3
    tile_id = (cam[owner] * (tiles_x * tiles_y) + ty * tiles_x + tx)[keep]
    tile_id, perm = torch.sort(tile_id, stable=True)  # stable: keeps the depth order inside a tile
    return tile_id, flat[owner[keep][perm]]


def _pixel_basis(tile: int, dtype, device) -> Tensor:
    """[tile², 6] quadratic basis (1, u, v, u², v², uv) of pixel-centre offsets from the tile centre."""
    offsets = torch.arange(tile, dtype=dtype, device=device) + 0.5 - tile / 2
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, v * v, u * v], -1)


class _CompositeGroup(torch.autograd.Function):
    """One group of G tiles with K depth-sorted Gaussians each (padding has α = 0) and P pixels per tile.

    forward(coef [G, K, 6], feats [G, K, F], basis [P, 6]) → Σ_i w_i feats_i [G, P, F], where the exponent of pair
    (pixel p, Gaussian i) is σ − ln o = basis_p · coef_i and w_i = α_i T_i. The backward is written out (the
    standard front-to-back compositing adjoint, as gsplat's) because autograd through cumprod is several times
    slower and keeps many more [G, P, K] temporaries alive:
    ∂L/∂α_i = T_i g_i − (Σ_{j>i} w_j g_j) / (1 − α_i), with g_i = ∂L/∂out · feats_i, and ∂α/∂σ = −α where
    1/255 ≤ α < 0.999 (zero where α is clamped, skipped or past the stop, as in gsplat).
    """

    @staticmethod
    def forward(ctx, coef: Tensor, feats: Tensor, basis: Tensor) -> Tensor:
        alpha = torch.matmul(basis, coef.transpose(1, 2)).neg_().exp_().clamp_(max=ALPHA_MAX)  # [G, P, K]
        alpha.masked_fill_(alpha < ALPHA_MIN, 0.0)
        trans = torch.cumprod(1 - alpha, dim=-1)  # transmittance after each Gaussian
        trans_before = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], -1)
        weights = (trans_before - trans).masked_fill_(trans <= T_MIN, 0.0)  # = α_i T_i, 0 once a pixel is done
        ctx.save_for_backward(alpha, trans_before, weights, feats, basis)
        return torch.matmul(weights, feats)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        alpha, trans_before, weights, feats, basis = ctx.saved_tensors
        g = torch.matmul(grad_out, feats.transpose(1, 2))  # [G, P, K]: ∂L/∂w_i
        wg = weights * g
        behind = wg.sum(-1, keepdim=True) - torch.cumsum(wg, -1)  # Σ_{j>i} w_j g_j
        d_alpha = trans_before * g - behind / (1 - alpha)
        live = (weights > 0) & (alpha < ALPHA_MAX)
        d_sigma = torch.where(live, alpha * d_alpha, torch.zeros_like(alpha))  # ∂L/∂σ = −α ∂L/∂α; sign below
        d_coef = -torch.matmul(d_sigma.transpose(1, 2), basis)  # [G, K, 6]
        d_feats = torch.matmul(weights.transpose(1, 2), grad_out)  # [G, K, F]
        return d_coef, d_feats, None


def _rasterize_torch(means2d, conics, depths, radii, opacities, colors, width, height, tile=8, group_pad=1.25,
                     group_elements=1 << 22):
    """Tiled compositing → features [C, H, W, 5] = (rgb, Σ w z, alpha), not yet over the background."""
    C, N = depths.shape
    dtype, device = means2d.dtype, means2d.device
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    num_tiles = C * tiles_x * tiles_y
    with torch.no_grad():
        tile_id, gauss = _bin_tiles(means2d.detach(), conics.detach(), depths.detach(), radii, opacities, tile,
                                    tiles_x, tiles_y)
        counts = torch.bincount(tile_id, minlength=num_tiles)
        starts = torch.cumsum(counts, 0) - counts
        busy = torch.nonzero(counts).squeeze(1)
        busy = busy[torch.argsort(counts[busy], descending=True)]
        busy_counts = counts[busy].tolist()
        local = tile_id % (tiles_x * tiles_y)
        centres = torch.stack([local % tiles_x, local // tiles_x], -1).to(dtype) * tile + tile / 2  # per pair

    # exponent coefficients of every (tile, Gaussian) pair: ½ dᵀ Σ⁻¹ d − ln o with d = e + (u, v), e = tile centre −
    # Gaussian centre, expanded in the pixel offsets (u, v) of _pixel_basis; a last row pads with α = 0
    e = centres - rows(means2d.reshape(-1, 2), gauss)
    a, b, c = rows(conics.reshape(-1, 3), gauss).unbind(-1)
    ex, ey = e.unbind(-1)
    log_o = rows(torch.log(opacities), gauss % N)
    coef = torch.stack([0.5 * a * ex * ex + 0.5 * c * ey * ey + b * ex * ey - log_o,
                        a * ex + b * ey, b * ex + c * ey, 0.5 * a, 0.5 * c, b], -1)
    coef = torch.cat([coef, coef.new_tensor([[1e4, 0, 0, 0, 0, 0]])])
    feats = torch.cat([colors[None].expand(C, N, 3), depths[..., None], torch.ones_like(depths)[..., None]], -1)
    feats = torch.cat([rows(feats.reshape(C * N, 5), gauss), feats.new_zeros(1, 5)])
    pad = len(gauss)

    basis = _pixel_basis(tile, dtype, device)
    results, done = [], 0
    # groups of tiles whose counts are within group_pad of the group's largest (little padding), each group's
    # [G, P, K] work arrays capped at group_elements (bounded memory for many cameras or large images)
    while done < len(busy_counts):
        k = busy_counts[done]
        end = done + 1
        limit = max(1, group_elements // (tile * tile * k))
        while end < len(busy_counts) and busy_counts[end] * group_pad >= k and end - done < limit:
            end += 1
        tiles = busy[done:end]
        with torch.no_grad():
            slot = torch.arange(k, device=device)
            pair = torch.where(slot < counts[tiles, None], starts[tiles, None] + slot, pad)  # [G, K]
        results.append(_CompositeGroup.apply(rows(coef, pair), rows(feats, pair), basis))
        done = end

    out = feats.new_zeros(num_tiles, tile * tile, 5)
    if results:
        out = out.index_copy(0, busy, torch.cat(results))
    out = out.reshape(C, tiles_y, tiles_x, tile, tile, 5).permute(0, 1, 3, 2, 4, 5)
    return out.reshape(C, tiles_y * tile, tiles_x * tile, 5)[:, :height, :width]


# -- the public entry points ------------------------------------------------------------------------------------
def _gsplat_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds):
    import gsplat

    per_camera = means.dim() == 3
    if per_camera:  # gsplat's batch dims: batch c holds camera c's own Gaussians and that one camera
        C, N = means.shape[:2]
        opacities, colors = opacities.expand(C, N), colors.expand(C, N, 3)
        viewmats, Ks, backgrounds = viewmats[:, None], Ks[:, None], backgrounds[:, None]
    means, quats, scales, opacities, colors, viewmats, Ks, backgrounds = (
        t.contiguous() for t in (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds))
    render, alpha, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE, eps2d=EPS2D, render_mode="RGB+ED", backgrounds=backgrounds, packed=False,
        rasterize_mode="classic",
    )
    radii = meta["radii"]
    if radii.dim() == meta["means2d"].dim():  # gsplat ≥ 1.5: per-axis radii [..., N, 2]
        radii = radii.max(-1).values
    if per_camera:  # [C, 1, ...] → [C, ...]; means2d stays as gsplat made it (see RenderOutput)
        render, alpha, radii = render[:, 0], alpha[:, 0], radii[:, 0]
    return RenderOutput(render[..., :3], alpha, render[..., 3:4], meta["means2d"], radii.to(torch.int32))


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor,
              Ks: Tensor, width: int, height: int, backgrounds: Tensor | None = None, backend: str = "auto",
              tile_size: int = 8, check_finite: bool = True) -> RenderOutput:
    """Render N Gaussians (means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3], opacities [N] in (0, 1],
    colors [N, 3]) into C cameras (viewmats [C, 4, 4] world-to-camera in OpenCV axes, Ks [C, 3, 3]).

    Per-camera Gaussians: means [C, N, 3], quats [C, N, 4], scales [C, N, 3] — camera c sees its own copy (the
    fit's fine stage: each view deformed to its own time), opacities and colors shared. Outputs as for shared
    Gaussians (see :class:`RenderOutput` for the one exception, gsplat's means2d).

    backgrounds [C, 3] (None = white). backend: "torch", "gsplat" or "auto" (gsplat when the tensors are on CUDA and
    gsplat imports, else torch). tile_size only affects the torch backend's speed, not its output.
    check_finite=False skips the NaN/inf check of the Gaussians (a device sync per call on CUDA): for callers that
    check them themselves, as the fit does every few iterations.
    """
    width, height = int(width), int(height)
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, check_finite)
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"rasterize: backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    dtype, device = means.dtype, means.device
    viewmats, Ks = viewmats.to(device=device, dtype=dtype), Ks.to(device=device, dtype=dtype)
    if backgrounds is None:
        backgrounds = torch.ones(viewmats.shape[0], 3, dtype=dtype, device=device)
    backgrounds = backgrounds.to(device=device, dtype=dtype)
    if backend == "gsplat" or (backend == "auto" and _gsplat_available(device)):
        if device.type != "cuda":
            raise ValueError("rasterize: the gsplat backend needs CUDA tensors (use backend='torch' on the CPU)")
        return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)

    means2d, conics, depths, radii_xy = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width,
                                                          height)
    out = _rasterize_torch(means2d, conics, depths, radii_xy, opacities, colors, width, height, tile=tile_size)
    alpha = out[..., 4:5]
    rgb = out[..., :3] + (1 - alpha) * backgrounds[:, None, None, :]
    depth = out[..., 3:4] / alpha.clamp_min(1e-10)
    return RenderOutput(rgb, alpha, depth, means2d, radii_xy.max(-1).values)


def render_gaussians(g: Gaussians, c2w, x_fov: float, y_fov: float, width: int, height: int,
                     backgrounds: Tensor | None = None, backend: str = "auto", tile_size: int = 8) -> RenderOutput:
    """Render :class:`Gaussians` from camera-to-world poses c2w [C, 4, 4] or [4, 4] (OpenGL axes, glTF world, as
    :func:`diffusion4d.data.layout.read_orbit` gives) with the orbit's fovs (radians)."""
    device, dtype = g.means.device, g.means.dtype
    viewmats = viewmats_from_c2w(c2w).to(device=device, dtype=dtype)
    Ks = intrinsics_matrix(x_fov, y_fov, width, height).to(device=device, dtype=dtype)
    Ks = Ks[None].expand(viewmats.shape[0], 3, 3)
    return rasterize(g.means, g.quats, g.scales, g.opacities, g.rgb, viewmats, Ks, width, height,
                     backgrounds=backgrounds, backend=backend, tile_size=tile_size)
