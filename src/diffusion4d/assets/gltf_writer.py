"""A small GLB (binary glTF 2.0) builder on top of pygltflib.

Everything goes into one binary buffer: each accessor gets its own buffer view, started on a 4-byte boundary, so
any component type is correctly aligned. The JSON is produced from plain Python floats and ints in insertion
order, so the same calls give a byte-identical file.

Typical use::

    b = GlbBuilder()
    mat = b.add_material((1, 0, 0, 1))
    mesh = b.add_mesh([Primitive(positions, normals, indices, material=mat)])
    node = b.add_node(mesh=mesh, translation=(0, 1, 0))
    b.add_animation([Channel(node, "rotation", times, quaternions)])
    glb = b.to_glb([node])
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pygltflib as g
from PIL import Image

from diffusion4d.io import write_bytes_atomic

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963

_COMPONENT_TYPES = {
    np.dtype(np.float32): g.FLOAT,
    np.dtype(np.uint8): g.UNSIGNED_BYTE,
    np.dtype(np.uint16): g.UNSIGNED_SHORT,
    np.dtype(np.uint32): g.UNSIGNED_INT,
}
_ACCESSOR_TYPES = {1: g.SCALAR, 2: g.VEC2, 3: g.VEC3, 4: g.VEC4, 16: g.MAT4}
_PATH_WIDTH = {"translation": 3, "rotation": 4, "scale": 3}
INTERPOLATIONS = ("LINEAR", "STEP", "CUBICSPLINE")


@dataclass
class MorphTarget:
    """Per-vertex displacements added (times the target's weight) to the base primitive."""

    positions: np.ndarray  # [N, 3]
    normals: np.ndarray | None = None  # [N, 3]


@dataclass
class Primitive:
    """One triangle list. ``colors`` are linear RGB(A); ``uvs`` follow glTF (v grows down the image)."""

    positions: np.ndarray  # [N, 3]
    normals: np.ndarray  # [N, 3], unit length
    indices: np.ndarray  # [F, 3] counter-clockwise front faces
    material: int | None = None
    colors: np.ndarray | None = None  # [N, 3] or [N, 4] in [0, 1]
    uvs: np.ndarray | None = None  # [N, 2]
    joints: np.ndarray | None = None  # [N, 4] indices into the skin's joint list
    weights: np.ndarray | None = None  # [N, 4], rows sum to 1
    targets: Sequence[MorphTarget] = field(default_factory=tuple)


@dataclass
class Channel:
    """One animated property of one node.

    ``values`` is [K, C] for LINEAR and STEP (C = 3 translation/scale, 4 rotation as xyzw, M for weights), and
    [K, 3, C] for CUBICSPLINE, holding (in-tangent, value, out-tangent) per keyframe as the spec orders them.
    """

    node: int
    path: str  # "translation" | "rotation" | "scale" | "weights"
    times: np.ndarray  # [K] seconds, strictly increasing
    values: np.ndarray
    interpolation: str = "LINEAR"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image [H, W, 3|4]; PIL writes no timestamps, so the bytes are reproducible."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"texture must be uint8 [H, W, 3|4], got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _floats(values) -> list[float]:
    # JSON must hold Python floats: numpy scalars are not serialisable and float32 reprs would be noisy
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


class GlbBuilder:
    """Accumulates glTF objects and one binary buffer; ``to_glb`` returns the finished file's bytes."""

    def __init__(self, generator: str = "diffusion4d"):
        self.gltf = g.GLTF2(asset=g.Asset(version="2.0", generator=generator))
        self._blob = bytearray()
        self._input_cache: dict[bytes, int] = {}  # channels sharing a time grid share one input accessor

    # -- buffer plumbing ---------------------------------------------------------------------------------------

    def _add_view(self, data: bytes, target: int | None = None) -> int:
        pad = -len(self._blob) % 4  # every view starts 4-byte aligned, whatever its component size
        self._blob.extend(b"\0" * pad)
        view = g.BufferView(buffer=0, byteOffset=len(self._blob), byteLength=len(data), target=target)
        self._blob.extend(data)
        self.gltf.bufferViews.append(view)
        return len(self.gltf.bufferViews) - 1

    def _add_accessor(self, array: np.ndarray, *, target: int | None = None, with_bounds: bool = False,
                      width: int | None = None) -> int:
        """Accessor over ``array`` [count, width] (or [count]); ``with_bounds`` writes per-component min/max."""
        array = np.ascontiguousarray(array)
        if array.dtype not in _COMPONENT_TYPES:
            raise TypeError(f"unsupported accessor dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ValueError("accessor data must be finite")
        width = width or (1 if array.ndim == 1 else int(np.prod(array.shape[1:])))
        flat = array.reshape(-1, width)
        view = self._add_view(flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes(), target)  # glTF: LE
        accessor = g.Accessor(
            bufferView=view,
            byteOffset=0,
            componentType=_COMPONENT_TYPES[array.dtype],
            count=len(flat),
            type=_ACCESSOR_TYPES[width],
        )
        if with_bounds:
            cast = float if array.dtype.kind == "f" else int
            accessor.min = [cast(v) for v in flat.min(0)]
            accessor.max = [cast(v) for v in flat.max(0)]
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    # -- materials and textures --------------------------------------------------------------------------------

    def add_texture(self, image: np.ndarray, *, nearest: bool = False) -> int:
        """Embed ``image`` (uint8 [H, W, 3|4], sRGB) as a PNG; returns the texture index."""
        view = self._add_view(encode_png(image))
        self.gltf.images.append(g.Image(bufferView=view, mimeType="image/png"))
        filt = g.NEAREST if nearest else g.LINEAR
        mip = g.NEAREST_MIPMAP_LINEAR if nearest else g.LINEAR_MIPMAP_LINEAR
        self.gltf.samplers.append(g.Sampler(magFilter=filt, minFilter=mip, wrapS=g.REPEAT, wrapT=g.REPEAT))
        self.gltf.textures.append(g.Texture(sampler=len(self.gltf.samplers) - 1, source=len(self.gltf.images) - 1))
        return len(self.gltf.textures) - 1

    def add_material(self, base_color: Sequence[float], *, metallic: float = 0.0, roughness: float = 0.8,
                     texture: int | None = None, double_sided: bool = False, name: str | None = None) -> int:
        """A metallic-roughness material; ``base_color`` is linear RGB or RGBA."""
        rgba = _floats(base_color) + [1.0] * (4 - len(base_color))
        pbr = g.PbrMetallicRoughness(
            baseColorFactor=rgba,
            metallicFactor=float(metallic),
            roughnessFactor=float(roughness),
            baseColorTexture=g.TextureInfo(index=texture) if texture is not None else None,
        )
        material = g.Material(name=name, pbrMetallicRoughness=pbr, doubleSided=bool(double_sided),
                              alphaMode=g.OPAQUE if rgba[3] >= 1.0 else g.BLEND)
        self.gltf.materials.append(material)
        return len(self.gltf.materials) - 1

    # -- meshes ------------------------------------------------------------------------------------------------

    def _vertex_attribute(self, values: np.ndarray, n: int, width: int, name: str, **kw) -> int:
        values = np.asarray(values)
        if values.shape != (n, width):
            raise ValueError(f"{name} must have shape ({n}, {width}), got {values.shape}")
        return self._add_accessor(values, target=ARRAY_BUFFER, **kw)

    def _primitive(self, p: Primitive) -> g.Primitive:
        positions = np.asarray(p.positions, dtype=np.float32)
        n = len(positions)
        indices = np.asarray(p.indices).reshape(-1)
        if indices.size % 3 or (indices.size and (indices.min() < 0 or indices.max() >= n)):
            raise ValueError("indices must be triangles referring to existing vertices")
        attrs = g.Attributes()
        attrs.POSITION = self._vertex_attribute(positions, n, 3, "positions", with_bounds=True)
        attrs.NORMAL = self._vertex_attribute(np.asarray(p.normals, np.float32), n, 3, "normals")
        if p.uvs is not None:
            attrs.TEXCOORD_0 = self._vertex_attribute(np.asarray(p.uvs, np.float32), n, 2, "uvs")
        if p.colors is not None:
            colors = np.asarray(p.colors, np.float32)
            attrs.COLOR_0 = self._vertex_attribute(colors, n, colors.shape[-1], "colors")
        if (p.joints is None) != (p.weights is None):
            raise ValueError("joints and weights come together")
        if p.joints is not None:
            weights = np.asarray(p.weights, np.float64)
            if weights.shape != (n, 4) or np.any(weights < 0) or not np.allclose(weights.sum(1), 1.0, atol=1e-4):
                raise ValueError("skin weights must be [N, 4], non-negative and sum to 1 per vertex")
            joints = np.where(weights > 0, np.asarray(p.joints), 0)  # validators flag joints listed with weight 0
            if joints.min() < 0:
                raise ValueError("joint indices must be non-negative")
            jtype = np.uint8 if joints.max() < 256 else np.uint16  # the narrowest type the spec allows
            attrs.JOINTS_0 = self._vertex_attribute(joints.astype(jtype), n, 4, "joints")
            attrs.WEIGHTS_0 = self._vertex_attribute((weights / weights.sum(1, keepdims=True)).astype(np.float32),
                                                     n, 4, "weights")
        itype = np.uint16 if n <= 65535 else np.uint32
        index_accessor = self._add_accessor(indices.astype(itype), target=ELEMENT_ARRAY_BUFFER)
        targets = []
        for t in p.targets:
            ta = g.Attributes()
            # the spec requires min/max on morph-target POSITION accessors too
            ta.POSITION = self._vertex_attribute(np.asarray(t.positions, np.float32), n, 3, "target positions",
                                                 with_bounds=True)
            if t.normals is not None:
                ta.NORMAL = self._vertex_attribute(np.asarray(t.normals, np.float32), n, 3, "target normals")
            targets.append(ta)
        return g.Primitive(attributes=attrs, indices=index_accessor, material=p.material, mode=g.TRIANGLES,
                           targets=targets)

    def add_mesh(self, primitives: Sequence[Primitive], *, weights: Sequence[float] | None = None,
                 name: str | None = None) -> int:
        """A mesh; ``weights`` are the default morph weights (all primitives must have the same target count)."""
        counts = {len(p.targets) for p in primitives}
        if len(counts) != 1:
            raise ValueError("all primitives of a mesh need the same number of morph targets")
        num_targets = counts.pop()
        if weights is not None and len(weights) != num_targets:
            raise ValueError(f"{len(weights)} default weights for {num_targets} morph targets")
        if weights is None and num_targets:
            weights = [0.0] * num_targets
        mesh = g.Mesh(name=name, primitives=[self._primitive(p) for p in primitives],
                      weights=_floats(weights) if weights is not None else [])
        self.gltf.meshes.append(mesh)
        return len(self.gltf.meshes) - 1

    def num_morph_targets(self, mesh: int) -> int:
        return len(self.gltf.meshes[mesh].primitives[0].targets)

    # -- nodes and skins ---------------------------------------------------------------------------------------

    def add_node(self, *, name: str | None = None, mesh: int | None = None, skin: int | None = None,
                 translation=None, rotation=None, scale=None, children: Sequence[int] = ()) -> int:
        """A node with TRS (rotation is a unit quaternion xyzw); children may also be attached later."""
        if rotation is not None and not np.isclose(np.linalg.norm(rotation), 1.0, atol=1e-5):
            raise ValueError("node rotation must be a unit quaternion (x, y, z, w)")
        node = g.Node(
            name=name, mesh=mesh, skin=skin,
            translation=_floats(translation) if translation is not None else None,
            rotation=_floats(rotation) if rotation is not None else None,
            scale=_floats(scale) if scale is not None else None,
            children=[int(c) for c in children],
        )
        self.gltf.nodes.append(node)
        return len(self.gltf.nodes) - 1

    def attach(self, parent: int, child: int) -> None:
        self.gltf.nodes[parent].children.append(int(child))

    def add_skin(self, joints: Sequence[int], inverse_bind_matrices: np.ndarray, *, skeleton: int | None = None,
                 name: str | None = None) -> int:
        """A skin over ``joints`` (node indices); ``inverse_bind_matrices`` [J, 4, 4] in row-major math form."""
        ibm = np.asarray(inverse_bind_matrices, dtype=np.float64)
        if ibm.shape != (len(joints), 4, 4):
            raise ValueError(f"need {len(joints)} inverse bind matrices [4, 4], got {ibm.shape}")
        column_major = np.ascontiguousarray(ibm.transpose(0, 2, 1)).astype(np.float32)  # glTF stores columns
        accessor = self._add_accessor(column_major.reshape(len(joints), 16), width=16)
        self.gltf.skins.append(g.Skin(name=name, joints=[int(j) for j in joints], skeleton=skeleton,
                                      inverseBindMatrices=accessor))
        return len(self.gltf.skins) - 1

    # -- animations --------------------------------------------------------------------------------------------

    def _input_accessor(self, times: np.ndarray) -> int:
        times = np.asarray(times, dtype=np.float32)
        if times.ndim != 1 or len(times) == 0 or np.any(np.diff(times) <= 0) or times[0] < 0:
            raise ValueError("keyframe times must be a non-empty, non-negative, strictly increasing 1-D array")
        key = times.tobytes()
        if key not in self._input_cache:
            self._input_cache[key] = self._add_accessor(times, with_bounds=True)  # min/max required on inputs
        return self._input_cache[key]

    def _channel_width(self, ch: Channel) -> int:
        if ch.path == "weights":
            mesh = self.gltf.nodes[ch.node].mesh
            if mesh is None or not self.num_morph_targets(mesh):
                raise ValueError(f"node {ch.node} has no morph targets to animate")
            return self.num_morph_targets(mesh)
        if ch.path not in _PATH_WIDTH:
            raise ValueError(f"unknown channel path {ch.path!r}")
        return _PATH_WIDTH[ch.path]

    def _output_accessor(self, ch: Channel) -> int:
        width = self._channel_width(ch)
        values = np.asarray(ch.values, dtype=np.float64)
        k = len(np.asarray(ch.times))
        expected = (k, 3, width) if ch.interpolation == "CUBICSPLINE" else (k, width)
        if values.shape != expected:
            raise ValueError(f"{ch.path} {ch.interpolation} values must have shape {expected}, got {values.shape}")
        if ch.path == "rotation" and ch.interpolation != "CUBICSPLINE":
            norms = np.linalg.norm(values, axis=-1)
            if not np.allclose(norms, 1.0, atol=1e-4):
                raise ValueError("rotation keyframes must be unit quaternions")
        values = values.astype(np.float32)
        if ch.path == "weights":  # weights outputs are scalars: K·M (×3 for cubic) in keyframe order
            return self._add_accessor(values.reshape(-1))
        return self._add_accessor(values.reshape(-1, width))

    def add_animation(self, channels: Sequence[Channel], name: str | None = None) -> int:
        """One animation with one sampler per channel."""
        samplers, targets = [], []
        for i, ch in enumerate(channels):
            if ch.interpolation not in INTERPOLATIONS:
                raise ValueError(f"unknown interpolation {ch.interpolation!r}")
            samplers.append(g.AnimationSampler(input=self._input_accessor(ch.times), output=self._output_accessor(ch),
                                               interpolation=ch.interpolation))
            targets.append(g.AnimationChannel(sampler=i, target=g.AnimationChannelTarget(node=ch.node, path=ch.path)))
        self.gltf.animations.append(g.Animation(name=name, samplers=samplers, channels=targets))
        return len(self.gltf.animations) - 1

    # -- output ------------------------------------------------------------------------------------------------

    def to_glb(self, roots: Sequence[int]) -> bytes:
        """The GLB bytes of a one-scene document whose scene holds ``roots``."""
        self.gltf.scenes = [g.Scene(nodes=[int(r) for r in roots])]
        self.gltf.scene = 0
        blob = bytes(self._blob) + b"\0" * (-len(self._blob) % 4)
        self.gltf.buffers = [g.Buffer(byteLength=len(blob))]
        self.gltf.set_binary_blob(blob)
        return b"".join(self.gltf.save_to_bytes())

    def write(self, path: str | Path, roots: Sequence[int]) -> bytes:
        """Write the GLB atomically to ``path``; returns its bytes."""
        data = self.to_glb(roots)
        write_bytes_atomic(path, data)
        return data
