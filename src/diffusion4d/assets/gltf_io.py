"""glTF containers, URIs and accessors: the bytes of a file decoded into numpy arrays (spec §3.6.2, §4.4).

Part of the glTF loader (:mod:`diffusion4d.assets.gltf`); problems raise :class:`_Invalid`, which ``load_gltf``
turns into an ``AssetError`` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import struct
import urllib.parse
from pathlib import Path

import numpy as np
import pygltflib

#: Extensions a file may list in ``extensionsRequired``. KHR_materials_unlit changes shading only, which the
#: renderer decides; emissive strength, specular-glossiness's diffuse colour and WebP textures are read with the
#: material (gltf.py); quantization and texture transforms
#: are implemented here, Draco and meshopt in :mod:`.gltf_compression` (which refuses such a file, naming the
#: package to install, when its decoder is missing).
SUPPORTED_EXTENSIONS = frozenset(
    {
        "KHR_mesh_quantization",
        "KHR_materials_unlit",
        "KHR_materials_emissive_strength",
        "KHR_materials_pbrSpecularGlossiness",
        "EXT_texture_webp",
        "KHR_texture_transform",
        "KHR_draco_mesh_compression",
        "EXT_meshopt_compression",
    }
)


class _Invalid(Exception):
    """A problem found while decoding; load_gltf prefixes the file path and re-raises it as AssetError."""


# --------------------------------------------------------------------------------------------------------------
# Containers and URIs
# --------------------------------------------------------------------------------------------------------------

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A  # "JSON" little-endian
_CHUNK_BIN = 0x004E4942  # "BIN\0" little-endian


def parse_glb(data: bytes) -> tuple[bytes, bytes | None]:
    """Split a GLB container into (JSON chunk bytes, BIN chunk bytes or None), checking every length."""
    if len(data) < 12:
        raise _Invalid(f"truncated GLB: {len(data)} bytes, shorter than the 12-byte header")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != _GLB_MAGIC:
        raise _Invalid(f"not a GLB file: bad magic {magic!r} (expected b'glTF')")
    if version != 2:
        raise _Invalid(f"unsupported GLB container version {version} (only 2 is supported)")
    if length > len(data):
        raise _Invalid(f"truncated GLB: header declares {length} bytes but the file has only {len(data)}")
    json_chunk = bin_chunk = None
    offset, chunk_index = 12, 0
    while offset < length:
        if offset + 8 > length:
            raise _Invalid(f"truncated GLB: chunk {chunk_index} header at byte {offset} runs past the end")
        chunk_length, chunk_type = struct.unpack_from("<II", data, offset)
        start, end = offset + 8, offset + 8 + chunk_length
        if end > length:
            raise _Invalid(
                f"truncated GLB: chunk {chunk_index} declares {chunk_length} bytes, past the end of the file "
                f"({length} bytes)"
            )
        if chunk_index == 0 and chunk_type != _CHUNK_JSON:
            raise _Invalid("corrupt GLB: the first chunk is not the JSON chunk")
        if chunk_index == 0:
            json_chunk = data[start:end]
        elif chunk_index == 1 and chunk_type == _CHUNK_BIN:
            bin_chunk = data[start:end]
        # Other chunk types are extension data that a client must ignore (spec §4.4.3).
        offset, chunk_index = end, chunk_index + 1
    if json_chunk is None:
        raise _Invalid("corrupt GLB: no JSON chunk")
    return json_chunk, bin_chunk


def decode_data_uri(uri: str, what: str) -> bytes:
    """Bytes of a ``data:[<mime>][;base64],<payload>`` URI."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise _Invalid(f"{what}: malformed data URI (no ',')")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as e:
            raise _Invalid(f"{what}: bad base64 in data URI ({e})") from None
    return urllib.parse.unquote_to_bytes(payload)


def read_uri(uri: str, base_dir: Path, what: str) -> bytes:
    """Bytes behind a buffer/image URI: a data URI, or a file relative to the glTF file (percent-decoded)."""
    if uri.startswith("data:"):
        return decode_data_uri(uri, what)
    file = base_dir / urllib.parse.unquote(uri)
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise _Invalid(f"{what}: external file {uri!r} not found (looked for {file})") from None
    except OSError as e:
        raise _Invalid(f"{what}: cannot read external file {uri!r} ({e.strerror or e})") from None


def check_gltf_json(doc: object) -> None:
    """Refuse JSON that is not glTF 2.x, or that requires extensions we do not implement."""
    if not isinstance(doc, dict):
        raise _Invalid("not a glTF file: the JSON top level is not an object")
    asset = doc.get("asset")
    if not isinstance(asset, dict) or not isinstance(asset.get("version"), str):
        raise _Invalid("not a glTF file: no asset.version")
    version = asset["version"]
    if version.split(".")[0] != "2":
        raise _Invalid(f"unsupported glTF version {version!r} (only 2.x is supported)")
    min_version = asset.get("minVersion")
    if isinstance(min_version, str) and min_version not in ("2.0", "2"):
        raise _Invalid(f"unsupported glTF minVersion {min_version!r} (this loader implements 2.0)")
    required = doc.get("extensionsRequired") or []
    unsupported = [str(e) for e in required if e not in SUPPORTED_EXTENSIONS]
    if unsupported:
        raise _Invalid(
            f"requires unsupported glTF extension(s) {', '.join(unsupported)} "
            f"(supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))})"
        )


def load_buffers(gltf: pygltflib.GLTF2, base_dir: Path, glb_bin: bytes | None) -> list[bytes]:
    """Bytes of every buffer: the GLB BIN chunk for an URI-less buffer 0, else its data/file URI."""
    buffers = []
    for i, buffer in enumerate(gltf.buffers):
        what = f"buffer {i}"
        if buffer.uri is None and (buffer.extensions or {}).get("EXT_meshopt_compression", {}).get("fallback"):
            data = b""  # a placeholder with no bytes: every view on it is meshopt-compressed (EXT_meshopt_compression)
        elif buffer.uri is None:
            if i != 0 or glb_bin is None:
                raise _Invalid(f"{what} has no uri and there is no GLB BIN chunk to hold it (missing BIN chunk)")
            data = glb_bin
        else:
            data = read_uri(buffer.uri, base_dir, what)
        if data and buffer.byteLength is not None and len(data) < buffer.byteLength:
            raise _Invalid(f"{what} holds {len(data)} bytes, fewer than its byteLength {buffer.byteLength}")
        buffers.append(data)
    return buffers


# --------------------------------------------------------------------------------------------------------------
# Accessors (spec §3.6.2)
# --------------------------------------------------------------------------------------------------------------

COMPONENT_DTYPES = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
#: (columns, rows) of each accessor type; vectors are one column.
TYPE_SHAPES = {
    "SCALAR": (1, 1),
    "VEC2": (1, 2),
    "VEC3": (1, 3),
    "VEC4": (1, 4),
    "MAT2": (2, 2),
    "MAT3": (3, 3),
    "MAT4": (4, 4),
}


def _item(items: list, index: object, what: str):
    """items[index] for a glTF index property, refusing dangling or non-integer references."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(items):
        raise _Invalid(f"reference to {what} {index!r}, but the file has {len(items)} {what}(s)")
    return items[index]


def buffer_view_bytes(gltf: pygltflib.GLTF2, buffers: list[bytes], view_index: int) -> memoryview:
    """The bytes of one bufferView [byteLength], bounds-checked against its buffer."""
    view = _item(gltf.bufferViews, view_index, "bufferView")
    data = _item(buffers, view.buffer, "buffer")
    start, length = view.byteOffset or 0, view.byteLength
    if not isinstance(length, int) or length < 0 or start < 0:
        raise _Invalid(f"bufferView {view_index}: missing or negative byteOffset/byteLength")
    if start + length > len(data):
        raise _Invalid(
            f"bufferView {view_index} (bytes {start}..{start + length}) reads past the end of buffer "
            f"{view.buffer} ({len(data)} bytes)"
        )
    return memoryview(data)[start : start + length]


def read_elements(
    view: memoryview, offset: int, count: int, dtype: np.dtype, shape: tuple[int, int], stride: int | None, what: str
) -> np.ndarray:
    """Copy ``count`` strided elements out of a bufferView → [count, columns·rows] (matrices column-major).

    Matrix columns start on 4-byte boundaries (spec §3.6.2.4), which pads MAT2/MAT3 of 1- and 2-byte components.
    """
    columns, rows = shape
    item = dtype.itemsize
    column_stride = -(-rows * item // 4) * 4 if columns > 1 else rows * item
    element_size = columns * column_stride if columns > 1 else rows * item
    stride = stride or element_size
    if stride < element_size:
        raise _Invalid(f"{what}: byteStride {stride} is smaller than its {element_size}-byte elements")
    if count == 0:
        return np.zeros((0, columns * rows), dtype)
    end = offset + (count - 1) * stride + element_size
    if offset < 0 or end > len(view):
        raise _Invalid(f"{what} reads bytes {offset}..{end}, past the end of its bufferView ({len(view)} bytes)")
    elements = np.ndarray(
        (count, columns, rows), dtype, buffer=view, offset=offset, strides=(stride, column_stride, item)
    )
    return elements.reshape(count, columns * rows)  # reshape of a strided view copies into native layout


def dequantize(values: np.ndarray) -> np.ndarray:
    """Normalised integers → float32 per spec §3.11.

    Signed b-bit: max(c / (2^(b−1) − 1), −1) (so −128 and −127 both give −1); unsigned: c / (2^b − 1).
    """
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=False)
    info = np.iinfo(values.dtype)
    scaled = values.astype(np.float32) / np.float32(info.max)
    return np.maximum(scaled, -1.0) if info.min < 0 else scaled


class AccessorReader:
    """Decodes accessors of one file; caches results because samplers and primitives share accessors."""

    def __init__(self, gltf: pygltflib.GLTF2, buffers: list[bytes]):
        self.gltf, self.buffers = gltf, buffers
        self._cache: dict[int, np.ndarray] = {}
        self._decoded: dict[int, np.ndarray] = {}

    def overlay(self, decoded: dict[int, np.ndarray]) -> AccessorReader:
        """A reader that returns ``decoded`` [count, components] for those accessors and shares this reader's cache
        for all others: decompressed primitives replace their accessors' (absent) bufferView data."""
        view = AccessorReader(self.gltf, self.buffers)
        view._cache = self._cache  # the same dict: ordinary accessors are still decoded once per file
        view._decoded = {i: _frozen(v) for i, v in decoded.items()}
        return view

    def raw(self, index: int) -> np.ndarray:
        """Accessor values as stored (after sparse substitution), [count, components] in the component dtype."""
        if index in self._decoded:
            return self._decoded[index]
        if index in self._cache:
            return self._cache[index]
        accessor = _item(self.gltf.accessors, index, "accessor")
        what = f"accessor {index}"
        dtype = COMPONENT_DTYPES.get(accessor.componentType)
        shape = TYPE_SHAPES.get(accessor.type)
        if dtype is None:
            raise _Invalid(f"{what}: unknown componentType {accessor.componentType!r}")
        if shape is None:
            raise _Invalid(f"{what}: unknown type {accessor.type!r}")
        count = accessor.count
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _Invalid(f"{what}: missing or negative count")
        if accessor.bufferView is None:
            values = np.zeros((count, shape[0] * shape[1]), dtype)  # spec: no bufferView means all zeros
        else:
            view = buffer_view_bytes(self.gltf, self.buffers, accessor.bufferView)
            stride = self.gltf.bufferViews[accessor.bufferView].byteStride
            values = read_elements(view, accessor.byteOffset or 0, count, dtype, shape, stride, what)
        if accessor.sparse is not None:
            values = self._apply_sparse(values, accessor.sparse, dtype, shape, what)
        values.flags.writeable = False  # shared through the cache
        self._cache[index] = values
        return values

    def _apply_sparse(self, values, sparse, dtype, shape, what) -> np.ndarray:
        """Substitute the sparse (index, value) pairs into a copy of the dense values."""
        n = sparse.count
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or sparse.indices is None or sparse.values is None:
            raise _Invalid(f"{what}: malformed sparse block")
        index_dtype = COMPONENT_DTYPES.get(sparse.indices.componentType)
        if index_dtype is None or index_dtype.kind != "u":
            raise _Invalid(f"{what}: sparse indices componentType {sparse.indices.componentType!r} is not unsigned")
        index_view = buffer_view_bytes(self.gltf, self.buffers, sparse.indices.bufferView)
        value_view = buffer_view_bytes(self.gltf, self.buffers, sparse.values.bufferView)
        indices = read_elements(
            index_view, sparse.indices.byteOffset or 0, n, index_dtype, (1, 1), None, what + " sparse indices"
        )[:, 0].astype(np.int64)
        substitutes = read_elements(
            value_view, sparse.values.byteOffset or 0, n, dtype, shape, None, what + " sparse values"
        )
        if n and indices.max() >= len(values):
            raise _Invalid(f"{what}: sparse index {indices.max()} is out of range (count {len(values)})")
        values = values.copy()
        values[indices] = substitutes
        return values

    def floats(self, index: int) -> np.ndarray:
        """Accessor as float64 [count, components]: normalised integers dequantised, plain integers cast."""
        raw = self.raw(index)  # validates the index first
        if self.gltf.accessors[index].normalized and raw.dtype.kind in "iu":
            return dequantize(raw).astype(np.float64)
        return raw.astype(np.float64)

    def ints(self, index: int, what: str) -> np.ndarray:
        """Integer accessor (indices, joints) as int64 [count, components]."""
        raw = self.raw(index)
        if raw.dtype.kind not in "iu":
            raise _Invalid(f"{what}: accessor {index} must hold integers, not {raw.dtype}")
        return raw.astype(np.int64)


def _frozen(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False  # handed out like cached values, so equally protected
    return values


def column_major_matrices(flat: np.ndarray) -> np.ndarray:
    """[N, 16] column-major (glTF's MAT4 and node.matrix layout) → [N, 4, 4] row-major matrices."""
    return flat.reshape(-1, 4, 4).transpose(0, 2, 1)

