"""Load glTF 2.0 assets and evaluate their animations exactly as the glTF 2.0 specification says.

pygltflib only parses the JSON into objects; everything numeric is decoded and evaluated here, with the
containers, URIs and accessors in :mod:`.gltf_io` and the transform maths and samplers in :mod:`.animation`:

* containers: ``.glb`` (header + JSON chunk + BIN chunk) and ``.gltf`` with ``data:`` or external-file URIs;
* accessors (spec §3.6.2): every component type, ``normalized`` integers, ``byteStride``, matrix column padding,
  sparse substitution, accessors without a bufferView (zeros);
* the node hierarchy (§3.5): ``matrix`` or TRS local transforms, composed root → leaf;
* animation samplers (§3.11, Appendix "Interpolation"): STEP, LINEAR (quaternion slerp) and CUBICSPLINE,
  clamped outside the key range; channels on translation / rotation / scale / weights;
* morph targets (§3.7.2.2) and skinning (§3.7.3), morphing first;
* triangle topologies (§3.7.2.1) and flat normals when NORMAL is absent;
* materials: base-colour factor × COLOR_0, base-colour texture and its TEXCOORD set (with KHR_texture_transform);
  alphaMode/alphaCutoff, doubleSided, emissive factor and texture with KHR_materials_emissive_strength; the
  diffuse factor and texture of KHR_materials_pbrSpecularGlossiness as the base colour; EXT_texture_webp sources;
* KHR_draco_mesh_compression and EXT_meshopt_compression through optional packages (:mod:`.gltf_compression`).

Typical use::

    asset = load_gltf("fox.glb")
    meshes = [asset.pose(t) for t in asset.frame_times(24)]   # normalised to the unit cube at frame 0

Anything wrong with the file raises :class:`AssetError` whose message starts with the file path; a failed load
leaves nothing behind.
"""

from __future__ import annotations

import io
import json
import math
import operator
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pygltflib
from PIL import Image

from .animation import (
    _ChannelGroup,
    build_channel_groups,
    cofactor_columns,
    decompose_matrix,
    global_transforms,
    normalize_rows,
    sample_sampler,
    trs_matrices,
)
from .gltf_compression import check_decoders_available, decode_meshopt_views, decompressed_reader
from .gltf_io import (
    _GLB_MAGIC,
    SUPPORTED_EXTENSIONS,
    AccessorReader,
    _Invalid,
    _item,
    buffer_view_bytes,
    check_gltf_json,
    column_major_matrices,
    load_buffers,
    parse_glb,
    read_uri,
)
from .mesh import PosedMesh, PosedPrimitive

__all__ = ["AssetError", "GltfAsset", "MAX_TRIANGLES", "SUPPORTED_EXTENSIONS", "load_gltf"]

#: Default refusal limit on the number of triangles a scene draws (summed over all mesh instances).
MAX_TRIANGLES = 2_000_000


class AssetError(ValueError):
    """A file that cannot be loaded. ``str(e)`` is always ``f"{path}: {problem}"``."""


# --------------------------------------------------------------------------------------------------------------
# Meshes (spec §3.7)
# --------------------------------------------------------------------------------------------------------------

_TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN = 4, 5, 6


def triangulate(indices: np.ndarray, mode: int) -> np.ndarray:
    """Vertex indices [K] of one primitive → triangles [F, 3] (spec §3.7.2.1 topology formulas).

    Strips and fans keep the winding the spec defines: strip triangle i is (v_i, v_{i+1+i%2}, v_{i+2−i%2});
    fan triangle i is (v_{i+1}, v_{i+2}, v_0). Degenerate strip/fan triangles (stitching) are dropped.
    """
    if mode == _TRIANGLES:
        return indices[: len(indices) // 3 * 3].reshape(-1, 3)
    n = max(len(indices) - 2, 0)
    i = np.arange(n)
    if mode == _TRIANGLE_STRIP:
        odd = i % 2
        tris = np.stack([indices[i], indices[i + 1 + odd], indices[i + 2 - odd]], axis=1)
    else:
        tris = np.stack([indices[i + 1], indices[i + 2], np.full(n, indices[0] if n else 0)], axis=1)
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    return tris[keep]


def count_triangles(gltf: pygltflib.GLTF2, primitive) -> int:
    """Triangles a primitive will draw, from accessor counts alone (so oversized files are refused unread)."""
    mode = _TRIANGLES if primitive.mode is None else primitive.mode
    if mode not in (_TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN):
        return 0
    source = primitive.indices if primitive.indices is not None else getattr(primitive.attributes, "POSITION", None)
    if source is None:
        return 0
    count = _item(gltf.accessors, source, "accessor").count or 0
    return count // 3 if mode == _TRIANGLES else max(count - 2, 0)


@dataclass
class _Primitive:
    """Everything static about one triangle primitive, ready for posing (N vertices, F faces, M morph targets)."""

    positions: np.ndarray  # [N, 3] float64, mesh space
    normals: np.ndarray | None  # [N, 3] float64, or None → flat normals (vertices are then unshared per face)
    indices: np.ndarray  # [F, 3] uint32, read-only
    flipped_indices: np.ndarray  # [F, 3] uint32: reversed winding for mirroring transforms
    position_targets: np.ndarray | None  # [M, N, 3] morph POSITION deltas
    normal_targets: np.ndarray | None  # [M, N, 3] morph NORMAL deltas
    joints: np.ndarray | None  # [N, I] int64 skin joint slots (4 per JOINTS_n set)
    weights: np.ndarray | None  # [N, I] float64, normalised to sum 1 per vertex
    unweighted: np.ndarray | None  # [N] bool: vertices whose weights were all zero (drawn rigidly)
    colors: np.ndarray  # [N, 4] float32 linear RGBA = COLOR_0 × baseColorFactor, read-only
    uvs: np.ndarray | None  # [N, 2] float32, read-only
    texture: np.ndarray | None  # [H, W, 4] uint8 sRGB, read-only
    double_sided: bool
    alpha_mode: str  # OPAQUE | MASK | BLEND
    alpha_cutoff: float
    emissive: tuple[float, float, float]  # linear emissiveFactor × emissiveStrength
    emissive_uvs: np.ndarray | None  # [N, 2] float32, read-only
    emissive_texture: np.ndarray | None  # [H, W, 4] uint8 sRGB, read-only


def _read_only(a: np.ndarray | None) -> np.ndarray | None:
    # Static arrays are handed to every PosedPrimitive without copying; read-only keeps one caller's edit
    # from silently changing every later pose.
    if a is not None:
        a.flags.writeable = False
    return a


def texture_transform_uvs(uvs: np.ndarray, transform: dict) -> np.ndarray:
    """KHR_texture_transform on UVs [N, 2]: uv' = T·R·S·uv, R(u, v) = (cos r·u + sin r·v, −sin r·u + cos r·v).

    That rotation sign is the one under which the extension's README example (offset [0, 1], rotation π/2,
    scale 0.5) selects the lower-left quadrant, and the one three.js and the Khronos viewer use.
    """
    offset = np.asarray(transform.get("offset", [0.0, 0.0]), dtype=np.float64).reshape(2)
    scale = np.asarray(transform.get("scale", [1.0, 1.0]), dtype=np.float64).reshape(2)
    r = float(transform.get("rotation", 0.0))
    c, s = math.cos(r), math.sin(r)
    su, sv = uvs[:, 0] * scale[0], uvs[:, 1] * scale[1]
    return np.stack([c * su + s * sv + offset[0], -s * su + c * sv + offset[1]], axis=1)


def decode_image(data: bytes, what: str) -> np.ndarray:
    """Encoded PNG/JPEG/... bytes → [H, W, 4] uint8 RGBA (sRGB values untouched)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgba = image.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise _Invalid(f"{what} could not be decoded ({e})") from None
    return np.asarray(rgba, dtype=np.uint8)


SPEC_GLOSS = "KHR_materials_pbrSpecularGlossiness"
WEBP = "EXT_texture_webp"


class _MaterialReader:
    """glTF material index → :class:`_Material`, decoding each image once."""

    def __init__(self, gltf: pygltflib.GLTF2, buffers: list[bytes], base_dir: Path):
        self.gltf, self.buffers, self.base_dir = gltf, buffers, base_dir
        self._images: dict[int, np.ndarray] = {}

    def image(self, index: int) -> np.ndarray:
        if index not in self._images:
            image = _item(self.gltf.images, index, "image")
            what = f"image {index}"
            if image.bufferView is not None:
                data = bytes(buffer_view_bytes(self.gltf, self.buffers, image.bufferView))
            elif image.uri:
                data = read_uri(image.uri, self.base_dir, what)
            else:
                raise _Invalid(f"{what} has neither a uri nor a bufferView")
            self._images[index] = _read_only(decode_image(data, what))
        return self._images[index]

    def texture_info(self, info) -> tuple[np.ndarray | None, int, dict | None]:
        """A textureInfo → (image [H, W, 4] uint8 | None, TEXCOORD set, KHR_texture_transform | None)."""
        if isinstance(info, dict):  # one inside an extension, which pygltflib leaves as JSON
            info = pygltflib.TextureInfo(index=info.get("index"), texCoord=info.get("texCoord"),
                                         extensions=info.get("extensions"))
        if info is None or info.index is None:
            return None, 0, None
        tex = _item(self.gltf.textures, info.index, "texture")
        # EXT_texture_webp's source first, as the extension asks of a client that reads WebP; `source` is then the
        # optional PNG/JPEG fallback
        webp = (tex.extensions or {}).get(WEBP)
        source = webp["source"] if isinstance(webp, dict) and webp.get("source") is not None else tex.source
        if source is None:  # a source only via an extension we do not read (e.g. KTX2): untextured
            return None, 0, None
        tex_coord = info.texCoord or 0
        uv_transform = (info.extensions or {}).get("KHR_texture_transform")
        if uv_transform is not None:
            tex_coord = uv_transform.get("texCoord", tex_coord)
        return self.image(source), tex_coord, uv_transform

    def material(self, index: int | None) -> _Material:
        if index is None:  # spec default material: white, opaque, single-sided, not emissive
            return _Material()
        material = _item(self.gltf.materials, index, "material")
        pbr = material.pbrMetallicRoughness
        out = _Material(double_sided=bool(material.doubleSided))
        spec_gloss = (material.extensions or {}).get(SPEC_GLOSS)
        if spec_gloss is not None and not isinstance(spec_gloss, dict):
            raise _Invalid(f"material {index}: {SPEC_GLOSS} must be an object, not {spec_gloss!r}")
        if spec_gloss is not None:  # takes precedence (its spec); the renderer shades with the diffuse colour only
            factor, info = spec_gloss.get("diffuseFactor"), spec_gloss.get("diffuseTexture")
        else:
            factor, info = (None, None) if pbr is None else (pbr.baseColorFactor, pbr.baseColorTexture)
        if factor is not None:
            out.factor = _rgba_factor(factor, f"material {index}")
        out.texture, out.tex_coord, out.uv_transform = self.texture_info(info)
        mode = material.alphaMode or "OPAQUE"
        if mode not in ("OPAQUE", "MASK", "BLEND"):
            raise _Invalid(f"material {index}: unknown alphaMode {mode!r}")
        out.alpha_mode = mode
        out.alpha_cutoff = 0.5 if material.alphaCutoff is None else float(material.alphaCutoff)
        emissive = np.zeros(3) if material.emissiveFactor is None else np.asarray(material.emissiveFactor, float)
        strength = (material.extensions or {}).get("KHR_materials_emissive_strength", {}).get("emissiveStrength")
        out.emissive = emissive.reshape(3) * (1.0 if strength is None else float(strength))
        if out.emissive.any():  # a texture under a zero factor contributes nothing: skip decoding it
            out.emissive_texture, out.emissive_tex_coord, out.emissive_uv_transform = self.texture_info(
                material.emissiveTexture
            )
        return out


def _rgba_factor(values, what: str) -> np.ndarray:
    try:
        factor = np.asarray(values, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        raise _Invalid(f"{what}: the base colour factor must be 4 numbers, not {values!r}") from None
    if not np.isfinite(factor).all():
        raise _Invalid(f"{what}: the base colour factor must be finite, not {values!r}")
    return factor


@dataclass
class _Material:
    """What the renderer needs of one glTF material (spec defaults); colours linear."""

    factor: np.ndarray = field(default_factory=lambda: np.ones(4))  # [4] baseColorFactor
    texture: np.ndarray | None = None  # [H, W, 4] uint8 sRGB base colour
    tex_coord: int = 0
    uv_transform: dict | None = None
    double_sided: bool = False
    alpha_mode: str = "OPAQUE"  # OPAQUE | MASK | BLEND
    alpha_cutoff: float = 0.5
    emissive: np.ndarray = field(default_factory=lambda: np.zeros(3))  # [3] emissiveFactor × emissiveStrength
    emissive_texture: np.ndarray | None = None  # [H, W, 4] uint8 sRGB
    emissive_tex_coord: int = 0
    emissive_uv_transform: dict | None = None


def _attribute_sets(attributes: dict, prefix: str) -> list[int]:
    """Accessor indices of PREFIX_0, PREFIX_1, ... in order, stopping at the first gap (spec: sets are dense)."""
    found, n = [], 0
    while attributes.get(f"{prefix}_{n}") is not None:
        found.append(attributes[f"{prefix}_{n}"])
        n += 1
    return found


def read_primitive(reader: AccessorReader, materials: _MaterialReader, primitive, what: str) -> _Primitive | None:
    """Decode one mesh primitive; None for topologies without triangles (points, lines)."""
    mode = _triangle_mode(primitive, what)
    if mode is None:
        return None
    attributes = _primitive_attributes(primitive, what)
    decompressed = decompressed_reader(reader, primitive, attributes, what)
    if decompressed is not reader:
        reader, mode = decompressed, _TRIANGLES  # Draco decodes strips too into a triangle list (its faces)
    positions = reader.floats(attributes["POSITION"])
    n = len(positions)
    if positions.shape[1] != 3:
        raise _Invalid(f"{what}: POSITION must be VEC3")
    vertices = _VertexAttributes(reader, attributes, n, what)
    faces = triangulate(_vertex_indices(reader, primitive.indices, n, what), mode)

    normals = vertices.floats("NORMAL", (3,)) if "NORMAL" in attributes else None
    colors = vertices.colors()
    material = materials.material(primitive.material)
    colors = colors * material.factor
    uvs = vertices.texture_uvs(material.texture, material.tex_coord, material.uv_transform)
    texture = material.texture if uvs is not None else None
    emissive_uvs = vertices.texture_uvs(material.emissive_texture, material.emissive_tex_coord,
                                        material.emissive_uv_transform)
    emissive_texture = material.emissive_texture if emissive_uvs is not None else None

    position_targets, normal_targets = _morph_targets(reader, primitive.targets or [], n, normals is not None, what)
    joints, weights, unweighted = _skin_weights(reader, attributes, n, what)

    if normals is None:
        # Flat shading (spec: "client implementations MUST calculate flat normals"): give every face its own
        # three vertices so per-face normals can be written after posing.
        corner = faces.reshape(-1)
        positions, colors, uvs, emissive_uvs, joints, weights, unweighted = (
            None if values is None else values[corner]
            for values in (positions, colors, uvs, emissive_uvs, joints, weights, unweighted)
        )
        position_targets = position_targets[:, corner] if position_targets is not None else None
        faces = np.arange(len(corner), dtype=np.int64).reshape(-1, 3)

    faces = faces.astype(np.uint32)
    return _Primitive(
        positions=positions,
        normals=normalize_rows(normals, (0.0, 0.0, 1.0)) if normals is not None else None,
        indices=_read_only(faces),
        flipped_indices=_read_only(faces[:, [0, 2, 1]].copy()),
        position_targets=position_targets,
        normal_targets=normal_targets,
        joints=joints,
        weights=weights,
        unweighted=unweighted,
        colors=_read_only(np.clip(colors, 0.0, 1.0).astype(np.float32)),
        uvs=_read_only(uvs.astype(np.float32)) if uvs is not None else None,
        texture=texture,
        double_sided=material.double_sided,
        alpha_mode=material.alpha_mode,
        alpha_cutoff=material.alpha_cutoff,
        emissive=tuple(float(x) for x in material.emissive),
        emissive_uvs=_read_only(emissive_uvs.astype(np.float32)) if emissive_uvs is not None else None,
        emissive_texture=emissive_texture,
    )


def _triangle_mode(primitive, what: str) -> int | None:
    """The primitive's triangle topology (list, strip or fan); None for points and lines."""
    mode = _TRIANGLES if primitive.mode is None else primitive.mode
    if mode in (0, 1, 2, 3):
        return None
    if mode not in (_TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN):
        raise _Invalid(f"{what}: unknown primitive mode {mode!r}")
    return mode


def _primitive_attributes(primitive, what: str) -> dict[str, int]:
    """Attribute name → accessor index, the unset ones left out; POSITION is required."""
    raw = primitive.attributes
    # pygltflib turns a non-empty attribute object into Attributes but leaves an empty one a plain dict.
    attributes = {k: v for k, v in (raw if isinstance(raw, dict) else vars(raw)).items() if v is not None}
    if "POSITION" not in attributes:
        raise _Invalid(f"{what}: no POSITION attribute")
    return attributes


def _vertex_indices(reader: AccessorReader, indices: int | None, n: int, what: str) -> np.ndarray:
    """The primitive's vertex indices [K], checked against its ``n`` vertices."""
    if indices is None:
        return np.arange(n, dtype=np.int64)  # spec: non-indexed geometry draws vertices in order
    flat = reader.ints(indices, what + " indices")[:, 0]
    if len(flat) and (flat.max() >= n or flat.min() < 0):
        raise _Invalid(f"{what}: index {flat.max()} out of range for {n} vertices")
    return flat


class _VertexAttributes:
    """The per-vertex attributes of one primitive of ``n`` vertices, each checked to have one value per vertex."""

    def __init__(self, reader: AccessorReader, attributes: dict[str, int], n: int, what: str):
        self.reader, self.attributes, self.n, self.what = reader, attributes, n, what

    def floats(self, name: str, widths: tuple[int, ...]) -> np.ndarray:
        values = self.reader.floats(self.attributes[name])
        if len(values) != self.n or values.shape[1] not in widths:
            raise _Invalid(f"{self.what}: {name} has {len(values)}×{values.shape[1]} values, "
                           f"expected {self.n}×{widths}")
        return values

    def colors(self) -> np.ndarray:
        """COLOR_0 as RGBA [N, 4] (alpha 1 where it is RGB); white without it."""
        if "COLOR_0" not in self.attributes:
            return np.ones((self.n, 4))
        colors = self.floats("COLOR_0", (3, 4))
        if colors.shape[1] == 3:
            colors = np.concatenate([colors, np.ones((self.n, 1))], axis=1)
        return colors

    def texture_uvs(self, texture: np.ndarray | None, tex_coord: int, uv_transform: dict | None) -> np.ndarray | None:
        """UVs [N, 2] for one texture, or None when there is no texture or the primitive lacks its TEXCOORD set."""
        name = f"TEXCOORD_{tex_coord}"
        if texture is None or name not in self.attributes:
            return None  # the texture cannot be mapped without its UV set: draw the factor colour alone
        uvs = self.floats(name, (2,))
        return texture_transform_uvs(uvs, uv_transform) if uv_transform is not None else uvs


def _morph_targets(reader: AccessorReader, targets: list, n: int, with_normals: bool,
                   what: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Morph-target deltas of positions [M, N, 3] and (where the primitive has normals) normals [M, N, 3]; None
    without targets. A target that omits an attribute moves it by zero."""
    if not targets:
        return None, None
    position_targets = np.zeros((len(targets), n, 3))
    normal_targets = np.zeros((len(targets), n, 3)) if with_normals else None
    for m, target in enumerate(targets):
        target = target if isinstance(target, dict) else vars(target)
        if target.get("POSITION") is not None:
            position_targets[m] = _target_deltas(reader, target["POSITION"], n, f"{what} target {m} POSITION")
        if normal_targets is not None and target.get("NORMAL") is not None:
            normal_targets[m] = _target_deltas(reader, target["NORMAL"], n, f"{what} target {m} NORMAL")
    return position_targets, normal_targets


def _skin_weights(reader: AccessorReader, attributes: dict, n: int, what: str):
    """(joints [N, 4k] int, weights [N, 4k] summing to 1, unweighted [N] bool) of JOINTS_n / WEIGHTS_n, or
    (None, None, None) for a primitive without skinning attributes."""
    joint_sets, weight_sets = _attribute_sets(attributes, "JOINTS"), _attribute_sets(attributes, "WEIGHTS")
    if not joint_sets:
        return None, None, None
    if len(joint_sets) != len(weight_sets):
        raise _Invalid(f"{what}: {len(joint_sets)} JOINTS_n sets but {len(weight_sets)} WEIGHTS_n sets")
    joints = np.concatenate([reader.ints(a, what + " JOINTS") for a in joint_sets], axis=1)
    weights = np.concatenate([reader.floats(a) for a in weight_sets], axis=1)
    if joints.shape != (n, 4 * len(joint_sets)) or weights.shape != joints.shape:
        raise _Invalid(f"{what}: JOINTS_n/WEIGHTS_n must be VEC4 with one entry per vertex")
    # Weights should sum to 1 but quantised or sloppy exports drift; renormalise so the mesh cannot shrink.
    total = weights.sum(axis=1, keepdims=True)
    unweighted = total[:, 0] <= 0
    weights = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.0)
    joints = np.where(weights > 0, joints, 0)  # zero-weight slots may hold any index; make them harmless
    return joints, weights, unweighted


def _target_deltas(reader: AccessorReader, accessor: int, n: int, what: str) -> np.ndarray:
    deltas = reader.floats(accessor)
    if deltas.shape != (n, 3):
        raise _Invalid(f"{what}: expected {n} VEC3 deltas, got {deltas.shape[0]}×{deltas.shape[1]}")
    return deltas


# --------------------------------------------------------------------------------------------------------------
# Morphing and skinning (spec §3.7.2.2, §3.7.3)
# --------------------------------------------------------------------------------------------------------------


def apply_morph_targets(base: np.ndarray, deltas: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    """base [N, 3] + Σ_m weights[m]·deltas[m] with deltas [M, N, 3], weights [M]."""
    if deltas is None or not np.any(weights):
        return base
    m = min(len(weights), len(deltas))
    return base + np.tensordot(weights[:m], deltas[:m], axes=1)


def joint_matrices(mesh_global: np.ndarray, joint_globals: np.ndarray, inverse_bind: np.ndarray) -> np.ndarray:
    """Spec joint matrices [J, 4, 4] = inverse(G(mesh node)) · G(joint_j) · inverseBindMatrix_j.

    Multiplying these by G(mesh node) — the transform a renderer still applies to the skinned mesh — gives
    G(joint_j)·IBM_j: the mesh node's own transform cancels, which is what "the skinned mesh ignores its node
    transform" means. pose() uses that product directly (``joint_globals @ inverse_bind``) so a singular mesh-node
    transform cannot break skinning; this function is the literal formula, kept for reference and tests.
    """
    return np.linalg.inv(mesh_global) @ joint_globals @ inverse_bind


def skin_vertices(
    positions: np.ndarray,
    normals: np.ndarray | None,
    joints: np.ndarray,
    weights: np.ndarray,
    matrices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Linear blend skinning: v' = (Σ_k w_k·M_{j_k})·v for every vertex.

    positions [N, 3]; normals [N, 3] or None; joints [N, I] int; weights [N, I] (I = 4 per JOINTS_n set);
    matrices [J, 4, 4]. Returns (positions [N, 3], normals [N, 3] or None, det [N]) where normals are moved by the
    blended matrix's inverse transpose and det is the blended 3×3 determinant (negative where the skin mirrors).
    """
    # Blend only the affine 3×4 part: the bottom row of every joint matrix is (0, 0, 0, 1).
    blended = np.einsum("ni,nirc->nrc", weights, matrices[:, :3, :][joints])  # [N, 3, 4]
    linear = blended[:, :, :3]
    skinned = np.einsum("nrc,nc->nr", linear, positions) + blended[:, :, 3]
    r0, r1, r2, det = cofactor_columns(linear)
    skinned_normals = None
    if normals is not None:
        # det·M⁻ᵀ·n; multiply by sign(det) so the normal keeps pointing out of a mirrored surface.
        cof_n = r0 * normals[:, :1] + r1 * normals[:, 1:2] + r2 * normals[:, 2:]
        skinned_normals = normalize_rows(cof_n * np.sign(det)[:, None], (0.0, 0.0, 1.0))
    return skinned, skinned_normals, det


def flat_normals(positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Face normals written to each face's own vertices: positions [N, 3], CCW faces [F, 3] → normals [N, 3].

    Only meaningful when no vertex is shared between faces (read_primitive unshares them when NORMAL is absent).
    """
    corners = positions[indices]  # [F, 3, 3]
    face = normalize_rows(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), (0.0, 0.0, 1.0))
    normals = np.empty_like(positions)
    normals[indices.reshape(-1)] = np.repeat(face, 3, axis=0)
    return normals


# --------------------------------------------------------------------------------------------------------------
# Scene graph (spec §3.5)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Skin:
    joints: np.ndarray  # [J] node indices
    inverse_bind: np.ndarray  # [J, 4, 4]


@dataclass
class _Draw:
    """One mesh instance: a scene node that draws a mesh (the same mesh may be drawn by several nodes)."""

    node: int
    mesh: int
    skin: _Skin | None
    default_weights: np.ndarray  # [M] morph weights when no channel drives them


def hierarchy_levels(gltf: pygltflib.GLTF2) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Group every node by depth for batched world transforms; refuse nodes with two parents and cycles.

    Returns (levels, parent [n] with −1 for roots); levels[d] = (nodes at depth d, their parents).
    """
    n = len(gltf.nodes)
    parent = np.full(n, -1, dtype=np.int64)
    for p, node in enumerate(gltf.nodes):
        for child in node.children or []:
            _item(gltf.nodes, child, "node")
            if parent[child] != -1 or child == p:
                raise _Invalid(f"node {child} has more than one parent (the node hierarchy must be a tree)")
            parent[child] = p
    levels, placed = [], np.zeros(n, dtype=bool)
    frontier = np.flatnonzero(parent == -1)
    while len(frontier):
        levels.append((frontier, parent[frontier]))
        placed[frontier] = True
        frontier = np.flatnonzero(~placed & (parent >= 0) & placed[np.maximum(parent, 0)])
    if not placed.all():
        raise _Invalid(f"node hierarchy has a cycle through node {int(np.flatnonzero(~placed)[0])}")
    return levels, parent


def scene_nodes(gltf: pygltflib.GLTF2, parent: np.ndarray) -> list[int]:
    """Nodes of the displayed scene (``scene``, else scene 0, else every root), depth-first, parents first."""
    if gltf.scenes:
        index = gltf.scene if gltf.scene is not None else 0
        roots = list(_item(gltf.scenes, index, "scene").nodes or [])
    else:
        roots = [int(i) for i in np.flatnonzero(parent == -1)]
    order, stack = [], list(reversed(roots))
    seen = set()
    while stack:
        node = stack.pop()
        _item(gltf.nodes, node, "node")
        if node in seen:
            raise _Invalid(f"scene lists node {node} more than once")
        seen.add(node)
        order.append(node)
        stack.extend(reversed(gltf.nodes[node].children or []))
    return order


def read_skin(gltf: pygltflib.GLTF2, reader: AccessorReader, index: int) -> _Skin:
    skin = _item(gltf.skins, index, "skin")
    for j in skin.joints or []:
        _item(gltf.nodes, j, "node")
    joints = np.array(skin.joints or [], dtype=np.int64)
    if len(joints) == 0:
        raise _Invalid(f"skin {index} has no joints")
    if skin.inverseBindMatrices is None:
        inverse_bind = np.tile(np.eye(4), (len(joints), 1, 1))  # spec default: identity
    else:
        flat = reader.floats(skin.inverseBindMatrices)
        if flat.shape[1] != 16 or len(flat) < len(joints):
            raise _Invalid(f"skin {index}: inverseBindMatrices must be {len(joints)} MAT4s")
        inverse_bind = column_major_matrices(flat[: len(joints)])
    return _Skin(joints=joints, inverse_bind=inverse_bind)


# --------------------------------------------------------------------------------------------------------------
# The asset
# --------------------------------------------------------------------------------------------------------------


class GltfAsset:
    """A loaded glTF scene with one chosen animation; :meth:`pose` evaluates it at any time.

    Build it with :func:`load_gltf`.
    """

    path: Path
    uid: str
    animation_names: list[str]
    animation_index: int | None
    has_animation: bool
    duration: float
    num_triangles: int
    normalization: tuple[float, np.ndarray]

    def __init__(self, *, path, animation_names, animation_index, duration, nodes, levels, draws, meshes, groups):
        self.path = Path(path)
        self.uid = self.path.stem
        self.animation_names = animation_names
        self.animation_index = animation_index
        self.has_animation = animation_index is not None
        self.duration = float(duration)
        self._rest_translation, self._rest_rotation, self._rest_scale, self._matrix_nodes, self._matrices = nodes
        self._levels = levels
        self._draws: list[_Draw] = draws
        self._meshes: dict[int, list[_Primitive]] = meshes
        self._groups: list[_ChannelGroup] = groups
        self.num_triangles = sum(len(p.indices) for d in draws for p in meshes[d.mesh])
        self.normalization = (1.0, np.zeros(3))
        self.normalization = self._normalization_at_frame0()

    def __repr__(self) -> str:
        animation = self.animation_names[self.animation_index] if self.has_animation else None
        return (
            f"GltfAsset({self.uid!r}, animation={animation!r}, duration={self.duration:.3f}s, "
            f"triangles={self.num_triangles})"
        )

    # -- time ------------------------------------------------------------------------------------------------

    def frame_times(self, num_frames: int = 24, mode: str = "official", fps: float = 24.0) -> np.ndarray:
        """Animation times in seconds [num_frames] for the rendered frames.

        "official": timeline frames 0…T−1 played at ``fps`` (t_i = i/fps), as the authors' Blender renders did.
        "clip": spread over the whole clip, t_i = duration·i/(T−1) (all zeros without an animation).
        """
        num_frames = operator.index(num_frames)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if mode == "official":
            if not fps > 0:
                raise ValueError(f"fps must be positive, got {fps}")
            return np.arange(num_frames, dtype=np.float64) / float(fps)
        if mode == "clip":
            if num_frames == 1 or not self.has_animation:
                return np.zeros(num_frames)
            return self.duration * np.arange(num_frames, dtype=np.float64) / (num_frames - 1)
        raise ValueError(f"unknown frame_times mode {mode!r} (expected 'official' or 'clip')")

    # -- posing ----------------------------------------------------------------------------------------------

    def pose(self, t: float, normalize: bool = True) -> PosedMesh:
        """The scene at time t seconds (clamped to the clip's keys); normalised space unless normalize=False."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"pose time must be finite, got {t}")
        world, node_weights = self._world_transforms(t)
        scale, offset = self.normalization if normalize else (1.0, None)
        primitives = []
        for draw in self._draws:
            weights = node_weights.get(draw.node, draw.default_weights)
            skin_matrices = None
            if draw.skin is not None:
                # Equals G(mesh node) · joint_matrices(...): the mesh node's transform cancels (see joint_matrices).
                skin_matrices = world[draw.skin.joints] @ draw.skin.inverse_bind
            for prim in self._meshes[draw.mesh]:
                primitives.append(_pose_primitive(prim, world[draw.node], skin_matrices, weights, scale, offset))
        return PosedMesh(primitives)

    def _world_transforms(self, t: float) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """World matrices of all nodes [n, 4, 4] and animated morph weights {node: [M]} at time t."""
        translation, rotation, scale = self._rest_translation, self._rest_rotation, self._rest_scale
        node_weights: dict[int, np.ndarray] = {}
        if self._groups:
            translation, rotation, scale = translation.copy(), rotation.copy(), scale.copy()
            for group in self._groups:
                # Channels override the node's static TRS component; the other components stay static.
                sampled = sample_sampler(group.times, group.values, group.interpolation, t, group.is_rotation)
                if len(group.translation_rows):
                    translation[group.nodes[group.translation_rows]] = sampled[group.translation_rows]
                if len(group.scale_rows):
                    scale[group.nodes[group.scale_rows]] = sampled[group.scale_rows]
                if len(group.rotation_rows):
                    rotation[group.nodes[group.rotation_rows]] = sampled[group.rotation_rows]
                for row in group.weight_rows:
                    node_weights[int(group.nodes[row])] = sampled[row]
        local = trs_matrices(translation, rotation, scale)
        local[self._matrix_nodes] = self._matrices
        return global_transforms(local, self._levels), node_weights

    def _normalization_at_frame0(self) -> tuple[float, np.ndarray]:
        """(scale, offset [3]) putting the frame-0 scene in the unit cube at the origin: (p + offset)·scale."""
        low, high = self.pose(0.0, normalize=False).bounds()
        low, high = low.astype(np.float64), high.astype(np.float64)
        extent = float((high - low).max())
        if not math.isfinite(extent):
            raise _Invalid("the scene's vertex positions are not finite at t = 0")
        return (1.0 / extent if extent > 0 else 1.0), -(low + high) / 2.0


def _pose_primitive(
    prim: _Primitive,
    node_world: np.ndarray,
    skin_matrices: np.ndarray | None,
    morph_weights: np.ndarray,
    scale: float,
    offset: np.ndarray | None,
) -> PosedPrimitive:
    """Morph, then skin (or place rigidly by the node's world matrix [4, 4]), then normalise one primitive."""
    positions = apply_morph_targets(prim.positions, prim.position_targets, morph_weights)
    normals = prim.normals
    if normals is not None and prim.normal_targets is not None and np.any(morph_weights):
        normals = apply_morph_targets(normals, prim.normal_targets, morph_weights)
    indices = prim.indices
    if skin_matrices is not None and prim.joints is not None:
        positions_w, normals_w, det = skin_vertices(positions, normals, prim.joints, prim.weights, skin_matrices)
        if prim.unweighted.any():  # no influences at all: keep the vertex rigid with its node
            rigid = prim.unweighted
            positions_w[rigid] = positions[rigid] @ node_world[:3, :3].T + node_world[:3, 3]
            if normals_w is not None:
                normals_w[rigid] = _rigid_normals(normals[rigid], node_world)
            det[rigid] = np.linalg.det(node_world[:3, :3])
        # Faces a skin mirrors would turn clockwise; restore counter-clockwise front faces.
        mirrored = det[prim.indices[:, 0]] < 0
        if mirrored.any():
            indices = np.where(mirrored[:, None], prim.flipped_indices, prim.indices)
    else:
        positions_w = positions @ node_world[:3, :3].T + node_world[:3, 3]
        normals_w = _rigid_normals(normals, node_world) if normals is not None else None
        if np.linalg.det(node_world[:3, :3]) < 0:  # spec: negative determinant reverses the winding
            indices = prim.flipped_indices
    if normals_w is None:
        normals_w = flat_normals(positions_w, indices)
    if offset is not None:
        positions_w = (positions_w + offset) * scale
    return PosedPrimitive(
        positions=positions_w.astype(np.float32),
        normals=normals_w.astype(np.float32),
        indices=indices,
        colors=prim.colors,
        uvs=prim.uvs,
        texture=prim.texture,
        double_sided=prim.double_sided,
        alpha_mode=prim.alpha_mode,
        alpha_cutoff=prim.alpha_cutoff,
        emissive=prim.emissive,
        emissive_uvs=prim.emissive_uvs,
        emissive_texture=prim.emissive_texture,
    )


def _rigid_normals(normals: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Normals [N, 3] through one node matrix: by its inverse transpose (sign-corrected cofactor), renormalised."""
    r0, r1, r2, det = cofactor_columns(world[:3, :3])
    normal_matrix = np.stack([r0, r1, r2], axis=1) * (1.0 if det >= 0 else -1.0)  # columns r0 r1 r2
    return normalize_rows(normals @ normal_matrix.T, (0.0, 0.0, 1.0))


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_gltf(path, animation: int | str | None = 0, max_triangles: int = MAX_TRIANGLES) -> GltfAsset:
    """Load a .gltf/.glb scene and choose one animation (index, name, or None for the rest pose).

    Raises AssetError (message ``f"{path}: {problem}"``) for anything that is not a loadable glTF 2.0 scene.
    """
    path = Path(path)
    try:
        return _load(path, animation, max_triangles)
    except AssetError:
        raise
    except _Invalid as e:
        raise AssetError(f"{path}: {e}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, struct.error, OverflowError, MemoryError) as e:
        # Shapes or types the checks above did not anticipate: still name the file, never leak a bare error.
        raise AssetError(f"{path}: malformed glTF ({type(e).__name__}: {e})") from e


def _read_document(path: Path) -> tuple[pygltflib.GLTF2, dict, bytes | None]:
    """Parse the file into pygltflib objects, the raw JSON document, and the GLB BIN chunk (if any)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Invalid("file not found") from None
    except OSError as e:
        raise _Invalid(f"cannot read file ({e.strerror or e})") from None
    glb_bin = None
    if data[:4] == _GLB_MAGIC or path.suffix.lower() == ".glb":
        json_bytes, glb_bin = parse_glb(data)
    else:
        json_bytes = data
    try:
        text = json_bytes.decode("utf-8-sig")
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise _Invalid(f"not a glTF file: invalid JSON ({e})") from None
    check_gltf_json(doc)
    check_decoders_available(doc.get("extensionsRequired") or [])
    try:
        gltf = pygltflib.GLTF2.gltf_from_json(text)
    except Exception as e:  # dataclasses_json raises assorted types on wrongly-typed properties
        raise _Invalid(f"malformed glTF JSON ({type(e).__name__}: {e})") from None
    return gltf, doc, glb_bin


def choose_animation(names: list[str], animation: int | str | None) -> int | None:
    """Index of the requested animation (by index or name); None for the rest pose or a file without any."""
    if animation is None:
        return None
    if isinstance(animation, bool):
        raise _Invalid(f"animation must be an index, a name or None, not {animation!r}")
    available = ", ".join(repr(n) for n in names) if names else "none (the file has no animations)"
    if isinstance(animation, str):
        if animation in names:
            return names.index(animation)
        raise _Invalid(f"animation {animation!r} not found; available animations: {available}")
    try:
        index = operator.index(animation)
    except TypeError:
        raise _Invalid(f"animation must be an index, a name or None, not {type(animation).__name__}") from None
    if not names and index == 0:
        return None  # the default request on a static file: rest pose
    if not 0 <= index < len(names):
        raise _Invalid(f"animation index {animation!r} out of range; available animations: {available}")
    return index


def _load(path: Path, animation, max_triangles: int) -> GltfAsset:
    gltf, doc, glb_bin = _read_document(path)
    raw_nodes = doc.get("nodes") or []  # pygltflib's Node drops the `weights` property; read it from the JSON
    names = [a.name or f"animation_{i}" for i, a in enumerate(gltf.animations)]
    animation_index = choose_animation(names, animation)

    levels, parent = hierarchy_levels(gltf)
    shown = scene_nodes(gltf, parent)
    _refuse_oversized_scene(gltf, shown, max_triangles)  # from accessor counts, before decoding any buffer

    buffers = decode_meshopt_views(gltf, load_buffers(gltf, path.parent, glb_bin))
    reader = AccessorReader(gltf, buffers)
    materials = _MaterialReader(gltf, buffers, path.parent)

    meshes: dict[int, list[_Primitive]] = {}
    skins: dict[int, _Skin] = {}
    draws: list[_Draw] = []
    morph_counts: dict[int, int] = {}
    for node_index in shown:
        node = gltf.nodes[node_index]
        if node.mesh is None:
            continue
        mesh = gltf.meshes[node.mesh]
        if node.mesh not in meshes:
            meshes[node.mesh] = _read_mesh(reader, materials, mesh, node.mesh)
        num_targets = max((len(p.targets or []) for p in mesh.primitives or []), default=0)
        default_weights = _default_morph_weights(mesh, raw_nodes[node_index], num_targets)
        skin = None
        if node.skin is not None:
            if node.skin not in skins:
                skins[node.skin] = read_skin(gltf, reader, node.skin)
            skin = skins[node.skin]
            _check_joint_indices(meshes[node.mesh], node.mesh, skin, node.skin)
        morph_counts[node_index] = num_targets
        draws.append(_Draw(node=node_index, mesh=node.mesh, skin=skin, default_weights=default_weights))
    if not any(meshes[d.mesh] for d in draws):
        raise _Invalid("scene has no triangles to draw")

    groups, duration = [], 0.0
    if animation_index is not None:
        groups, duration = build_channel_groups(gltf, reader, animation_index, morph_counts)
    animated = {int(n) for g in groups for n in g.nodes}
    return GltfAsset(
        path=path,
        animation_names=names,
        animation_index=animation_index,
        duration=duration,
        nodes=_static_node_transforms(gltf, animated),
        levels=levels,
        draws=draws,
        meshes=meshes,
        groups=groups,
    )


def _refuse_oversized_scene(gltf: pygltflib.GLTF2, shown: list[int], max_triangles: int) -> None:
    """_Invalid when the meshes of the shown nodes hold more than ``max_triangles`` triangles in all."""
    total = 0
    for node in shown:
        if gltf.nodes[node].mesh is not None:
            mesh = _item(gltf.meshes, gltf.nodes[node].mesh, "mesh")
            total += sum(count_triangles(gltf, p) for p in mesh.primitives or [])
    if total > max_triangles:
        raise _Invalid(f"scene has {total:,} triangles, more than the limit of {max_triangles:,} (max_triangles)")


def _read_mesh(reader: AccessorReader, materials: _MaterialReader, mesh, mesh_index: int) -> list[_Primitive]:
    """The mesh's primitives that have triangles to draw."""
    decoded = [
        read_primitive(reader, materials, p, f"mesh {mesh_index} primitive {i}")
        for i, p in enumerate(mesh.primitives or [])
    ]
    return [p for p in decoded if p is not None and len(p.indices)]


def _default_morph_weights(mesh, raw_node, num_targets: int) -> np.ndarray:
    """A node's morph weights [num_targets] when no animation sets them. Spec: node.weights overrides mesh.weights;
    both default to zero. ``raw_node`` is the node's JSON object (pygltflib drops node.weights)."""
    default_weights = np.zeros(num_targets)
    node_weights = raw_node.get("weights") if isinstance(raw_node, dict) else None
    for source in (mesh.weights, node_weights):
        if source:
            source = np.asarray(source, dtype=np.float64).reshape(-1)[:num_targets]
            default_weights[: len(source)] = source
    return default_weights


def _check_joint_indices(primitives: list[_Primitive], mesh_index: int, skin: _Skin, skin_index: int) -> None:
    """_Invalid when a primitive of the mesh names a joint the node's skin lacks."""
    for prim in primitives:
        if prim.joints is not None and prim.joints.size and prim.joints.max() >= len(skin.joints):
            raise _Invalid(
                f"mesh {mesh_index}: joint index {prim.joints.max()} but skin {skin_index} has "
                f"{len(skin.joints)} joints"
            )


def _static_node_transforms(gltf: pygltflib.GLTF2, animated: set[int]):
    """Rest TRS of every node ([n, 3], [n, 4], [n, 3]) plus the nodes whose local transform is a fixed matrix.

    A ``matrix`` node keeps its exact matrix unless an animation targets it; then it is decomposed into TRS so the
    channel can override one component (the spec forbids animating matrix nodes, but files do it).
    """
    n = len(gltf.nodes)
    translation, rotation, scale = np.zeros((n, 3)), np.tile([0.0, 0.0, 0.0, 1.0], (n, 1)), np.ones((n, 3))
    matrix_nodes, matrices = [], []
    for i, node in enumerate(gltf.nodes):
        if node.matrix is not None:
            matrix = column_major_matrices(np.asarray(node.matrix, dtype=np.float64).reshape(1, 16))[0]
            if i in animated:
                translation[i], rotation[i], scale[i] = decompose_matrix(matrix)
            else:
                matrix_nodes.append(i)
                matrices.append(matrix)
            continue
        if node.translation is not None:
            translation[i] = np.asarray(node.translation, dtype=np.float64).reshape(3)
        if node.rotation is not None:
            rotation[i] = normalize_rows(np.asarray(node.rotation, dtype=np.float64).reshape(4), (0, 0, 0, 1))
        if node.scale is not None:
            scale[i] = np.asarray(node.scale, dtype=np.float64).reshape(3)
    matrices = np.array(matrices).reshape(-1, 4, 4)
    return translation, rotation, scale, np.array(matrix_nodes, dtype=np.int64), matrices
