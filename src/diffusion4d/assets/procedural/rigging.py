"""Animation and assembly for the procedural assets: quaternion and timing helpers, skeletons (:class:`Rig`),
keyframed :class:`Motion`, the GLB under construction (:class:`Scene`), caption word helpers and the
:class:`Built` result every family returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from diffusion4d.assets.gltf_writer import Channel, GlbBuilder, MorphTarget, Primitive

from .shapes import Part, _normalize, linear

KEYS_PER_SECOND = 30  # dense sampling keeps LINEAR keyframes visually smooth at 24 fps renders


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

