"""Building blocks of the procedural assets: palette colours, small mesh generators (:class:`Part`) and
textures generated in code. Everything is modelled at roughly unit size facing +Z with +Y up."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# ================================================================================================================
# Colours
# ================================================================================================================

#: Named sRGB colours: captions name them, files hold their linear values.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.82, 0.11, 0.10),
    "orange": (0.96, 0.50, 0.09),
    "yellow": (0.97, 0.85, 0.16),
    "green": (0.20, 0.64, 0.22),
    "teal": (0.07, 0.58, 0.58),
    "blue": (0.13, 0.33, 0.85),
    "purple": (0.53, 0.24, 0.74),
    "pink": (0.96, 0.52, 0.72),
    "brown": (0.50, 0.30, 0.14),
    "white": (0.93, 0.93, 0.91),
    "grey": (0.50, 0.50, 0.52),
    "black": (0.07, 0.07, 0.08),
}
_VIVID = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")


def srgb_to_linear(c) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear(name: str) -> np.ndarray:
    """Linear RGB of a palette colour (what glTF base-colour factors and COLOR_0 hold)."""
    return srgb_to_linear(PALETTE[name])


def srgb8(name: str) -> np.ndarray:
    """uint8 sRGB of a palette colour (what PNG textures hold)."""
    return np.round(np.asarray(PALETTE[name]) * 255).astype(np.uint8)


def pick_colours(rng: np.random.Generator, k: int, pool=tuple(PALETTE)) -> list[str]:
    """``k`` distinct colour names."""
    return [str(c) for c in rng.choice(pool, size=k, replace=False)]


# ================================================================================================================
# Geometry: small mesh generators
# ================================================================================================================


@dataclass
class Part:
    """A triangle mesh piece with optional per-vertex skin data and colours (all arrays share the vertex count)."""

    positions: np.ndarray  # [N, 3]
    normals: np.ndarray  # [N, 3]
    indices: np.ndarray  # [F, 3], counter-clockwise seen from outside
    uvs: np.ndarray  # [N, 2]
    joints: np.ndarray | None = None  # [N, 4]
    weights: np.ndarray | None = None  # [N, 4]
    colors: np.ndarray | None = None  # [N, 3] linear RGB

    def __len__(self) -> int:
        return len(self.positions)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _grid_triangles(rows: int, cols: int) -> np.ndarray:
    """Two triangles per quad of a (rows+1) × (cols+1) vertex grid, counter-clockwise when +col × +row is out."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a = (r * (cols + 1) + c).ravel()
    b, d = a + 1, a + cols + 1
    return np.concatenate([np.stack([a, b, d + 1], 1), np.stack([a, d + 1, d], 1)])


def _drop_degenerate(positions: np.ndarray, tris: np.ndarray) -> np.ndarray:
    # lathe rings of radius 0 (poles, cone tips) produce zero-area triangles that only waste space
    p = positions[tris]
    area = np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    return tris[area > 1e-12]


def lathe(radius, height, segments: int = 24, caps: bool = True) -> Part:
    """Surface of revolution about +Y of the profile (radius[k], height[k]), listed bottom to top.

    Normals come from the profile's slope, so spheres and cones shade smoothly; flat caps close open ends.
    Azimuth 0 faces +Z, so texture seams sit at the back of front-facing things.
    """
    r = np.asarray(radius, dtype=np.float64)
    y = np.asarray(height, dtype=np.float64)
    m = len(r)
    phi = np.linspace(0.0, 2 * np.pi, segments + 1)
    s, c = np.sin(phi), np.cos(phi)
    dr, dy = np.gradient(r), np.gradient(y)
    n2 = _normalize(np.stack([dy, -dr], 1))  # outward normal in the (radial, up) plane
    pos = np.stack([r[:, None] * s, np.broadcast_to(y[:, None], (m, segments + 1)), r[:, None] * c], -1)
    nrm = np.stack([n2[:, :1] * s, np.broadcast_to(n2[:, 1:], (m, segments + 1)), n2[:, :1] * c], -1)
    u, v = np.meshgrid(np.linspace(0, 1, segments + 1), 1 - np.linspace(0, 1, m))
    positions, normals = pos.reshape(-1, 3), nrm.reshape(-1, 3)
    part = Part(positions, normals, _drop_degenerate(positions, _grid_triangles(m - 1, segments)),
                np.stack([u.ravel(), v.ravel()], 1))
    pieces = [part]
    if caps and r[0] > 1e-9:
        pieces.append(_disc(r[0], y[0], segments, up=False))
    if caps and r[-1] > 1e-9:
        pieces.append(_disc(r[-1], y[-1], segments, up=True))
    return merge(pieces)


def _disc(radius: float, y: float, segments: int, up: bool) -> Part:
    phi = np.linspace(0.0, 2 * np.pi, segments + 1)[:-1]
    ring = np.stack([radius * np.sin(phi), np.full_like(phi, y), radius * np.cos(phi)], 1)
    positions = np.vstack([[0.0, y, 0.0], ring])
    j = np.arange(segments)
    a, b = 1 + j, 1 + (j + 1) % segments
    centre = np.zeros(segments, dtype=np.int64)
    tris = np.stack([centre, a, b] if up else [centre, b, a], 1)
    normals = np.tile([0.0, 1.0 if up else -1.0, 0.0], (segments + 1, 1))
    uvs = 0.5 + 0.5 * np.stack([np.r_[0.0, np.sin(phi)], np.r_[0.0, np.cos(phi)]], 1)
    return Part(positions, normals, tris, uvs)


def cylinder(radius: float, height: float, segments: int = 16, rings: int = 1, top_radius: float | None = None,
             caps: bool = True) -> Part:
    """A (possibly tapered) cylinder from y = 0 to y = height; ``rings`` subdivides it for skinning."""
    top = radius if top_radius is None else top_radius
    t = np.linspace(0.0, 1.0, rings + 1)
    return lathe(radius + (top - radius) * t, height * t, segments, caps)


def cone(radius: float, height: float, segments: int = 16) -> Part:
    return cylinder(radius, height, segments, rings=1, top_radius=0.0)


def sphere_profile(rings: int) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(np.pi, 0.0, rings + 1)  # from the bottom pole up
    return np.sin(theta), np.cos(theta)


_AXIS_FROM_Y = {
    "y": np.eye(3),
    "z": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # R_x(+90°): +Y → +Z
    "x": np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]]),  # R_z(−90°): +Y → +X
}


def ellipsoid(radii, segments: int = 16, rings: int = 10, axis: str = "y") -> Part:
    """An ellipsoid at the origin with semi-axes ``radii`` (x, y, z); its rings run along ``axis`` (for skinning)."""
    r, y = sphere_profile(rings)
    unit = lathe(r, y, segments, caps=False)
    return transformed(unit, linear_map=np.diag(np.asarray(radii, float)) @ _AXIS_FROM_Y[axis])


def box(size, center=(0.0, 0.0, 0.0)) -> Part:
    """An axis-aligned box with flat-shaded faces."""
    half = np.asarray(size, dtype=np.float64) / 2
    faces = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = np.cross(n, u)  # u × v = n, so the quad below is counter-clockwise seen from outside
            corners = np.array([-u - v, u - v, u + v, -u + v]) + n
            faces.append(Part(corners * half + center, np.tile(n, (4, 1)), np.array([[0, 1, 2], [0, 2, 3]]),
                              np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])))
    return merge(faces)


def plane_grid(width: float, height: float, nx: int, ny: int) -> Part:
    """A rectangle in the XY plane from x = 0 to width, y = 0 to height, facing +Z, subdivided for morphing."""
    x, y = np.meshgrid(np.linspace(0, width, nx + 1), np.linspace(0, height, ny + 1))
    positions = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    uvs = np.stack([x.ravel() / width, 1 - y.ravel() / height], 1)
    return Part(positions, np.tile([0.0, 0.0, 1.0], (len(positions), 1)), _grid_triangles(ny, nx), uvs)


def rotation_between(a, b) -> np.ndarray:
    """The 3×3 rotation taking unit direction ``a`` to unit direction ``b`` (Rodrigues)."""
    a, b = _normalize(np.asarray(a, float)), _normalize(np.asarray(b, float))
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # opposite: turn half way round any perpendicular axis
        perp = _normalize(np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0]))
        return 2 * np.outer(perp, perp) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def transformed(part: Part, *, linear_map=None, translate=(0.0, 0.0, 0.0)) -> Part:
    """Apply x ↦ A·x + t; normals use the inverse transpose of A so non-uniform scales shade correctly."""
    a = np.eye(3) if linear_map is None else np.asarray(linear_map, dtype=np.float64)
    normals = _normalize(part.normals @ np.linalg.inv(a))  # (A⁻ᵀ n)ᵀ = nᵀ A⁻¹
    tris = part.indices if np.linalg.det(a) > 0 else part.indices[:, ::-1]  # mirrors flip the winding
    return replace(part, positions=part.positions @ a.T + np.asarray(translate, float), normals=normals,
                   indices=tris)


def segment(part: Part, start, end) -> Part:
    """Place a part modelled along +Y from 0 to 1 so it spans ``start`` → ``end``."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    length = np.linalg.norm(end - start)
    r = rotation_between([0.0, 1.0, 0.0], end - start)
    return transformed(part, linear_map=r @ np.diag([1.0, length, 1.0]), translate=start)


def limb(radius: float, start, end, segments: int = 12, rings: int = 1, top_radius: float | None = None) -> Part:
    return segment(cylinder(radius, 1.0, segments, rings, top_radius), start, end)


def merge(parts: list[Part]) -> Part:
    """Concatenate parts; skin data and colours must be present on all or none."""
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])

    def cat(name):
        arrays = [getattr(p, name) for p in parts]
        if all(a is None for a in arrays):
            return None
        if any(a is None for a in arrays):
            raise ValueError(f"merge: {name} present on some parts only")
        return np.concatenate(arrays)

    return Part(
        np.concatenate([p.positions for p in parts]),
        np.concatenate([p.normals for p in parts]),
        np.concatenate([p.indices + o for p, o in zip(parts, offsets)]),
        np.concatenate([p.uvs for p in parts]),
        cat("joints"), cat("weights"), cat("colors"),
    )


def rigid(part: Part, joint: int) -> Part:
    """Bind every vertex fully to one joint."""
    n = len(part)
    joints = np.zeros((n, 4), dtype=np.int64)
    joints[:, 0] = joint
    weights = np.zeros((n, 4))
    weights[:, 0] = 1.0
    return replace(part, joints=joints, weights=weights)


def chain_weights(coord: np.ndarray, starts, joint_ids, blend: float) -> tuple[np.ndarray, np.ndarray]:
    """Smoothly blended weights along a bone chain.

    Bone i owns coordinates from ``starts[i]`` to ``starts[i+1]``; membership ramps over ±``blend`` around each
    boundary with a smoothstep. Memberships telescope, so they sum to 1 exactly; each vertex keeps its 4 largest.
    """
    starts = np.asarray(starts, dtype=np.float64)

    def step(x):  # 0 → 1 across [−blend, +blend]
        s = np.clip((x / blend + 1) / 2, 0, 1)
        return s * s * (3 - 2 * s)

    # S_i = "past the start of bone i"; the first bone has no lower edge
    past = np.concatenate([np.ones((len(coord), 1)), step(coord[:, None] - starts[None, 1:])], 1)
    member = past - np.concatenate([past[:, 1:], np.zeros((len(coord), 1))], 1)
    pad = max(0, 4 - len(starts))  # fewer than 4 bones: the spare slots get weight 0
    member = np.pad(member, ((0, 0), (0, pad)))
    ids = np.concatenate([np.asarray(joint_ids), np.full(pad, joint_ids[0])])
    order = np.argsort(-member, axis=1, kind="stable")[:, :4]
    weights = np.clip(np.take_along_axis(member, order, 1), 0, None)
    return ids[order], weights / weights.sum(1, keepdims=True)


def chain_bound(part: Part, coord: np.ndarray, starts, joint_ids, blend: float) -> Part:
    joints, weights = chain_weights(coord, starts, joint_ids, blend)
    return replace(part, joints=joints, weights=weights)


def coloured(part: Part, rgb) -> Part:
    """Give a part per-vertex colours: one linear RGB for all, or an [N, 3] array."""
    colors = np.broadcast_to(np.asarray(rgb, float), (len(part), 3)).copy()
    return replace(part, colors=colors)


# ================================================================================================================
# Textures (generated in code)
# ================================================================================================================


def stripes_texture(colours: list[str], count: int, vertical: bool, size: int = 64) -> np.ndarray:
    """``count`` equal stripes cycling through ``colours``; vertical stripes vary along u."""
    idx = (np.arange(size) * count // size) % len(colours)
    table = np.stack([srgb8(c) for c in colours])[idx]  # [size, 3]
    img = np.broadcast_to(table[None, :, :] if vertical else table[:, None, :], (size, size, 3))
    return np.ascontiguousarray(img)


def checker_texture(colours: list[str], count: int, size: int = 64) -> np.ndarray:
    cells = np.arange(size) * count // size
    parity = (cells[:, None] + cells[None, :]) % 2
    return np.stack([srgb8(c) for c in colours[:2]])[parity]


def planks_texture(colour: str, count: int, rng: np.random.Generator, vertical: bool, size: int = 64) -> np.ndarray:
    """Wood-like planks: each plank a slightly different shade of ``colour`` with dark seams between them."""
    base = np.asarray(PALETTE[colour])
    shades = np.clip(base[None] * rng.uniform(0.8, 1.1, size=(count, 1)), 0, 1)
    idx = np.arange(size) * count // size
    row = shades[idx]
    seam = (np.arange(size) * count) % size < count  # the first texel row of each plank
    row[seam] *= 0.45
    grain = 1 + 0.06 * np.sin(np.arange(size) * 0.9)  # faint grain along each plank
    if vertical:  # planks run up the image: shades change across columns, grain down the rows
        img = row[None, :, :] * grain[:, None, None]
    else:
        img = row[:, None, :] * grain[None, :, None]
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
