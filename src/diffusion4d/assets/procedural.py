"""Procedural animated 3D assets: our stand-in for Objaverse's animated subset.

Each *family* pairs a body plan with a motion (a quadruped trotting, a door swinging, a jellyfish pulsing …) and
samples proportions, colours and motion parameters from one random generator, so ``make_asset(seed, index)`` is a
pure function of its arguments. Assets are real GLB files whose animation lives in glTF channels (node TRS,
skinning or morph-target weights), so any glTF viewer plays them.

Design rules that keep the assets useful for the render protocol (normalise by the bounds at t = 0, render the
first second from an orbit at distance 2, curate by how much the front view changes at t = 0.25 s and 0.5 s):

* motion is large and starts at once: periodic motions use frequencies whose poses at 0.25 s and 0.5 s differ
  clearly from the pose at 0 (see ``cos_frequency``, ``sin_frequency``, ``spin_rate``); most loops last 1 s or less;
* the pose at t = 0 is chosen to span the motion (e.g. a ball starts at the top of its bounce above a mat, a chest
  starts with its lid open), so the moving asset stays near the unit cube it is normalised into;
* creatures that walk are turned sideways (their heading is an attribute and named in the caption), because gait
  seen head-on from the front camera barely changes the image; long bodies avoid diagonal headings, which the
  per-axis normalisation would stretch out of the orbit cameras' frames.

Everything is modelled at roughly unit size facing +Z with +Y up; one root node applies heading and overall
scale, so the "small"/"large" words of a caption are true of the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from diffusion4d.assets.gltf_writer import Channel, GlbBuilder, MorphTarget, Primitive
from diffusion4d.io import write_bytes_atomic, write_text_atomic

KEYS_PER_SECOND = 30  # dense sampling keeps LINEAR keyframes visually smooth at 24 fps renders


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


# ================================================================================================================
# Animation helpers
# ================================================================================================================


def quat(axis, angle) -> np.ndarray:
    """Unit quaternions (x, y, z, w) rotating by ``angle`` (scalar or [K]) about an axis ("x", "y", "z" or a vector)."""
    if isinstance(axis, str):
        axis = {"x": (1.0, 0, 0), "y": (0, 1.0, 0), "z": (0, 0, 1.0)}[axis]
    axis = _normalize(np.asarray(axis, float))
    half = np.asarray(angle, float)[..., None] / 2
    return np.concatenate([axis * np.sin(half), np.cos(half)], -1)


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a·b (apply b first), broadcast over leading axes."""
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], -1)


def continuous(q: np.ndarray) -> np.ndarray:
    """Flip quaternion signs so consecutive keys lie in the same hemisphere (LINEAR slerps the short way)."""
    q = q.copy()
    flips = np.cumsum(np.r_[False, np.einsum("ij,ij->i", q[1:], q[:-1]) < 0]) % 2 == 1
    q[flips] *= -1
    return q


def time_grid(period: float, min_duration: float = 1.0) -> np.ndarray:
    """Key times over a whole number of periods lasting at least ``min_duration`` s (so the clip loops)."""
    duration = period * math.ceil(min_duration / period - 1e-9)
    n = max(2, math.ceil(duration * KEYS_PER_SECOND))
    return np.linspace(0.0, duration, n + 1)


def cos_frequency(rng: np.random.Generator) -> float:
    """Frequency (Hz) for motions ∝ cos(2πft) that start at an extreme: with f in [1, 1.5] both cos(πf/2) and
    cos(πf) are ≤ 0, so the poses at 0.25 s and 0.5 s are at least one amplitude away from the start."""
    return float(rng.uniform(1.0, 1.5))


def sin_frequency(rng: np.random.Generator) -> float:
    """Frequency (Hz) for motions ∝ sin(2πft) that start at rest: f in [1.2, 1.6] keeps |sin| ≥ 0.58 at both
    0.25 s and 0.5 s."""
    return float(rng.uniform(1.2, 1.6))


def spin_rate(rng: np.random.Generator, symmetry: int) -> float:
    """Revolutions per second for a part with ``symmetry``-fold symmetry, so its image at 0.25 s and 0.5 s is
    not a symmetric copy of the one at 0 (a 3-bladed rotor turned by 120° looks unchanged)."""
    per_quarter = rng.uniform(0.28, 0.4) + rng.integers(0, 2)  # in units of one symmetry period
    return float(4 * per_quarter / symmetry)


# ================================================================================================================
# Skeletons
# ================================================================================================================


@dataclass
class Rig:
    """A joint hierarchy in rest pose (rest rotations are identity; joints differ only by translation)."""

    names: list[str] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)

    def add(self, name: str, parent: int, offset) -> int:
        self.names.append(name)
        self.parents.append(parent)
        self.offsets.append(np.asarray(offset, dtype=np.float64))
        return len(self.names) - 1

    def rest_positions(self) -> np.ndarray:
        out = np.zeros((len(self.names), 3))
        for j, (p, o) in enumerate(zip(self.parents, self.offsets)):
            out[j] = o + (out[p] if p >= 0 else 0)
        return out


@dataclass
class Motion:
    """Animated local rotations ([K, 4]) / translations ([K, 3]) of joints or nodes on a shared time grid."""

    times: np.ndarray
    rotations: dict[int, np.ndarray] = field(default_factory=dict)
    translations: dict[int, np.ndarray] = field(default_factory=dict)


# ================================================================================================================
# Scene assembly
# ================================================================================================================


class Scene:
    """A GLB under construction: one root node (heading + uniform scale), a material cache, animation channels."""

    def __init__(self, heading_deg: float, scale: float):
        self.builder = GlbBuilder()
        self.root = self.builder.add_node(name="asset", rotation=quat("y", math.radians(heading_deg)),
                                          scale=(scale, scale, scale))
        self.channels: list[Channel] = []
        self.top_level: list[int] = [self.root]
        self._materials: dict[tuple, int] = {}
        self._textured: set[int] = set()  # only these primitives need TEXCOORD_0

    def material(self, colour: str | None = None, *, texture: np.ndarray | None = None, metallic: float = 0.0,
                 roughness: float = 0.7, double_sided: bool = False) -> int:
        """A material of a palette colour (white when textured or vertex-coloured: ``colour`` None)."""
        key = (colour, None if texture is None else texture.tobytes(), metallic, roughness, double_sided)
        if key not in self._materials:
            tex = self.builder.add_texture(texture) if texture is not None else None
            rgb = linear(colour) if colour else np.ones(3)
            self._materials[key] = self.builder.add_material(
                rgb, metallic=metallic, roughness=roughness, texture=tex, double_sided=double_sided, name=colour)
            if tex is not None:
                self._textured.add(self._materials[key])
        return self._materials[key]

    def mesh(self, pieces: list[tuple[Part, int]], targets: list[list[Part]] | None = None,
             name: str | None = None) -> int:
        """A mesh with one primitive per (part, material); ``targets[i]`` are morph-target states of piece i
        (whole parts of the same topology, turned into displacements from the base)."""
        prims = []
        for i, (part, mat) in enumerate(pieces):
            morphs = []
            for state in (targets[i] if targets else []):
                morphs.append(MorphTarget(state.positions - part.positions, state.normals - part.normals))
            uvs = part.uvs if mat in self._textured else None
            prims.append(Primitive(part.positions, part.normals, part.indices, material=mat, colors=part.colors,
                                   uvs=uvs, joints=part.joints, weights=part.weights, targets=morphs))
        return self.builder.add_mesh(prims, name=name)

    def node(self, parent: int | None = None, **kw) -> int:
        n = self.builder.add_node(**kw)
        self.builder.attach(self.root if parent is None else parent, n)
        return n

    def skeleton(self, rig: Rig) -> tuple[list[int], int]:
        """Joint nodes for ``rig`` under the root, and a skin whose inverse bind matrices are relative to the root.

        The root's heading and scale then apply to the skinned mesh through the joints' world transforms, exactly
        as they apply to unskinned nodes.
        """
        nodes = []
        for name, parent, offset in zip(rig.names, rig.parents, rig.offsets):
            nodes.append(self.node(nodes[parent] if parent >= 0 else None, name=name, translation=offset))
        ibm = np.tile(np.eye(4), (len(nodes), 1, 1))
        ibm[:, :3, 3] = -rig.rest_positions()
        return nodes, self.builder.add_skin(nodes, ibm, skeleton=nodes[0])

    def animate(self, nodes: list[int], motion: Motion) -> None:
        for j, q in motion.rotations.items():
            self.channels.append(Channel(nodes[j], "rotation", motion.times, continuous(q)))
        for j, t in motion.translations.items():
            self.channels.append(Channel(nodes[j], "translation", motion.times, t))

    def skinned(self, rig: Rig, pieces: list[tuple[Part, int]], motion: Motion) -> None:
        joints, skin = self.skeleton(rig)
        # a skinned mesh's own node transform is ignored, so keep it a scene root (validators expect that)
        self.top_level.append(self.builder.add_node(name="skinned_mesh", mesh=self.mesh(pieces), skin=skin))
        self.animate(joints, motion)

    def finish(self) -> bytes:
        self.builder.add_animation(self.channels, name="motion")
        return self.builder.to_glb(self.top_level)


_SCALES = {"small": (0.25, 0.5), "medium": (0.8, 1.25), "large": (2.0, 4.0)}  # metres, roughly


def _size(rng: np.random.Generator) -> tuple[str, float]:
    """Overall scale of the file and the size word a caption may use for it."""
    word = str(rng.choice(list(_SCALES), p=[0.3, 0.4, 0.3]))
    return word, round(float(rng.uniform(*_SCALES[word])), 4)  # rounded, so attributes state it exactly


def _size_word(attrs: dict) -> str:
    return "" if attrs["size"] == "medium" else attrs["size"] + " "


def _side(heading_deg: float) -> str:
    """Which way a sideways creature faces as seen by the front camera (heading turns +Z towards +X = right)."""
    return "right" if heading_deg > 0 else "left"


def _sideways_heading(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A heading of ±[lo, hi] degrees, facing left or right.

    Long bodies keep away from 45°: normalisation uses the largest *axis* extent, so a body lying diagonally
    comes out up to √2 longer than the unit cube and pokes out of the orbit cameras' frames.
    """
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _choose(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


@dataclass
class Built:
    glb: bytes
    attributes: dict
    caption: str


# ================================================================================================================
# Families
# ================================================================================================================


def biped_walk(rng: np.random.Generator) -> Built:
    """A two-legged figure walking in place, seen from the side; skinned with rigid weights (one bone per part)."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 55, 90)
    kind = str(rng.choice(["robot", "humanoid"]))
    body, accent = pick_colours(rng, 2, _VIVID + ("grey", "white", "brown"))
    leg_len, torso_h = rng.uniform(0.38, 0.5), rng.uniform(0.3, 0.4)
    torso_w, torso_d = rng.uniform(0.22, 0.3), rng.uniform(0.13, 0.18)
    head_r, limb_r, arm_len = rng.uniform(0.08, 0.11), rng.uniform(0.035, 0.05), rng.uniform(0.3, 0.38)
    freq, amp = cos_frequency(rng), rng.uniform(0.45, 0.7)

    rig = Rig()
    hips = rig.add("hips", -1, (0, leg_len, 0))
    legs = [rig.add(f"leg_{s}", hips, (sx * torso_w / 4, 0, 0)) for s, sx in (("l", 1), ("r", -1))]
    shoulder_x = torso_w / 2 + limb_r
    arms = [rig.add(f"arm_{s}", hips, (sx * shoulder_x, torso_h - limb_r, 0)) for s, sx in (("l", 1), ("r", -1))]
    neck = rig.add("neck", hips, (0, torso_h, 0))
    rest = rig.rest_positions()

    main, second = [], []
    if kind == "robot":
        main.append(rigid(box((torso_w, torso_h, torso_d), (0, leg_len + torso_h / 2, 0)), hips))
        second.append(rigid(box((2 * head_r,) * 3, rest[neck] + (0, head_r + 0.02, 0)), neck))
    else:
        torso = ellipsoid((torso_w / 2, torso_h / 2 + 0.03, torso_d / 2))
        main.append(rigid(transformed(torso, translate=(0, leg_len + torso_h / 2, 0)), hips))
        second.append(rigid(transformed(ellipsoid((head_r,) * 3), translate=rest[neck] + (0, head_r + 0.015, 0)),
                            neck))
    for leg in legs:
        hip = rest[leg]
        main.append(rigid(limb(limb_r * 1.15, hip, (hip[0], 0.05, 0), top_radius=limb_r), leg))
        second.append(rigid(box((limb_r * 2.6, 0.05, limb_r * 4), (hip[0], 0.025, limb_r)), leg))
    for arm in arms:
        sh = rest[arm]
        main.append(rigid(limb(limb_r * 0.9, sh, sh - (0, arm_len, 0)), arm))
        second.append(rigid(transformed(ellipsoid((limb_r * 1.2,) * 3, 10, 6), translate=sh - (0, arm_len, 0)), arm))

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    swing = amp * np.cos(phase)  # starts with legs apart: the widest pose of the cycle
    bob = 0.025 * (1 + np.cos(2 * phase))  # hips dip twice a cycle, lowest when legs are apart
    motion = Motion(times)
    motion.rotations[legs[0]], motion.rotations[legs[1]] = quat("x", swing), quat("x", -swing)
    motion.rotations[arms[0]], motion.rotations[arms[1]] = quat("x", -0.8 * swing), quat("x", 0.8 * swing)
    motion.rotations[hips] = quat("y", 0.12 * swing)
    motion.rotations[neck] = quat("x", 0.06 * np.cos(2 * phase))
    motion.translations[hips] = np.stack([np.zeros_like(times), leg_len - bob, np.zeros_like(times)], 1)

    scene = Scene(heading, scale)
    scene.skinned(rig, [(merge(main), scene.material(body)), (merge(second), scene.material(accent))], motion)
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": body, "accent_color": accent, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    what = {"robot": "robot", "humanoid": "humanoid figure"}[kind]
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body)} {what} with {_a(accent)} head walks to the {attrs['facing']}",
        f"{_a(_size_word(attrs) + body)} two-legged {what} walking in place, facing {attrs['facing']}",
        f"{_a(_size_word(attrs) + body)} {what} strides along, swinging its arms and legs",
    ])
    return Built(scene.finish(), attrs, caption)


def quadruped_trot(rng: np.random.Generator) -> Built:
    """A four-legged creature trotting in place, seen from the side.

    Rigid weights for body, legs and head; a three-bone tail with smoothly blended weights wags behind.
    """
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 55, 90)
    body_c, accent = pick_colours(rng, 2, ("brown", "grey", "white", "black", "orange", "yellow", "red", "blue",
                                           "green", "purple", "pink", "teal"))
    length, half_w, half_h = rng.uniform(0.55, 0.85), rng.uniform(0.12, 0.18), rng.uniform(0.11, 0.16)
    leg_len, leg_r = rng.uniform(0.25, 0.45), rng.uniform(0.03, 0.045)
    neck = str(rng.choice(["short", "long"]))
    neck_len = rng.uniform(0.08, 0.14) if neck == "short" else rng.uniform(0.28, 0.4)
    tail_len = rng.uniform(0.2, 0.32)
    freq, amp = cos_frequency(rng), rng.uniform(0.4, 0.6)

    body_y = leg_len + 0.6 * half_h
    rig = Rig()
    root = rig.add("body", -1, (0, body_y, 0))
    leg_spots = {"fl": (1, 1), "fr": (-1, 1), "bl": (1, -1), "br": (-1, -1)}
    legs = {k: rig.add(f"leg_{k}", root, (sx * 0.6 * half_w, -0.5 * half_h, sz * 0.33 * length))
            for k, (sx, sz) in leg_spots.items()}
    neck_dir = _normalize(np.array([0.0, 0.8, 0.6]) if neck == "long" else np.array([0.0, 0.5, 0.87]))
    neck_j = rig.add("neck", root, (0, 0.3 * half_h, 0.42 * length))
    tail_seg = tail_len / 3
    tail = [rig.add("tail0", root, (0, 0.35 * half_h, -0.48 * length))]
    tail_dir = _normalize(np.array([0.0, 0.35, -1.0]))
    for k in (1, 2):
        tail.append(rig.add(f"tail{k}", tail[-1], tail_dir * tail_seg))
    rest = rig.rest_positions()

    main = [rigid(transformed(ellipsoid((half_w, half_h, length / 2), 18, 10, axis="z"), translate=rest[root]), root)]
    for k, j in legs.items():
        top = rest[j]
        main.append(rigid(limb(leg_r, top + (0, 0.05, 0), (top[0], 0.0, top[2]), top_radius=leg_r * 1.3), j))
    head_at = rest[neck_j] + neck_dir * neck_len
    main.append(rigid(limb(min(half_w, half_h) * 0.45, rest[neck_j], head_at, top_radius=min(half_w, half_h) * 0.35),
                      neck_j))
    head_r = rng.uniform(0.07, 0.09)
    main.append(rigid(transformed(ellipsoid((head_r * 0.85, head_r * 0.85, head_r * 1.3), 14, 8),
                                  translate=head_at + (0, 0, 0.5 * head_r)), neck_j))
    extra = []
    for sx in (1, -1):  # ears
        extra.append(rigid(segment(cone(0.025, 1.0, 10), head_at + (sx * 0.5 * head_r, 0.6 * head_r, 0),
                                   head_at + (sx * 0.9 * head_r, 1.6 * head_r, -0.2 * head_r)), neck_j))
    # the tail is one tapered tube bent by three bones; blend weights along its length
    tube = segment(cylinder(0.035, 1.0, 10, rings=12, top_radius=0.01), rest[tail[0]], rest[tail[0]] + tail_dir *
                   tail_len)
    along = (tube.positions - rest[tail[0]]) @ tail_dir
    extra.append(chain_bound(tube, along, [0.0, tail_seg, 2 * tail_seg], tail, blend=0.03))

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    swing = amp * np.cos(phase)
    motion = Motion(times)
    for k, j in legs.items():  # a trot moves diagonal pairs together
        motion.rotations[j] = quat("x", swing if k in ("fl", "br") else -swing)
    motion.translations[root] = np.stack([0 * times, body_y - 0.02 * (1 + np.cos(2 * phase)), 0 * times], 1)
    motion.rotations[neck_j] = quat("x", 0.12 * np.cos(2 * phase))
    for k, j in enumerate(tail):
        motion.rotations[j] = quat("y", 0.45 * np.sin(phase - 0.7 * k))

    scene = Scene(heading, scale)
    scene.skinned(rig, [(merge(main), scene.material(body_c)), (merge(extra), scene.material(accent))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "accent_color": accent, "neck": neck, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    neck_phrase = " with a long neck" if neck == "long" else ""
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} four-legged creature{neck_phrase} trots to the {attrs['facing']}",
        f"{_a(_size_word(attrs) + body_c)} quadruped{neck_phrase} trotting in place, wagging its {accent} tail",
        f"{_a(_size_word(attrs) + body_c)} four-legged animal{neck_phrase} trots, facing {attrs['facing']}",
    ])
    return Built(scene.finish(), attrs, caption)


def bird_flap(rng: np.random.Generator) -> Built:
    """A bird facing the camera and flapping; each wing is a two-bone chain with smoothly blended weights."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-35, 35))
    body_c, wing_c, beak_c = pick_colours(rng, 3, ("red", "blue", "yellow", "green", "teal", "purple", "pink",
                                                   "grey", "white", "brown", "black", "orange"))
    bw, bh, bl = rng.uniform(0.09, 0.12), rng.uniform(0.09, 0.12), rng.uniform(0.16, 0.22)
    span, chord = rng.uniform(0.35, 0.5), rng.uniform(0.14, 0.2)
    fast = bool(rng.random() < 0.35)
    freq = float(rng.uniform(2.3, 2.7)) if fast else sin_frequency(rng)
    amp, bias = rng.uniform(0.6, 0.85), rng.uniform(0.05, 0.2)

    rig = Rig()
    root = rig.add("body", -1, (0, 0, 0))
    shoulder_x = 0.6 * bw
    wings, tips = [], []
    for s, sx in (("l", 1), ("r", -1)):
        wings.append(rig.add(f"wing_{s}", root, (sx * shoulder_x, 0.3 * bh, 0)))
        tips.append(rig.add(f"wing_{s}_tip", wings[-1], (sx * span / 2, 0, 0)))

    body = [rigid(ellipsoid((bw, bh, bl), 16, 10, axis="z"), root)]
    head_r = rng.uniform(0.06, 0.08)
    head_at = np.array([0, 0.8 * bh, 0.85 * bl])
    body.append(rigid(transformed(ellipsoid((head_r,) * 3, 14, 8), translate=head_at), root))
    body.append(rigid(transformed(ellipsoid((0.6 * bw, 0.02, 0.5 * bl), 10, 6), linear_map=rot("x", -0.3),
                                  translate=(0, 0.1 * bh, -1.3 * bl)), root))  # tail fan
    beak = [rigid(segment(cone(0.025, 1.0, 10), head_at + (0, 0, 0.8 * head_r), head_at + (0, -0.01, 2.0 * head_r)),
                  root)]
    eye = ellipsoid((0.012,) * 3, 8, 5)
    eyes = [rigid(transformed(eye, translate=head_at + (sx * 0.8 * head_r, 0.3 * head_r, 0.45 * head_r)), root)
            for sx in (1, -1)]
    wing_parts = []
    for w, t, sx in zip(wings, tips, (1, -1)):
        shape = ellipsoid((span / 2, 0.018, chord / 2), 12, 16, axis="x")
        part = transformed(shape, translate=(sx * (shoulder_x + span / 2 - 0.02), 0.3 * bh, -0.01))
        along = sx * part.positions[:, 0]  # distance from the body's mid-plane, outwards
        wing_parts.append(chain_bound(part, along, [0.0, shoulder_x + 0.02, shoulder_x + span / 2], [root, w, t],
                                      blend=0.03))

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    flap = bias + amp * np.sin(phase)
    tip = 0.5 * amp * np.sin(phase - 0.6)  # the outer wing lags, curling the wing on each stroke
    motion = Motion(times)
    for w, t, sx in zip(wings, tips, (1, -1)):
        motion.rotations[w] = quat("z", sx * flap)
        motion.rotations[t] = quat("z", sx * tip)
    motion.translations[root] = np.stack([0 * times, -0.04 * np.sin(phase), 0 * times], 1)

    scene = Scene(heading, scale)
    scene.skinned(rig, [(merge(body), scene.material(body_c)), (merge(wing_parts), scene.material(wing_c)),
                        (merge(beak), scene.material(beak_c)), (merge(eyes), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "wing_color": wing_c, "beak_color": beak_c, "speed": "fast" if fast else
             "slow", "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    how = "rapidly" if fast else "slowly"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} bird with {wing_c} wings flaps them {how}",
        f"{_a(_size_word(attrs) + body_c)} bird {how} beats its {wing_c} wings up and down",
        f"{_a(_size_word(attrs) + body_c)} bird with {_a(beak_c)} beak flapping its wings",
    ])
    return Built(scene.finish(), attrs, caption)


def _body_chain(part: Part, root_z: float, tail_z: float, bones: int, rig: Rig, blend: float):
    """Spine bones from ``root_z`` back to ``tail_z`` along −Z; returns (joint ids, their z, part bound to them)."""
    zs = np.linspace(root_z, tail_z, bones)
    joints = [rig.add("spine0", -1, (0, 0, zs[0]))]
    for k in range(1, bones):
        joints.append(rig.add(f"spine{k}", joints[-1], (0, 0, zs[k] - zs[k - 1])))
    bound = chain_bound(part, -part.positions[:, 2], -zs, joints, blend)
    return joints, zs, bound


def fish_swim(rng: np.random.Generator) -> Built:
    """A fish (side-to-side tail beat, seen at an angle) or a dolphin-like swimmer (up-and-down, seen from the side).

    One spine of five bones with blended weights carries a travelling wave; the body is vertex-coloured with a
    lighter belly.
    """
    size, scale = _size(rng)
    style = str(rng.choice(["fish", "dolphin"]))
    heading = _sideways_heading(rng, 60, 72) if style == "fish" else _sideways_heading(rng, 75, 90)
    body_c, fin_c = pick_colours(rng, 2, ("orange", "yellow", "red", "blue", "teal", "purple", "pink", "grey",
                                          "green") if style == "fish" else ("grey", "blue", "teal", "black", "pink",
                                                                            "purple"))
    length = rng.uniform(0.6, 0.85)
    if style == "fish":
        rx, ry = rng.uniform(0.05, 0.08), rng.uniform(0.12, 0.18)
    else:
        rx = ry = rng.uniform(0.08, 0.11)
    freq, amp = float(rng.uniform(1.0, 1.5)), rng.uniform(0.22, 0.32)
    axis = "y" if style == "fish" else "x"

    rig = Rig()
    body = ellipsoid((rx, ry, length / 2), 18, 24, axis="z")
    belly = np.clip(-body.positions[:, 1] / ry * 1.5 + 0.3, 0, 1)[:, None]
    body = coloured(body, (1 - belly) * linear(body_c) + belly * linear("white"))
    joints, zs, body = _body_chain(body, 0.2 * length, -0.62 * length, 5, rig, blend=0.05)
    tail_j = joints[-1]

    fins = []
    tail_at = np.array([0, 0, -0.5 * length + 0.02])
    for sign in (1, -1):  # a forked tail fin: vertical for fish, horizontal flukes for dolphins
        lobe = ellipsoid((0.012, 0.11, 0.05) if style == "fish" else (0.11, 0.012, 0.05), 10, 6)
        tilt = rot("x", sign * 0.7) if style == "fish" else rot("y", sign * 0.7)
        direction = (0, sign * 0.07, -0.06) if style == "fish" else (sign * 0.07, 0, -0.06)
        fins.append(rigid(transformed(lobe, linear_map=tilt, translate=tail_at + direction), tail_j))
    dorsal = ellipsoid((0.01, 0.06, 0.09), 10, 6)
    fin = transformed(dorsal, linear_map=rot("x", -0.5), translate=(0, ry * 0.95, 0.0))
    fins.append(chain_bound(fin, -fin.positions[:, 2], -zs, joints, 0.05))
    for sx in (1, -1):  # pectoral fins
        pect = transformed(ellipsoid((0.05, 0.008, 0.025), 8, 5), linear_map=rot("z", sx * 0.5),
                           translate=(sx * rx, -0.3 * ry, 0.15 * length))
        fins.append(rigid(pect, joints[0]))
    eyes = [rigid(transformed(ellipsoid((0.018,) * 3, 8, 5), translate=(sx * rx * 0.75, 0.25 * ry, 0.36 * length)),
                  joints[0]) for sx in (1, -1)]

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    motion = Motion(times)
    for k, j in enumerate(joints):
        weight = 0.25 + 0.75 * k / (len(joints) - 1)  # the wave grows towards the tail
        angle = amp * weight * np.sin(phase - 1.0 * k) if k else -0.3 * amp * np.sin(phase + 0.5)
        motion.rotations[j] = quat(axis, angle)
    bob = 0.015 * np.sin(phase)
    motion.translations[joints[0]] = np.stack([0 * times, bob, 0 * times + zs[0]], 1)

    scene = Scene(heading, scale)
    scene.skinned(rig, [(body, scene.material(None)), (merge(fins), scene.material(fin_c)),
                        (merge(eyes), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "style": style, "color": body_c, "fin_color": fin_c, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    if style == "fish":
        caption = _choose(rng, [
            f"{_a(_size_word(attrs) + body_c)} fish with {fin_c} fins swims, swishing its tail from side to side",
            f"{_a(_size_word(attrs) + body_c)} fish swimming in place, its body rippling",
            f"{_a(_size_word(attrs) + body_c)} fish beats its {fin_c} tail fin",
        ])
    else:
        caption = _choose(rng, [
            f"{_a(_size_word(attrs) + body_c)} dolphin-like creature swims, beating its tail up and down",
            f"{_a(_size_word(attrs) + body_c)} dolphin swimming to the {attrs['facing']} with undulating strokes",
        ])
    return Built(scene.finish(), attrs, caption)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` [..., 3] by unit quaternions ``q`` [..., 4]."""
    u, w = q[..., :3], q[..., 3:]
    t = 2 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def quat_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest-arc unit quaternions turning directions ``a`` [..., 3] onto ``b`` [..., 3] (not opposite)."""
    a, b = _normalize(a), _normalize(b)
    q = np.concatenate([np.cross(a, b), 1 + np.sum(a * b, -1, keepdims=True)], -1)
    return _normalize(q)


def stabilised_root(local: np.ndarray, offsets: np.ndarray, root_rest) -> tuple[np.ndarray, np.ndarray]:
    """Root rotation [K, 4] and translation [K, 3] that keep a bending chain in place.

    A wave of bends along a chain rooted at one end would otherwise swing the whole body about that end. We turn
    the root so the chain's overall axis (front half → back half) keeps its rest direction, slide it so the
    joints' horizontal centroid stays put, and lift it so the lowest joint stays at its rest height.

    ``local``: the joints' animated local rotations [K, n, 4] (joint 0 is the root); ``offsets``: rest offsets
    of joints 1 … n−1 from their parent [n, 3] (row 0 unused).
    """
    k, n = local.shape[:2]

    def joint_positions(root_q):
        pos = np.zeros((k, n, 3))
        r = root_q
        for j in range(1, n):
            pos[:, j] = pos[:, j - 1] + qrot(r, np.broadcast_to(offsets[j], (k, 3)))
            r = qmul(r, local[:, j])
        return pos

    def axis(pos):
        return pos[:, n // 2:].mean(1) - pos[:, : n // 2].mean(1)

    rest = np.concatenate([np.zeros((1, 3)), np.cumsum(offsets[1:], 0)])
    rest_axis = rest[n // 2:].mean(0) - rest[: n // 2].mean(0)
    bent = joint_positions(local[:, 0])
    root_q = qmul(quat_between(axis(bent), np.broadcast_to(rest_axis, (k, 3))), local[:, 0])
    pos = joint_positions(root_q)
    shift = rest.mean(0) - pos.mean(1)
    shift[:, 1] = rest[:, 1].min() - pos[..., 1].min(1)
    return root_q, np.asarray(root_rest, float) + shift


def _chain_motion(joints: list[int], local: np.ndarray, rig: Rig, motion: Motion) -> None:
    """Animate a spine chain with local rotations [K, n, 4], its root stabilised (see ``stabilised_root``)."""
    offsets = np.stack([rig.offsets[j] for j in joints])
    root_q, root_t = stabilised_root(local, offsets, rig.offsets[joints[0]])
    motion.rotations[joints[0]] = root_q
    motion.translations[joints[0]] = root_t
    for i, j in enumerate(joints[1:], 1):
        motion.rotations[j] = local[:, i]


def snake_slither(rng: np.random.Generator) -> Built:
    """A banded snake slithering (a travelling sideways wave along eight blended bones), seen at an angle."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 60, 75)
    body_c, band_c = pick_colours(rng, 2, ("green", "yellow", "red", "black", "brown", "orange", "teal", "grey",
                                           "white", "purple"))
    length, radius = rng.uniform(1.0, 1.4), rng.uniform(0.035, 0.055)
    bands = int(rng.integers(5, 10))
    freq, amp = float(rng.uniform(1.0, 1.5)), rng.uniform(0.28, 0.4)
    bones = 8

    s = np.linspace(0.0, 1.0, 48)  # 0 = tail tip, 1 = snout
    profile = radius * (0.12 + 0.88 * np.clip(s / 0.35, 0, 1) ** 0.6) * np.where(s > 0.9, 1 + 0.4 * np.sin(
        np.pi * (s - 0.9) / 0.1 * 0.9), 1.0)
    profile[-1] = 0.0  # close the snout
    tube = lathe(profile, (s - 0.5) * length, segments=14, caps=True)
    tube = transformed(tube, linear_map=_AXIS_FROM_Y["z"], translate=(0, radius, 0))
    t_along = tube.positions[:, 2] / length + 0.5
    band = 0.5 + 0.5 * np.tanh(6 * np.sin(2 * np.pi * bands * t_along))  # crisp-ish bands, smooth at the seams
    tube = coloured(tube, band[:, None] * linear(band_c) + (1 - band[:, None]) * linear(body_c))

    rig = Rig()
    head_z = 0.42 * length
    spacing = (0.42 + 0.48) * length / (bones - 1)
    joints, zs, tube = _body_chain(tube, head_z, head_z - spacing * (bones - 1), bones, rig, blend=0.04)
    eyes = [rigid(transformed(ellipsoid((0.012,) * 3, 8, 5), translate=(sx * radius * 0.9, radius * 1.5,
                                                                        0.47 * length)), joints[0]) for sx in (1, -1)]

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    k = np.arange(bones)[None, :]
    # sidewinding: a sideways wave plus a lifting wave a quarter period behind it, so the motion shows from the
    # side as well as from above
    yaw = amp * np.sin(phase[:, None] - 0.9 * k) * np.where(k == 0, 0.4, 1.0)
    lift = 0.55 * amp * np.cos(phase[:, None] - 0.9 * k) * np.where(k == 0, 0.0, 1.0)
    local = qmul(quat("y", yaw), quat("x", lift))
    motion = Motion(times)
    _chain_motion(joints, local, rig, motion)
    scene = Scene(heading, scale)
    scene.skinned(rig, [(tube, scene.material(None)), (merge(eyes), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "band_color": band_c, "bands": bands, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} snake with {band_c} bands slithers",
        f"{_a(_size_word(attrs) + body_c)} and {band_c} striped snake wriggles from side to side",
        f"{_a(_size_word(attrs) + body_c)} snake slithering in an S-shaped wave",
    ])
    return Built(scene.finish(), attrs, caption)


def caterpillar_crawl(rng: np.random.Generator) -> Built:
    """A segmented caterpillar crawling with humps that travel along it, seen from the side; vertex-coloured
    segments on a six-bone blended chain."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 70, 90)
    body_c, stripe_c = pick_colours(rng, 2, ("green", "yellow", "orange", "red", "blue", "purple", "pink", "teal",
                                             "brown", "black", "white"))
    segs, seg_len, r0 = int(rng.integers(6, 10)), rng.uniform(0.09, 0.11), rng.uniform(0.05, 0.065)
    length = segs * seg_len
    freq, amp = float(rng.uniform(1.0, 1.4)), rng.uniform(0.25, 0.35)
    bones = 6

    s = np.linspace(0, 1, 6 * segs + 1)  # 0 = tail, 1 = front
    bumps = 0.82 + 0.18 * np.abs(np.sin(np.pi * segs * s))
    profile = r0 * bumps * np.sqrt(np.clip(1 - (2 * s - 1) ** 8, 0, 1))
    tube = lathe(profile, (s - 0.5) * length, segments=14, caps=False)
    tube = transformed(tube, linear_map=_AXIS_FROM_Y["z"], translate=(0, r0 * 1.2, 0))
    along = tube.positions[:, 2] / length + 0.5
    stripe = (0.5 + 0.5 * np.tanh(5 * np.cos(np.pi * segs * along)))[:, None]
    tube = coloured(tube, stripe * linear(stripe_c) + (1 - stripe) * linear(body_c))

    rig = Rig()
    front_z = 0.4 * length
    spacing = 0.85 * length / (bones - 1)
    joints, zs, tube = _body_chain(tube, front_z, front_z - spacing * (bones - 1), bones, rig, blend=0.05)
    head_r = r0 * 1.3
    head_at = np.array([0, r0 * 1.2 + 0.3 * r0, 0.5 * length + 0.6 * head_r])
    head = [rigid(transformed(ellipsoid((head_r,) * 3, 14, 8), translate=head_at), joints[0])]
    head_extra = [rigid(limb(0.008, head_at + (sx * 0.4 * head_r, 0.7 * head_r, 0),
                             head_at + (sx * 0.8 * head_r, 2.2 * head_r, 0.5 * head_r), segments=6), joints[0])
                  for sx in (1, -1)]
    head_extra += [rigid(transformed(ellipsoid((0.013,) * 3, 8, 5),
                                     translate=head_at + (sx * 0.55 * head_r, 0.35 * head_r, 0.72 * head_r)),
                         joints[0]) for sx in (1, -1)]
    legs = []
    for z in np.linspace(-0.42 * length, 0.42 * length, segs):
        for sx in (1, -1):
            leg = segment(cone(0.018, 1.0, 8), (sx * 0.6 * r0, r0 * 0.7, z), (sx * 0.7 * r0, 0.0, z))
            legs.append(leg)
    legs = merge(legs)
    legs = chain_bound(legs, -legs.positions[:, 2], -zs, joints, 0.05)

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    k = np.arange(bones)[None, :]
    angles = amp * np.sin(phase[:, None] + 1.1 * k)  # humps run from tail to head
    motion = Motion(times)
    _chain_motion(joints, quat("x", angles), rig, motion)
    scene = Scene(heading, scale)
    scene.skinned(rig, [(tube, scene.material(None)), (merge(head), scene.material(body_c)),
                        (merge(head_extra + [legs]), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "stripe_color": stripe_c, "segments": segs, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} caterpillar with {stripe_c} stripes crawls to the {attrs['facing']}",
        f"{_a(_size_word(attrs) + body_c)} and {stripe_c} caterpillar inches along, humping its back",
        f"{_a(_size_word(attrs) + body_c)} segmented caterpillar crawling with a rippling body",
    ])
    return Built(scene.finish(), attrs, caption)


def _reach_curve(times: np.ndarray, freq: float) -> np.ndarray:
    """0 → 1 → 0 once per period, easing at both ends: how far through a reach / an opening the motion is."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * freq * times)


def robot_arm(rng: np.random.Generator) -> Built:
    """An articulated robot arm on a base (a node hierarchy animated by TRS): it reaches out to one side, pulls in
    and reaches again, or leans towards the viewer sweeping left and right; the gripper closes as it reaches."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-20, 20))
    arm_c, joint_c = pick_colours(rng, 2, ("orange", "yellow", "red", "blue", "green", "white", "teal", "purple"))
    plate_c = str(rng.choice(["grey", "black", "white"]))
    motion_kind = str(rng.choice(["left", "right", "sweep"]))
    l1, l2, w = rng.uniform(0.32, 0.42), rng.uniform(0.28, 0.38), rng.uniform(0.09, 0.12)
    freq = sin_frequency(rng) if motion_kind == "sweep" else cos_frequency(rng)
    reach = l1 + l2 + 0.12
    plate = 0.45 * reach

    scene = Scene(heading, scale)
    arm_m, joint_m, plate_m = scene.material(arm_c, roughness=0.5), scene.material(joint_c), scene.material(plate_c)
    scene.node(name="platform", mesh=scene.mesh([(box((2 * plate, 0.04, 2 * plate), (0, 0.02, 0)), plate_m),
                                                 (cylinder(0.1, 0.12, 20), joint_m)]),
               translation=(0, 0, 0))
    base_y = 0.04 + 0.12
    turret = scene.node(name="turret", translation=(0, base_y, 0),
                        mesh=scene.mesh([(cylinder(0.085, 0.06, 20), arm_m)]))
    shoulder = scene.node(turret, name="shoulder", translation=(0, 0.08, 0),
                          mesh=scene.mesh([(merge([transformed(ellipsoid((w * 0.9,) * 3, 14, 8)),
                                                   box((w, l1, w), (0, l1 / 2, 0))]), arm_m)]))
    elbow = scene.node(shoulder, name="elbow", translation=(0, l1, 0),
                       mesh=scene.mesh([(transformed(ellipsoid((w * 0.8,) * 3, 14, 8)), joint_m),
                                        (box((w * 0.8, l2, w * 0.8), (0, l2 / 2, 0)), arm_m)]))
    wrist = scene.node(elbow, name="wrist", translation=(0, l2, 0),
                       mesh=scene.mesh([(merge([transformed(ellipsoid((w * 0.6,) * 3, 12, 6)),
                                                box((0.14, 0.03, w * 0.8), (0, 0.03, 0))]), joint_m)]))
    finger_shape = box((0.02, 0.08, w * 0.7), (0, 0.085, 0))
    fingers = [scene.node(wrist, name=f"finger_{i}", translation=(sx * 0.05, 0, 0),
                          mesh=scene.mesh([(finger_shape, arm_m)])) for i, sx in enumerate((1, -1))]

    times = time_grid(1 / freq)
    motion = Motion(times)
    # Both motions start where the arm sticks out furthest, so the bounds at t = 0 already hold the whole motion.
    if motion_kind == "sweep":  # bent forward towards the viewer, turning left and right about its base
        yaw = rng.uniform(0.5, 0.7) * np.sin(2 * np.pi * freq * times)
        out = 0.5 + 0.5 * np.cos(4 * np.pi * freq * times)  # furthest out when facing the viewer
        sh, el, wr = 0.6 + 0.2 * out, 0.7 - 0.2 * out, 0.5 + 0 * out
    else:  # reaching out sideways, pulling back in towards upright, reaching out again
        yaw = np.full_like(times, math.pi / 2 if motion_kind == "right" else -math.pi / 2)
        out = 1 - _reach_curve(times, freq)
        sh, el, wr = 0.95 * out, 1.1 - 0.6 * out, 0.6 - 0.3 * out
    motion.rotations[0] = quat("y", yaw)
    motion.rotations[1], motion.rotations[2], motion.rotations[3] = quat("x", sh), quat("x", el), quat("x", wr)
    grip = 0.05 - 0.025 * out ** 2  # the gripper closes as the arm reaches out
    for i, sx in enumerate((1, -1)):
        motion.translations[4 + i] = np.stack([sx * grip, 0 * times, 0 * times], 1)
    scene.animate([turret, shoulder, elbow, wrist, *fingers], motion)

    attrs = {"size": size, "scale": scale,
             "color": arm_c, "joint_color": joint_c, "platform_color": plate_c, "motion": motion_kind,
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3)}
    arm = f"{_a(_size_word(attrs) + arm_c)} robot arm"
    if motion_kind == "sweep":
        caption = _choose(rng, [f"{arm} sweeps from side to side above {_a(plate_c)} base",
                                f"{arm} with {joint_c} joints swings left and right, opening and closing its gripper"])
    else:
        caption = _choose(rng, [f"{arm} reaches to the {motion_kind}",
                                f"{arm} on {_a(plate_c)} base reaches out to the {motion_kind}, pulls back and "
                                f"reaches again",
                                f"{arm} with {joint_c} joints reaches to the {motion_kind} and grips"])
    return Built(scene.finish(), attrs, caption)


def spinning_top(rng: np.random.Generator) -> Built:
    """A vertex-coloured spinning top that spins about its axis while the tilted axis precesses (node TRS)."""
    size, scale = _size(rng)
    c1, c2, c3 = pick_colours(rng, 3, _VIVID + ("white", "black"))
    radius, waist = rng.uniform(0.3, 0.42), rng.uniform(0.22, 0.35)
    handle = rng.uniform(0.15, 0.3)
    sectors = int(rng.choice([2, 3, 4]))
    spin = spin_rate(rng, sectors)
    precession = float(rng.uniform(0.8, 1.2))
    tilt = math.radians(rng.uniform(6, 10))

    profile_r = [0.0, 0.03, 0.6 * radius, radius, 0.95 * radius, 0.55 * radius, 0.05, 0.035, 0.035, 0.045, 0.0]
    profile_y = [0.0, 0.015, 0.55 * waist, waist, waist + 0.04, waist + 0.1, waist + 0.13, waist + 0.135,
                 waist + 0.13 + handle, waist + 0.14 + handle, waist + 0.15 + handle]
    body = lathe(profile_r, profile_y, segments=48, caps=False)
    phi = np.arctan2(body.positions[:, 0], body.positions[:, 2])
    stripe = (0.5 + 0.5 * np.tanh(8 * np.sin(sectors * phi)))[:, None]  # `sectors` pairs of coloured wedges
    band = np.abs(body.positions[:, 1] - waist) < 0.035
    colors = stripe * linear(c1) + (1 - stripe) * linear(c2)
    colors[band] = linear(c3)
    body = coloured(body, colors)

    scene = Scene(0.0, scale)
    wobble = scene.node(name="precession")
    spinner = scene.node(wobble, name="spin", mesh=scene.mesh([(body, scene.material(None, roughness=0.4))]))
    times = time_grid(1.0 / precession)
    motion = Motion(times)
    psi = 2 * np.pi * precession * times
    motion.rotations[0] = qmul(quat("y", psi), quat("x", np.full_like(times, tilt)))
    motion.rotations[1] = quat("y", 2 * np.pi * spin * times - psi)  # spin relative to the precessing frame
    scene.animate([wobble, spinner], motion)
    attrs = {"size": size, "scale": scale,
             "colors": [c1, c2], "band_color": c3, "sectors": sectors, "spin_rev_per_s": round(spin, 3),
             "precession_hz": round(precession, 3), "tilt_deg": round(math.degrees(tilt), 2)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + c1)} and {c2} spinning top spins and wobbles",
        f"a spinning top with {c1} and {c2} stripes and {_a(c3)} band twirls on its tip",
        f"{_a(_size_word(attrs) + 'striped')} top in {c1} and {c2} spins, its axis slowly circling",
    ])
    return Built(scene.finish(), attrs, caption)


def door_swing(rng: np.random.Generator) -> Built:
    """A textured plank door in its frame swinging open and shut about its hinges (node rotation)."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-25, 25))
    door_c, frame_c, knob_c = pick_colours(rng, 3, ("brown", "red", "green", "blue", "white", "yellow", "grey",
                                                    "teal", "black", "orange", "purple"))
    width, height = rng.uniform(0.45, 0.6), rng.uniform(0.95, 1.15)
    hinge_side = str(rng.choice(["left", "right"]))
    towards = bool(rng.random() < 0.5)
    freq, max_open = cos_frequency(rng), math.radians(rng.uniform(70, 100))
    thick, post = 0.04, 0.07

    scene = Scene(heading, scale)
    frame = merge([box((post, height + post, 0.1), (sx * (width / 2 + post / 2), (height + post) / 2, 0))
                   for sx in (1, -1)] + [box((width + 2 * post, post, 0.1), (0, height + post / 2, 0)),
                                         box((width + 2 * post, 0.02, 0.14), (0, 0.01, 0))])
    scene.node(name="frame", mesh=scene.mesh([(frame, scene.material(frame_c))]))
    sx = -1.0 if hinge_side == "left" else 1.0  # the hinge's x; the door extends from it to the other side
    texture = planks_texture(door_c, int(rng.integers(4, 7)), rng, vertical=True)
    panel = transformed(box((width - 0.01, height - 0.02, thick)), translate=(-sx * width / 2, height / 2, 0))
    knob = ellipsoid((0.03,) * 3, 10, 6)
    knobs = merge([transformed(knob, translate=(-sx * (width - 0.08), height * 0.48, sz * (thick / 2 + 0.03)))
                   for sz in (1, -1)])
    door_mesh = scene.mesh([(panel, scene.material(None, texture=texture)),
                            (knobs, scene.material(knob_c, metallic=0.6, roughness=0.3))])
    hinge = scene.node(name="door", translation=(sx * width / 2, 0.01, 0), mesh=door_mesh)
    times = time_grid(1 / freq)
    # rotating about +Y by +θ swings +X towards −Z: pick the sign that opens towards the viewer when asked
    direction = sx * (1.0 if towards else -1.0)
    motion = Motion(times, rotations={0: quat("y", direction * max_open * _reach_curve(times, freq))})
    scene.animate([hinge], motion)
    attrs = {"size": size, "scale": scale,
             "color": door_c, "frame_color": frame_c, "knob_color": knob_c, "hinge": hinge_side,
             "opens": "towards viewer" if towards else "away", "max_open_deg": round(math.degrees(max_open), 1),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3)}
    where = "towards us" if towards else "away from us"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + door_c)} wooden door swings open {where} and closes again",
        f"{_a(door_c)} plank door in {_a(frame_c)} frame opens and shuts on its {hinge_side} hinges",
        f"{_a(_size_word(attrs) + door_c)} door with {_a(knob_c)} knob swings open {where}",
    ])
    return Built(scene.finish(), attrs, caption)


def chest_lid(rng: np.random.Generator) -> Built:
    """A chest, box or laptop whose lid swings closed and open again about a hinge at the back (node rotation).

    It starts open: the open lid then spans the motion, so the asset stays inside its normalised bounds.
    """
    size, scale = _size(rng)
    heading = float(rng.uniform(-40, 40))
    kind = str(rng.choice(["chest", "box", "laptop"]))
    freq = cos_frequency(rng)
    scene = Scene(heading, scale)
    if kind == "laptop":
        body_c = str(rng.choice(["grey", "black", "white", "blue", "pink"]))
        accent = "black" if body_c != "black" else "grey"
        width, depth, base_h, lid_t = rng.uniform(0.9, 1.1), rng.uniform(0.6, 0.7), 0.04, 0.025
        open_max, open_min = math.radians(rng.uniform(100, 115)), math.radians(rng.uniform(5, 20))
        body_m, lid_m = scene.material(body_c, metallic=0.5, roughness=0.35), scene.material(body_c, metallic=0.5,
                                                                                                roughness=0.35)
        base = [(box((width, base_h, depth), (0, base_h / 2, 0)), body_m),
                (box((width * 0.85, 0.004, depth * 0.45), (0, base_h + 0.002, 0.05 * depth)), scene.material(accent))]
        lid = [(box((width, lid_t, depth), (0, lid_t / 2, depth / 2)), lid_m),
               (box((width * 0.9, 0.004, depth * 0.85), (0, -0.002, depth / 2)), scene.material(accent))]
        texture_used = False
    else:
        body_c = str(rng.choice(["brown", "red", "blue", "green", "yellow", "purple", "teal", "orange"]))
        accent = str(rng.choice(["yellow", "black", "grey"] if body_c != "yellow" else ["black", "grey", "brown"]))
        width, depth = rng.uniform(0.8, 1.0), rng.uniform(0.45, 0.6)
        base_h, lid_t = rng.uniform(0.35, 0.5), rng.uniform(0.06, 0.1)
        open_max, open_min = math.radians(rng.uniform(95, 110)), 0.0
        texture_used = kind == "chest"
        body_m = scene.material(None, texture=planks_texture(body_c, int(rng.integers(3, 6)), rng, vertical=False)) \
            if texture_used else scene.material(body_c)
        base = [(box((width, base_h, depth), (0, base_h / 2, 0)), body_m),
                (box((0.1, 0.12, 0.03), (0, base_h - 0.06, depth / 2 + 0.015)), scene.material(accent, metallic=0.6))]
        lid = [(box((width, lid_t, depth), (0, lid_t / 2, depth / 2)), body_m)]
    scene.node(name="base", mesh=scene.mesh(base), translation=(0, 0, 0))
    hinge = scene.node(name="lid", mesh=scene.mesh(lid), translation=(0, base_h, -depth / 2))
    times = time_grid(1 / freq)
    opening = open_min + (open_max - open_min) * (1 - _reach_curve(times, freq))  # open → shut → open
    # rotating about +X by −θ lifts the lid's front edge (+Z) upwards
    scene.animate([hinge], Motion(times, rotations={0: quat("x", -opening)}))
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": body_c, "accent_color": accent, "textured": texture_used,
             "max_open_deg": round(math.degrees(open_max), 1), "heading_deg": round(heading, 2),
             "frequency_hz": round(freq, 3)}
    thing = {"chest": "wooden treasure chest", "box": "box", "laptop": "laptop"}[kind]
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} {thing} closes its lid and opens it again",
        f"{_a(_size_word(attrs) + body_c)} {thing} whose lid flaps shut and open",
        f"the lid of {_a(body_c)} {thing} swings closed and then opens",
    ] if kind != "laptop" else [
        f"{_a(_size_word(attrs) + body_c)} laptop folds its screen shut and opens it again",
        f"{_a(body_c)} laptop closes and reopens its lid",
    ])
    return Built(scene.finish(), attrs, caption)


def windmill(rng: np.random.Generator) -> Built:
    """A windmill with broad sails or a slender wind turbine, its rotor spinning about the facing axis (node TRS)."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-30, 30))
    kind = str(rng.choice(["windmill", "wind turbine"]))
    scene = Scene(heading, scale)
    if kind == "windmill":
        blades = int(rng.choice([4, 5]))
        blade_c, tower_c = pick_colours(rng, 2, ("white", "red", "brown", "yellow", "blue", "grey", "green"))
        tower_h, r_base, r_top = rng.uniform(0.55, 0.75), rng.uniform(0.16, 0.2), rng.uniform(0.1, 0.13)
        blade_len, blade_w = rng.uniform(0.32, 0.42), rng.uniform(0.08, 0.12)
        tower = merge([cylinder(r_base, tower_h, 20, top_radius=r_top),
                       transformed(cone(r_top * 1.3, 0.15, 20), translate=(0, tower_h, 0))])
        hub_at = (0, tower_h + 0.02, r_top + 0.05)
    else:
        blades = 3
        blade_c = str(rng.choice(["white", "grey", "yellow", "blue", "red"]))
        tower_c = "white" if blade_c != "white" else "grey"
        tower_h, r_base, r_top = rng.uniform(0.8, 1.0), 0.035, 0.022
        blade_len, blade_w = rng.uniform(0.38, 0.48), rng.uniform(0.06, 0.08)
        tower = merge([cylinder(r_base, tower_h, 16, top_radius=r_top),
                       box((0.08, 0.07, 0.18), (0, tower_h + 0.03, 0))])
        hub_at = (0, tower_h + 0.03, 0.11)
    scene.node(name="tower", mesh=scene.mesh([(tower, scene.material(tower_c))]))
    sails = []
    for k in range(blades):
        a = 2 * np.pi * k / blades  # blade 0 points straight up at t = 0: the highest the rotor reaches
        taper = box((blade_w, blade_len, 0.015), (0, 0.04 + blade_len / 2, 0.0))
        sails.append(transformed(taper, linear_map=rot("z", a)))
    hub = transformed(ellipsoid((0.04, 0.04, 0.05), 12, 6))
    rotor = scene.node(name="rotor", translation=hub_at,
                       mesh=scene.mesh([(merge(sails), scene.material(blade_c)), (hub, scene.material(tower_c))]))
    rate = spin_rate(rng, blades) * float(rng.choice([-1.0, 1.0]))
    times = time_grid(1.0 / (abs(rate) * blades))  # the rotor looks the same after 1/blades of a turn
    scene.animate([rotor], Motion(times, rotations={0: quat("z", 2 * np.pi * rate * times)}))
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": blade_c, "tower_color": tower_c, "blades": blades,
             "rev_per_s": round(rate, 3), "heading_deg": round(heading, 2)}
    number = {3: "three", 4: "four", 5: "five"}[blades]
    parts = "sails" if kind == "windmill" else "blades"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + blade_c)} {kind} spins its {number} {parts}",
        f"{_a(kind)} with {number} {blade_c} {parts} turning {'clockwise' if rate < 0 else 'counterclockwise'}",
        f"{_a(_size_word(attrs) + kind)} on {_a(tower_c)} tower, its {blade_c} {parts} rotating in the wind",
    ])
    return Built(scene.finish(), attrs, caption)


def _scaled_about_bottom(part: Part, sxz: float, sy: float) -> Part:
    """The part scaled by (sxz, sy, sxz) about the origin (its bottom point), for squash-and-stretch states."""
    return transformed(part, linear_map=np.diag([sxz, sy, sxz]))


def bouncing_ball(rng: np.random.Generator) -> Built:
    """A textured ball bouncing on a mat: its height follows exact parabolas through CUBICSPLINE keys (node
    translation) and it squashes on landing and stretches in flight through two morph targets."""
    size, scale = _size(rng)
    c1, c2 = pick_colours(rng, 2, _VIVID + ("white",))
    mat_c = str(rng.choice(["grey", "black", "brown", "white"] if c1 != "white" and c2 != "white" else
                           ["grey", "black", "brown"]))
    pattern = str(rng.choice(["striped", "checkered"]))
    radius = rng.uniform(0.22, 0.3)
    bounce = radius * rng.uniform(1.2, 2.0)  # apex height of the ball's bottom above the mat
    period = float(rng.uniform(0.6, 1.0))
    contact = 0.12 * period  # time on the mat per bounce, when it squashes
    squash = rng.uniform(0.25, 0.4)

    texture = stripes_texture([c1, c2], int(rng.choice([6, 8, 10])), vertical=True) if pattern == "striped" else \
        checker_texture([c1, c2], 8)
    ball = transformed(ellipsoid((radius,) * 3, 24, 14), translate=(0, radius, 0))
    squashed = _scaled_about_bottom(ball, 1 + 0.6 * squash, 1 - squash)
    stretched = _scaled_about_bottom(ball, 0.88, 1.2)

    scene = Scene(float(rng.uniform(-30, 30)), scale)
    pad = 2.8 * radius  # wider than the squashed ball
    scene.node(name="mat", mesh=scene.mesh([(box((pad, 0.03, pad), (0, 0.015, 0)), scene.material(mat_c))]))
    ball_node = scene.node(name="ball", translation=(0, 0.03 + bounce, 0),
                           mesh=scene.mesh([(ball, scene.material(None, texture=texture, roughness=0.4))],
                                           targets=[[squashed, stretched]]))

    # one bounce starting at the apex: fall for `flight`, sit for `contact`, rise for `flight`
    flight = (period - contact) / 2
    cycles = math.ceil(1.0 / period - 1e-9)
    key_t, key_v, key_in, key_out = [], [], [], []
    speed = 2 * bounce / flight  # landing speed of the parabola h·(1 − (τ/flight)²)
    for c in range(cycles):
        t0 = c * period
        for t, v, vin, vout in ((t0, bounce, 0.0, 0.0), (t0 + flight, 0.0, -speed, 0.0),
                                (t0 + flight + contact, 0.0, 0.0, speed)):
            key_t.append(t), key_v.append(v), key_in.append(vin), key_out.append(vout)
    key_t.append(cycles * period), key_v.append(bounce), key_in.append(0.0), key_out.append(0.0)
    base = 0.03
    values = np.zeros((len(key_t), 3, 3))
    values[:, 0, 1], values[:, 1, 1], values[:, 2, 1] = key_in, np.asarray(key_v) + base, key_out
    scene.channels.append(Channel(ball_node, "translation", np.asarray(key_t), values, "CUBICSPLINE"))

    times = time_grid(period)
    tau = np.mod(times, period) - flight  # time since landing
    on_mat = (tau >= 0) & (tau <= contact)
    squash_w = np.where(on_mat, np.sin(np.pi * np.clip(tau / contact, 0, 1)), 0.0)
    # stretch grows with speed, which peaks just before landing and just after take-off
    air = np.where(tau < 0, 1 + tau / flight, np.clip(1 - (tau - contact) / flight, 0, 1))
    stretch_w = np.where(on_mat, 0.0, air ** 2)
    scene.channels.append(Channel(ball_node, "weights", times, np.stack([squash_w, stretch_w], 1)))
    attrs = {"size": size, "scale": scale,
             "colors": [c1, c2], "pattern": pattern, "mat_color": mat_c, "bounce_period_s":
             round(period, 3), "bounce_height": round(bounce / (2 * radius), 3), "squash": round(squash, 3)}
    ball_words = f"{c1} and {c2} {pattern} ball"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + ball_words)} bounces up and down, squashing when it lands",
        f"{_a(ball_words)} bouncing on {_a(mat_c)} mat",
        f"{_a(_size_word(attrs) + ball_words)} drops onto {_a(mat_c)} mat, squashes flat and springs back up",
    ])
    return Built(scene.finish(), attrs, caption)


def _leaf(length: float, width: float) -> Part:
    """A flat leaf/petal along +Z from its base at the origin, its face up (+Y)."""
    return transformed(ellipsoid((width / 2, 0.006, length / 2), 10, 6), translate=(0, 0, length / 2))


def _splayed(part: Part, azimuth: float, elevation: float, at) -> Part:
    """Turn a +Z-pointing part to rise at ``elevation`` from the horizontal, facing ``azimuth``, rooted at ``at``."""
    return transformed(part, linear_map=rot("y", azimuth) @ rot("x", -elevation), translate=at)


def growing_plant(rng: np.random.Generator) -> Built:
    """A potted plant that grows taller, unfurls its leaves and (often) opens a flower: morph targets.

    Two targets hold the half-grown and fully-grown shapes; the weights walk base → half → full, which keeps
    unfurling leaves on a near-circular path rather than the straight chord a single target would give.
    """
    size, scale = _size(rng)
    pot_c, flower_c = pick_colours(rng, 2, ("orange", "red", "blue", "white", "brown", "yellow", "purple", "pink",
                                            "teal", "grey"))
    leaf_c = str(rng.choice(["green", "green", "teal"]))
    stem_h, grow = rng.uniform(0.45, 0.6), rng.uniform(0.22, 0.32)
    leaves = int(rng.integers(4, 8))
    leaf_len, leaf_w = rng.uniform(0.36, 0.46), rng.uniform(0.11, 0.15)
    has_flower = bool(rng.random() < 0.6)
    petals = int(rng.integers(5, 9))
    duration = float(rng.uniform(0.8, 1.0))
    pot_h, pot_r = rng.uniform(0.16, 0.22), rng.uniform(0.12, 0.16)
    golden = math.radians(137.5)
    heights = np.linspace(0.3, 0.85, leaves)

    def plant(g: float) -> tuple[Part, Part, Part]:
        """Stem + leaves, petals and flower centre at growth g ∈ [0, 1] (same topology for every g)."""
        h = stem_h * (1 + grow * g)
        stem = cylinder(0.018, 1.0, 10, rings=6, top_radius=0.012)
        parts = [transformed(stem, linear_map=np.diag([1.0, h, 1.0]), translate=(0, pot_h, 0))]
        for i, f in enumerate(heights):
            fold = math.radians(80 - 65 * g)  # from nearly upright along the stem to spread almost flat
            s = 0.55 + 0.45 * g  # leaves grow as they unfurl
            parts.append(_splayed(_leaf(leaf_len * s, leaf_w * s), i * golden, fold, (0, pot_h + f * h, 0)))
        top = np.array([0, pot_h + h, 0])
        petal = [_splayed(_leaf(0.13 * (0.5 + 0.5 * g), 0.06 * (0.6 + 0.4 * g)), 2 * np.pi * k / petals,
                          math.radians(80 - 70 * g), top) for k in range(petals)]
        centre = transformed(ellipsoid((0.03, 0.02, 0.03), 10, 6), linear_map=np.eye(3) * (0.6 + 0.4 * g),
                             translate=top)
        return merge(parts), merge(petal), centre

    states = [plant(g) for g in (0.0, 0.5, 1.0)]
    scene = Scene(0.0, scale)
    pot = merge([cylinder(pot_r * 0.75, pot_h, 20, top_radius=pot_r),
                 transformed(cylinder(pot_r * 1.08, 0.03, 20), translate=(0, pot_h - 0.03, 0))])
    soil = transformed(cylinder(pot_r * 0.95, 0.01, 20), translate=(0, pot_h - 0.02, 0))
    scene.node(name="pot", mesh=scene.mesh([(pot, scene.material(pot_c)), (soil, scene.material("brown",
                                                                                                roughness=1.0))]))
    pieces = [(states[0][0], scene.material(leaf_c))]
    targets = [[states[1][0], states[2][0]]]
    if has_flower:
        pieces += [(states[0][1], scene.material(flower_c)), (states[0][2], scene.material("yellow" if flower_c !=
                                                                                              "yellow" else "orange"))]
        targets += [[states[1][1], states[2][1]], [states[1][2], states[2][2]]]
    node = scene.node(name="plant", mesh=scene.mesh(pieces, targets))
    times = np.linspace(0.0, max(1.0, duration), KEYS_PER_SECOND + 1)
    s = np.sin(np.pi / 2 * np.clip(times / duration, 0, 1))  # fast at first, easing into the full-grown pose
    w_half = np.where(s < 0.5, 2 * s, 2 - 2 * s)
    w_full = np.where(s < 0.5, 0.0, 2 * s - 1)
    scene.channels.append(Channel(node, "weights", times, np.stack([w_half, w_full], 1)))
    attrs = {"size": size, "scale": scale,
             "pot_color": pot_c, "leaf_color": leaf_c, "leaves": leaves,
             "flower_color": flower_c if has_flower else None, "growth": round(grow, 3),
             "duration_s": round(duration, 3)}
    shape = "tall " if stem_h > 0.53 else ""
    plant_words = f"{_size_word(attrs) or shape}{leaf_c} plant"
    caption = _choose(rng, [
        f"{_a(plant_words)} in {_a(pot_c)} pot grows and unfurls its leaves",
        f"{_a(plant_words)} sprouts upward, spreading {leaves} leaves",
    ])
    if has_flower:
        caption += _choose(rng, [f" as {_a(flower_c)} flower blooms", f" and opens {_a(flower_c)} flower"])
    return Built(scene.finish(), attrs, caption)


def waving_figure(rng: np.random.Generator) -> Built:
    """A figure facing the camera waving one raised arm: the arm is one tube bent at the elbow by two bones with
    smoothly blended weights; the body sways on a third."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-25, 25))
    kind = str(rng.choice(["person", "robot", "snowman"]))
    side = float(rng.choice([-1.0, 1.0]))  # which side of the figure waves (+X: the viewer's right)
    freq, amp = cos_frequency(rng), rng.uniform(0.55, 0.8)
    scene = Scene(heading, scale)
    rig = Rig()
    root = rig.add("body", -1, (0, 0, 0))
    main, accent = [], []
    if kind == "snowman":
        body_c, accent_c = "white", str(rng.choice(["red", "blue", "green", "purple", "black", "orange"]))
        r1, r2, r3 = rng.uniform(0.22, 0.26), rng.uniform(0.16, 0.19), rng.uniform(0.11, 0.13)
        y1, y2 = r1, 2 * r1 + r2 * 0.8
        y3 = y2 + r2 * 0.8 + r3
        neck = rig.add("neck", root, (0, y2 + 0.6 * r2, 0))
        main += [rigid(transformed(ellipsoid((r,) * 3, 18, 12), translate=(0, y, 0)), root) for r, y in
                 ((r1, y1), (r2, y2))]
        main.append(rigid(transformed(ellipsoid((r3,) * 3, 16, 10), translate=(0, y3, 0)), neck))
        accent += [rigid(transformed(cylinder(r3 * 0.9, 0.16, 18), translate=(0, y3 + r3 * 0.7, 0)), neck),
                   rigid(transformed(cylinder(r3 * 1.5, 0.02, 18), translate=(0, y3 + r3 * 0.7, 0)), neck),
                   rigid(transformed(cylinder(r2 * 0.85, 0.05, 18), translate=(0, y2 + r2 * 0.6, 0)), root)]
        accent.append(rigid(segment(cone(0.025, 1.0, 8), (0, y3, r3 * 0.9), (0, y3, r3 * 1.6)), neck))
        shoulder_at, arm_r, arm_c = np.array([side * r2 * 0.9, y2 + 0.2 * r2, 0]), 0.015, "brown"
        still_arm = [(-side * r2 * 0.9, y2 + 0.1 * r2, 0), (-side * (r2 + 0.25), y2 - 0.05, 0)]
        arm_len = rng.uniform(0.42, 0.52)
    else:
        body_c, accent_c = pick_colours(rng, 2, _VIVID + ("white", "grey", "brown"))
        leg_h, torso_h = rng.uniform(0.35, 0.45), rng.uniform(0.32, 0.4)
        torso_w, head_r = rng.uniform(0.22, 0.3), rng.uniform(0.08, 0.11)
        neck = rig.add("neck", root, (0, leg_h + torso_h, 0))
        for sx in (1, -1):
            main.append(rigid(limb(0.045, (sx * torso_w / 4, leg_h + 0.02, 0), (sx * torso_w / 4, 0.0, 0)), root))
        if kind == "robot":
            main.append(rigid(box((torso_w, torso_h, 0.16), (0, leg_h + torso_h / 2, 0)), root))
            accent.append(rigid(box((2 * head_r,) * 3, (0, leg_h + torso_h + head_r + 0.02, 0)), neck))
            accent.append(rigid(limb(0.008, (0, leg_h + torso_h + 2 * head_r, 0),
                                     (0, leg_h + torso_h + 2 * head_r + 0.1, 0), 6), neck))
        else:
            torso = ellipsoid((torso_w / 2, torso_h / 2 + 0.03, 0.09))
            main.append(rigid(transformed(torso, translate=(0, leg_h + torso_h / 2, 0)), root))
            accent.append(rigid(transformed(ellipsoid((head_r,) * 3), translate=(0, leg_h + torso_h + head_r, 0)),
                                neck))
        shoulder_at = np.array([side * (torso_w / 2 + 0.03), leg_h + torso_h - 0.04, 0])
        arm_r, arm_c = 0.035, body_c
        still_arm = [(-side * (torso_w / 2 + 0.03), leg_h + torso_h - 0.04, 0),
                     (-side * (torso_w / 2 + 0.08), leg_h + torso_h * 0.1, 0)]
        arm_len = rng.uniform(0.44, 0.54)
    arm_dir = _normalize(np.array([side * 1.0, 0.55, 0.0]))  # rest pose: raised outwards
    upper = rig.add("upper_arm", root, shoulder_at)
    fore = rig.add("forearm", upper, arm_dir * arm_len * 0.5)
    tube = segment(cylinder(arm_r, 1.0, 10, rings=12), shoulder_at, shoulder_at + arm_dir * arm_len)
    along = (tube.positions - shoulder_at) @ arm_dir
    arm = [chain_bound(tube, along, [0.0, arm_len * 0.5], [upper, fore], blend=0.05)]
    hand = transformed(ellipsoid((arm_r * 1.6,) * 3, 10, 6), translate=shoulder_at + arm_dir * arm_len)
    arm.append(rigid(hand, fore))
    arm.append(rigid(limb(arm_r, *still_arm), root))

    times = time_grid(1 / freq)
    wave = np.cos(2 * np.pi * freq * times)
    motion = Motion(times)
    # bend the forearm up towards vertical, then wave it about the facing axis (Z) around that pose
    motion.rotations[fore] = quat("z", side * (1.0 + amp * wave))
    motion.rotations[upper] = quat("z", side * 0.12 * wave)
    motion.rotations[root] = quat("z", -side * 0.04 * wave)
    motion.rotations[neck] = quat("z", side * 0.08 * wave)
    pieces = [(merge(main), scene.material(body_c)), (merge(accent), scene.material(accent_c)),
              (merge(arm), scene.material(arm_c))]
    scene.skinned(rig, pieces, motion)
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": body_c, "accent_color": accent_c,
             "waving_side": "right" if side > 0 else "left", "heading_deg": round(heading, 2),
             "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    if kind == "snowman":
        caption = _choose(rng, [f"{_a(_size_word(attrs) + 'snowman')} with {_a(accent_c)} hat waves its stick arm",
                                f"a snowman wearing {_a(accent_c)} hat and scarf waves hello"])
    else:
        what = "robot" if kind == "robot" else "figure"
        caption = _choose(rng, [f"{_a(_size_word(attrs) + body_c)} {what} waves one raised arm",
                                f"{_a(body_c)} {what} with {_a(accent_c)} head waves hello",
                                f"{_a(_size_word(attrs) + body_c)} {what} waving its arm back and forth"])
    return Built(scene.finish(), attrs, caption)


def jellyfish_pulse(rng: np.random.Generator) -> Built:
    """A jellyfish pulsing its bell (a contraction morph target) while its tentacles sway (two more targets) and
    it bobs upward with each stroke (node translation)."""
    size, scale = _size(rng)
    bell_c, tent_c = pick_colours(rng, 2, ("pink", "purple", "blue", "teal", "orange", "white", "yellow", "red"))
    bell_r, bell_h = rng.uniform(0.25, 0.32), rng.uniform(0.18, 0.28)
    tentacles, tent_len = int(rng.integers(6, 11)), rng.uniform(0.45, 0.65)
    contract = rng.uniform(0.25, 0.35)
    freq = cos_frequency(rng)

    theta = np.linspace(0.0, np.pi / 2, 14)
    under = np.linspace(0.0, 1.0, 5)
    profile_r = np.r_[bell_r * under[:-1] * 0.92, bell_r * np.cos(theta) * np.r_[1.0, np.ones(13)]]
    profile_y = np.r_[0.25 * bell_h * (1 - under[:-1]) ** 2, bell_h * np.sin(theta)]
    bell = lathe(profile_r, profile_y, segments=28, caps=False)
    tents = []
    for k in range(tentacles):
        a = 2 * np.pi * (k + 0.5) / tentacles
        at = np.array([0.8 * bell_r * np.sin(a), 0.01, 0.8 * bell_r * np.cos(a)])
        tents.append(limb(0.012, at, at - (0, tent_len, 0), segments=6, rings=10, top_radius=0.004))
    tents = merge(tents)

    def contracted(part: Part) -> Part:
        # squeeze the rim more than the crown and push the bell taller; tentacles follow the rim inward
        p = part.positions
        depth = np.clip(p[:, 1] / bell_h, 0, 1)
        factor = np.where(p[:, 1] >= 0, 1 - contract * (1 - depth), 1 - contract * 0.8)[:, None]
        moved = p * np.c_[factor, np.ones(len(p)), factor] + np.c_[np.zeros((len(p), 1)),
                                                                   0.2 * bell_h * depth, np.zeros((len(p), 1))]
        return replace(part, positions=moved)

    def swayed(part: Part, phase: float) -> Part:
        # tentacles curl sideways (around the bell's axis), more towards their tips
        p = part.positions
        hang = np.clip(-p[:, 1] / tent_len, 0, 1)
        tangent = _normalize(np.c_[p[:, 2], np.zeros(len(p)), -p[:, 0]])
        bend = 0.25 * bell_r * hang ** 1.5 * np.sin(np.pi * hang * 1.5 + phase)
        return replace(part, positions=p + tangent * bend[:, None])

    scene = Scene(0.0, scale)
    body = scene.node(name="jellyfish", translation=(0, tent_len, 0),
                      mesh=scene.mesh([(bell, scene.material(bell_c, roughness=0.3, double_sided=True)),
                                       (tents, scene.material(tent_c))],
                                      targets=[[contracted(bell), bell, bell],
                                               [contracted(tents), swayed(tents, 0.0), swayed(tents, np.pi / 2)]]))
    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    squeeze = 0.5 - 0.5 * np.cos(phase)
    weights = np.stack([squeeze, np.sin(phase), np.cos(phase)], 1)
    rise = 0.06 * (bell_h + tent_len) * (0.5 - 0.5 * np.cos(phase - 0.6))
    scene.channels.append(Channel(body, "weights", times, weights))
    scene.channels.append(Channel(body, "translation", times, np.stack([0 * times, tent_len + rise, 0 * times], 1)))
    attrs = {"size": size, "scale": scale,
             "color": bell_c, "tentacle_color": tent_c, "tentacles": tentacles,
             "frequency_hz": round(freq, 3), "contraction": round(contract, 3)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + bell_c)} jellyfish pulses its bell and bobs upward",
        f"{_a(bell_c)} jellyfish with {tentacles} {tent_c} tentacles contracts and relaxes as it swims",
        f"{_a(_size_word(attrs) + bell_c)} jellyfish pumping its bell, tentacles swaying",
    ])
    return Built(scene.finish(), attrs, caption)


def flag_wave(rng: np.random.Generator) -> Built:
    """A striped (textured) flag rippling on a pole: a travelling wave built exactly from two morph targets,
    a(x)·sin(kx) and a(x)·cos(kx), weighted by cos(ωt) and −sin(ωt); a third target lifts the free end, so the
    flutter also shows in the flag's own plane."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 40, 65)
    colours = pick_colours(rng, int(rng.choice([2, 3])), _VIVID + ("white", "black"))
    bands = len(colours) * int(rng.choice([1, 2]))
    vertical = bool(rng.random() < 0.5)
    pole_h, width, height = rng.uniform(0.85, 1.05), rng.uniform(0.6, 0.8), rng.uniform(0.38, 0.5)
    waves, amp = rng.uniform(1.0, 1.6), rng.uniform(0.16, 0.22) * width
    freq = float(rng.uniform(1.0, 1.5))
    pole_c = str(rng.choice(["grey", "white", "brown", "black"]))

    cloth = transformed(plane_grid(width, height, 24, 6), translate=(0.02, pole_h - height - 0.03, 0))
    x = (cloth.positions[:, 0] - 0.02) / width
    k = 2 * np.pi * waves
    envelope = amp * x ** 1.2  # pinned at the pole, free at the fly end
    d_env = amp * 1.2 * np.maximum(x, 1e-6) ** 0.2 / width
    z_sin, z_cos = envelope * np.sin(k * x), envelope * np.cos(k * x)
    # surface z = f(x): its normal is (−f′, 0, 1); the normal change is linear in f, so it morphs exactly too
    dz_sin = d_env * np.sin(k * x) + envelope * np.cos(k * x) * k / width
    dz_cos = d_env * np.cos(k * x) - envelope * np.sin(k * x) * k / width

    def state(z: np.ndarray, dz: np.ndarray, y=0.0) -> Part:
        return replace(cloth, positions=cloth.positions + np.c_[0 * z, 0 * z + y, z],
                       normals=cloth.normals + np.c_[-dz, 0 * dz, 0 * dz])

    lift = 0.4 * height * x ** 1.5

    texture = stripes_texture(colours, bands, vertical=vertical)
    scene = Scene(heading, scale)
    pole = merge([cylinder(0.018, pole_h, 12), transformed(ellipsoid((0.035,) * 3, 10, 6), translate=(0, pole_h, 0))])
    scene.node(name="pole", mesh=scene.mesh([(pole, scene.material(pole_c, metallic=0.4))]))
    flag = scene.node(name="flag", mesh=scene.mesh([(cloth, scene.material(None, texture=texture,
                                                                          double_sided=True))],
                                                   targets=[[state(z_sin, dz_sin), state(z_cos, dz_cos),
                                                             state(0 * x, 0 * x, lift)]]))
    times = time_grid(1 / freq)
    omega = 2 * np.pi * freq * times
    scene.channels.append(Channel(flag, "weights", times, np.stack([np.cos(omega), -np.sin(omega),
                                                                       0.5 * np.sin(omega + 0.8)], 1)))
    attrs = {"size": size, "scale": scale,
             "colors": colours, "stripes": "vertical" if vertical else "horizontal", "bands": bands,
             "pole_color": pole_c, "frequency_hz": round(freq, 3), "heading_deg": round(heading, 2)}
    names = " and ".join([", ".join(colours[:-1]), colours[-1]])
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + 'flag')} with {names} {attrs['stripes']} stripes waves on {_a(pole_c)} pole",
        f"{_a(names)} striped flag ripples in the wind",
        f"a flag striped {names} flutters on a pole",
    ])
    return Built(scene.finish(), attrs, caption)


# ================================================================================================================
# Public API
# ================================================================================================================

_BUILDERS: dict[str, Callable[[np.random.Generator], Built]] = {
    "biped_walk": biped_walk,
    "quadruped_trot": quadruped_trot,
    "bird_flap": bird_flap,
    "fish_swim": fish_swim,
    "snake_slither": snake_slither,
    "caterpillar_crawl": caterpillar_crawl,
    "waving_figure": waving_figure,
    "robot_arm": robot_arm,
    "spinning_top": spinning_top,
    "door_swing": door_swing,
    "chest_lid": chest_lid,
    "windmill": windmill,
    "bouncing_ball": bouncing_ball,
    "growing_plant": growing_plant,
    "jellyfish_pulse": jellyfish_pulse,
    "flag_wave": flag_wave,
}

#: Family names, in the order ``make_asset`` draws them from.
FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


@dataclass
class ProceduralAsset:
    uid: str
    family: str
    caption: str
    attributes: dict
    glb: bytes


def _rng(seed: int, index: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index])


def _draw_family(rng: np.random.Generator) -> str:
    return FAMILIES[int(rng.integers(len(FAMILIES)))]


def asset_uid(seed: int, index: int) -> str:
    """The uid ``make_asset(seed, index)`` will have, without building the asset."""
    return f"proc{seed}_{index:05d}_{_draw_family(_rng(seed, index))}"


def _plain(value):
    """JSON-ready copies of attribute values (numpy scalars → Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_asset(seed: int, index: int) -> ProceduralAsset:
    """Asset ``index`` of the procedural dataset with ``seed``: a pure function of the two numbers.

    Each asset draws from its own generator ``default_rng([seed, index])`` (first its family, then everything
    else), so asset i is the same however many assets are made, and in whatever order.
    """
    rng = _rng(seed, index)
    family = _draw_family(rng)
    built = _BUILDERS[family](rng)
    return ProceduralAsset(uid=f"proc{seed}_{index:05d}_{family}", family=family, caption=built.caption,
                           attributes=_plain(built.attributes), glb=built.glb)


def glb_is_complete(path: str | Path) -> bool:
    """True when ``path`` is a GLB whose header's total length matches the file size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(12)
    except OSError:
        return False
    return (len(header) == 12 and header[:4] == b"glTF" and int.from_bytes(header[4:8], "little") == 2
            and int.from_bytes(header[8:12], "little") == size)


def _read_caption_records(path: Path) -> dict[str, dict]:
    """Existing captions.jsonl records by uid; unreadable lines are ignored (they are regenerated)."""
    records = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["uid"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def write_procedural_dataset(out_dir: str | Path, count: int, seed: int = 0, progress: bool = True) -> list[Path]:
    """Write ``out_dir/<uid>.glb`` for assets 0 … count−1 and ``out_dir/captions.jsonl`` (one line per asset:
    uid, caption, family, attributes). Returns the GLB paths in index order.

    Resumable: a GLB already there and complete is not rewritten; its caption comes from the old captions.jsonl,
    or from regenerating the (deterministic) asset when that has no line for it. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    captions_path = out_dir / "captions.jsonl"
    old = _read_caption_records(captions_path)
    paths, lines = [], []
    for index in tqdm(range(count), desc="procedural assets", unit="asset", disable=not progress):
        uid = asset_uid(seed, index)
        path = out_dir / f"{uid}.glb"
        record = old.get(uid) if glb_is_complete(path) else None
        if record is None:
            asset = make_asset(seed, index)
            if not glb_is_complete(path):
                write_bytes_atomic(path, asset.glb)
            record = {"uid": uid, "caption": asset.caption, "family": asset.family, "attributes": asset.attributes}
        paths.append(path)
        lines.append(json.dumps(record, sort_keys=False))
    write_text_atomic(captions_path, "".join(line + "\n" for line in lines))
    return paths
