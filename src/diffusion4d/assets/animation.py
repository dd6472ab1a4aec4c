"""Transform maths and animation samplers of the glTF loader (spec §3.5.2, §3.11 and Appendix "Interpolation").

Quaternions are in glTF order (x, y, z, w); matrices are row-major numpy arrays. Part of
:mod:`diffusion4d.assets.gltf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pygltflib

from .gltf_io import AccessorReader, _Invalid, _item

# --------------------------------------------------------------------------------------------------------------
# Transform maths
# --------------------------------------------------------------------------------------------------------------


def normalize_rows(v: np.ndarray, fallback: tuple[float, ...]) -> np.ndarray:
    """Unit vectors along the last axis; zero-length rows become ``fallback`` (the contract promises unit length)."""
    length = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(length > 1e-12, v / np.where(length > 1e-12, length, 1.0), np.asarray(fallback, v.dtype))


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] in glTF order (x, y, z, w) → rotation matrices [..., 3, 3]."""
    x, y, z, w = np.moveaxis(q, -1, 0)
    xx, yy, zz, xy, xz, yz, wx, wy, wz = x * x, y * y, z * z, x * y, x * z, y * z, w * x, w * y, w * z
    m = np.empty(q.shape[:-1] + (3, 3), dtype=np.float64)
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = 1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = 2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)
    m[..., 2, 0], m[..., 2, 1], m[..., 2, 2] = 2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)
    return m


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] → unit quaternion [4] (x, y, z, w), branching on the largest diagonal term."""
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 1e-12))
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 1e-12))
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 1e-12))
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    return normalize_rows(np.array(q), (0.0, 0.0, 0.0, 1.0))


def decompose_matrix(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine [4, 4] → (translation [3], rotation quaternion [4], scale [3]); a mirror goes into scale x.

    Only needed when an animation targets a node that (against the spec) carries a ``matrix``: the channel then
    overrides one TRS component and the others must come from the matrix.
    """
    linear = m[:3, :3]
    scale = np.linalg.norm(linear, axis=0)
    if np.linalg.det(linear) < 0:
        scale[0] = -scale[0]
    rotation = linear / np.where(np.abs(scale) > 1e-12, scale, 1.0)
    return m[:3, 3].copy(), matrix_to_quaternion(rotation), scale


def trs_matrices(translation: np.ndarray, rotation: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Local node matrices M = T·R·S (spec §3.5.2) from [n, 3], [n, 4] (x, y, z, w), [n, 3] → [n, 4, 4]."""
    n = len(translation)
    m = np.zeros((n, 4, 4), dtype=np.float64)
    m[:, :3, :3] = quaternion_to_matrix(rotation) * scale[:, None, :]  # R·diag(s) scales R's columns
    m[:, :3, 3] = translation
    m[:, 3, 3] = 1.0
    return m


def global_transforms(local: np.ndarray, levels: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """World matrices [n, 4, 4]: G(node) = G(parent)·L(node), one batched product per hierarchy depth.

    ``levels[0]`` holds the roots (their parent array is unused); deeper levels are (nodes [k], parents [k]).
    """
    world = local.copy()
    for nodes, parents in levels[1:]:
        world[nodes] = world[parents] @ local[nodes]
    return world


def cofactor_columns(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For 3×3 matrices [..., 3, 3] with columns c0, c1, c2: the columns of det(M)·M⁻ᵀ and det(M) [...].

    Normals transform by M⁻ᵀ; det·M⁻ᵀ = (c1×c2 | c2×c0 | c0×c1) needs no inverse, survives singular
    matrices, and is exact for non-uniform scale where reusing M itself would tilt the normals.
    """
    c0, c1, c2 = m[..., :, 0], m[..., :, 1], m[..., :, 2]
    r0, r1, r2 = np.cross(c1, c2), np.cross(c2, c0), np.cross(c0, c1)
    det = np.einsum("...i,...i->...", c0, r0)
    return r0, r1, r2, det


# --------------------------------------------------------------------------------------------------------------
# Animation samplers (spec §3.11 and Appendix "Interpolation")
# --------------------------------------------------------------------------------------------------------------


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions [..., 4] at u ∈ [0, 1]; shortest path, unit result."""
    d = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(d < 0, -q1, q1)  # q and −q are the same rotation: take the shorter arc
    d = np.abs(d)
    nearly_parallel = d > 0.9995  # sin(θ) → 0: fall back to normalised lerp, which is then accurate
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    sin_theta = np.where(nearly_parallel, 1.0, np.sin(theta))
    w0 = np.where(nearly_parallel, 1.0 - u, np.sin((1.0 - u) * theta) / sin_theta)
    w1 = np.where(nearly_parallel, u, np.sin(u * theta) / sin_theta)
    return normalize_rows(w0 * q0 + w1 * q1, (0.0, 0.0, 0.0, 1.0))


def hermite(p0: np.ndarray, m0: np.ndarray, p1: np.ndarray, m1: np.ndarray, u: float) -> np.ndarray:
    """Cubic Hermite spline at u ∈ [0, 1] with tangents already scaled by the key interval."""
    u2, u3 = u * u, u * u * u
    return (
        (2 * u3 - 3 * u2 + 1) * p0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * p1 + (u3 - u2) * m1
    )


def sample_sampler(
    times: np.ndarray, values: np.ndarray, interpolation: str, t: float, is_rotation: bool
) -> np.ndarray:
    """Evaluate one animation sampler (or a stack of samplers sharing ``times``) at time t (seconds).

    times: [K] increasing key times. values: [K, ...] key values for STEP/LINEAR, or [K, 3, ...] for CUBICSPLINE
    (in-tangent a_k, value v_k, out-tangent b_k). Returns [...]. Outside [t_0, t_{K−1}] the first/last key value is
    held (spec: clamp). LINEAR rotations slerp; CUBICSPLINE rotations are renormalised.
    """
    cubic = interpolation == "CUBICSPLINE"
    key_values = values[:, 1] if cubic else values
    if t <= times[0]:
        result = key_values[0]
    elif t >= times[-1]:
        result = key_values[-1]
    else:
        k = int(np.searchsorted(times, t, side="right")) - 1  # t_k <= t < t_{k+1}
        dt = times[k + 1] - times[k]
        u = (t - times[k]) / dt if dt > 0 else 0.0
        if interpolation == "STEP":
            result = key_values[k]
        elif cubic:
            # p(u) with m0 = Δt·b_k (out-tangent of k) and m1 = Δt·a_{k+1} (in-tangent of k+1)
            result = hermite(values[k, 1], dt * values[k, 2], values[k + 1, 1], dt * values[k + 1, 0], u)
        elif is_rotation:
            result = slerp(key_values[k], key_values[k + 1], u)
        else:
            result = (1.0 - u) * key_values[k] + u * key_values[k + 1]
    if is_rotation:
        result = normalize_rows(result, (0.0, 0.0, 0.0, 1.0))
    return result


@dataclass
class _ChannelGroup:
    """Channels with identical key times, interpolation and value width, sampled in one vectorised call."""

    times: np.ndarray  # [K] seconds
    interpolation: str  # "STEP" | "LINEAR" | "CUBICSPLINE"
    values: np.ndarray  # [K, G, D], or [K, 3, G, D] for CUBICSPLINE
    is_rotation: bool  # all G channels are rotations (D = 4)
    nodes: np.ndarray  # [G] target node of each stacked channel
    translation_rows: np.ndarray  # rows of G whose path is translation ...
    scale_rows: np.ndarray  # ... scale
    rotation_rows: np.ndarray  # ... rotation
    weight_rows: list[int]  # ... weights


def build_channel_groups(
    gltf: pygltflib.GLTF2, reader: AccessorReader, animation_index: int, morph_counts: dict[int, int]
) -> tuple[list[_ChannelGroup], float]:
    """Decode one animation's channels and stack those that can be sampled together.

    morph_counts: node → number of morph targets of its mesh (the width of a weights channel).
    Returns (groups, duration), duration being the largest input time over the animation's samplers.
    """
    animation = gltf.animations[animation_index]
    where = f"animation {animation_index}"
    duration = 0.0
    for s, sampler in enumerate(animation.samplers):
        times = _key_times(reader, sampler, f"{where} sampler {s}")
        duration = max(duration, float(times.max()))
    pending: dict[tuple, list] = {}
    for c, channel in enumerate(animation.channels):
        path = channel.target.path if channel.target is not None else None
        node = channel.target.node if channel.target is not None else None
        if node is None or path not in ("translation", "rotation", "scale", "weights"):
            continue  # targets owned by extensions (e.g. KHR_animation_pointer) are not ours to animate
        _item(gltf.nodes, node, "node")
        width = {"translation": 3, "rotation": 4, "scale": 3}.get(path) or morph_counts.get(node, 0)
        if width == 0:
            continue  # weights channel on a node that draws no morph targets: nothing to drive
        sampler = _item(animation.samplers, channel.sampler, f"{where} sampler")
        times, values, interpolation = _decode_sampler(reader, sampler, width, f"{where} channel {c}")
        if path == "rotation" and interpolation != "CUBICSPLINE":
            # slerp is defined on unit quaternions; exported (.707, .707) or quantised keys are only nearly unit.
            values = normalize_rows(values, (0.0, 0.0, 0.0, 1.0))
        # Translation and scale (both vec3) may share a group; rotations and weights are kept apart.
        kind = path if path in ("rotation", "weights") else "vec3"
        pending.setdefault((times.tobytes(), interpolation, kind, width), []).append((times, values, path, node))

    groups = []
    for (_, interpolation, kind, _), members in pending.items():
        paths = [m[2] for m in members]

        def rows(p: str, paths: list[str] = paths) -> np.ndarray:  # this group's paths, bound now
            return np.array([i for i, q in enumerate(paths) if q == p], dtype=np.int64)

        groups.append(
            _ChannelGroup(
                times=members[0][0],
                interpolation=interpolation,
                values=np.stack([m[1] for m in members], axis=-2),  # [K, G, D] or [K, 3, G, D]
                is_rotation=kind == "rotation",
                nodes=np.array([m[3] for m in members], dtype=np.int64),
                translation_rows=rows("translation"),
                scale_rows=rows("scale"),
                rotation_rows=rows("rotation"),
                weight_rows=[int(i) for i in rows("weights")],
            )
        )
    return groups, duration


def _key_times(reader: AccessorReader, sampler, what: str) -> np.ndarray:
    """A sampler's input: key times [K] in seconds (K >= 1)."""
    if sampler.input is None or sampler.output is None:
        raise _Invalid(f"{what}: sampler has no input or output accessor")
    times = reader.floats(sampler.input)
    if times.shape[1] != 1 or len(times) == 0:
        raise _Invalid(f"{what}: sampler input must be a non-empty SCALAR accessor of key times")
    return times[:, 0]


def _decode_sampler(reader: AccessorReader, sampler, width: int, what: str):
    """(times [K], values [K, D] or [K, 3, D], interpolation) of one sampler, with counts checked."""
    times = _key_times(reader, sampler, what)
    interpolation = sampler.interpolation or "LINEAR"
    if interpolation not in ("LINEAR", "STEP", "CUBICSPLINE"):
        raise _Invalid(f"{what}: unknown interpolation {interpolation!r}")
    flat = reader.floats(sampler.output).reshape(-1)
    per_key = 3 * width if interpolation == "CUBICSPLINE" else width
    if flat.size != len(times) * per_key:
        raise _Invalid(f"{what}: sampler output holds {flat.size} numbers, expected {len(times)} keys × {per_key}")
    shape = (len(times), 3, width) if interpolation == "CUBICSPLINE" else (len(times), width)
    return times, flat.reshape(shape), interpolation

