"""Compressed data in glTF: ``KHR_draco_mesh_compression`` (optional DracoPy package) and
``EXT_meshopt_compression`` (optional ``meshoptimizer`` package, the Python bindings from zeux/meshoptimizer).

Part of the glTF loader (:mod:`diffusion4d.assets.gltf`). A Draco primitive's accessors carry only count, type and
componentType; their values come from the Draco bitstream in the extension's bufferView, each attribute found by
the unique id the extension maps its semantic to (KHR_draco_mesh_compression, "Conformance").
"""

from __future__ import annotations

import importlib

import numpy as np
import pygltflib

from .gltf_io import COMPONENT_DTYPES, TYPE_SHAPES, AccessorReader, _Invalid, _item, buffer_view_bytes

DRACO = "KHR_draco_mesh_compression"
MESHOPT = "EXT_meshopt_compression"
#: extension → (module, what to tell a user whose file requires it while the module is missing).
_DECODERS = {
    DRACO: ("DracoPy", "pip install 'diffusion4d[gltf]' (or pip install DracoPy)"),
    MESHOPT: ("meshoptimizer", "pip install 'diffusion4d[gltf]' (or pip install meshoptimizer)"),
}


def _module(name: str):
    """An optional decoder module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def dracopy():
    """The DracoPy module, or None."""
    return _module("DracoPy")


def meshoptimizer():
    """The meshoptimizer module, or None."""
    return _module("meshoptimizer")


def check_decoders_available(required: list) -> None:
    """Refuse a file that requires a compression extension whose decoder package is missing, saying what to install."""
    for extension, (module, install) in _DECODERS.items():
        if extension in required and _module(module) is None:
            raise _Invalid(
                f"requires glTF extension {extension}, which needs the {module} package to decode; "
                f"install it: {install}"
            )


def _draco_extension(primitive) -> dict | None:
    extensions = primitive.extensions or {}
    return extensions.get(DRACO) if isinstance(extensions, dict) else None


def decompressed_reader(reader: AccessorReader, primitive, attributes: dict, what: str) -> AccessorReader:
    """``reader`` itself, or for a Draco primitive a reader whose attribute/indices accessors hold decoded values.

    A file that merely *uses* Draco (with an uncompressed fallback) is read from the fallback when DracoPy is
    missing, as the extension's conformance section says; a file that *requires* it was refused earlier.
    """
    extension = _draco_extension(primitive)
    module = dracopy()
    if extension is None or module is None:
        return reader
    decoded = decode_draco_primitive(module, reader.gltf, reader.buffers, primitive, attributes, extension, what)
    return reader.overlay(decoded)


def decode_draco_primitive(module, gltf: pygltflib.GLTF2, buffers, primitive, attributes, extension, what) -> dict:
    """Decode one Draco primitive → {accessor index: values [count, components] in that accessor's dtype}.

    The indices accessor gets the decoded faces flattened [3F]: Draco always decodes to a triangle list.
    """
    what = f"{what} {DRACO}"
    if not isinstance(extension, dict) or not isinstance(extension.get("attributes"), dict):
        raise _Invalid(f"{what}: the extension has no 'attributes' object")
    data = bytes(buffer_view_bytes(gltf, buffers, extension.get("bufferView")))
    try:
        mesh = module.decode(data)
    except Exception as e:  # DracoPy raises its own exception types (and ValueError) on a corrupt bitstream
        raise _Invalid(f"{what}: the Draco data could not be decoded ({e})") from None
    faces = getattr(mesh, "faces", None)
    if faces is None:
        raise _Invalid(f"{what}: the Draco data is a point cloud, not a triangle mesh")
    decoded = {}
    if primitive.indices is not None:
        faces = np.asarray(faces).reshape(-1, 1)
        decoded[primitive.indices] = _as_accessor(gltf, primitive.indices, faces, what + " indices")
    for semantic, unique_id in extension["attributes"].items():
        if semantic not in attributes:
            continue  # the spec makes the extension's attributes a subset; extra ids name nothing we draw
        attribute = mesh.get_attribute_by_unique_id(unique_id)
        if attribute is None:
            raise _Invalid(f"{what}: {semantic} maps to Draco attribute id {unique_id!r}, which the data lacks")
        values = np.asarray(attribute["data"])
        decoded[attributes[semantic]] = _as_accessor(gltf, attributes[semantic], values, f"{what} {semantic}")
    return decoded


def _as_accessor(gltf: pygltflib.GLTF2, index: int, values: np.ndarray, what: str) -> np.ndarray:
    """Decoded values [K, C] checked against accessor ``index`` (count, width) and cast to its component type.

    Draco returns integer attributes in a widened dtype (uint16 comes back as uint32); the accessor's
    componentType and normalized flag decide how the values are read, so they are cast back, range-checked.
    """
    accessor = _item(gltf.accessors, index, "accessor")
    dtype, shape = COMPONENT_DTYPES.get(accessor.componentType), TYPE_SHAPES.get(accessor.type)
    if dtype is None or shape is None:
        raise _Invalid(f"{what}: accessor {index} has unknown componentType/type")
    values = values.reshape(len(values), -1)
    width = shape[0] * shape[1]
    if values.shape != (accessor.count, width):
        raise _Invalid(
            f"{what}: decoded {values.shape[0]}×{values.shape[1]} values, but accessor {index} declares "
            f"{accessor.count}×{width}"
        )
    if dtype.kind != "f":
        if values.dtype.kind == "f":
            raise _Invalid(f"{what}: decoded floats for integer accessor {index}")
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise _Invalid(f"{what}: decoded values out of range for accessor {index}'s {dtype}")
    return values.astype(dtype)


# --------------------------------------------------------------------------------------------------------------
# EXT_meshopt_compression: whole bufferViews compressed
# --------------------------------------------------------------------------------------------------------------

# filter → (the bindings' decoder, the byteStrides it is defined for; None: any, i.e. a multiple of 4 as ATTRIBUTES
# requires). The bindings do not check the stride: another one makes the C decoder write past its buffer.
_MESHOPT_FILTERS = {"OCTAHEDRAL": ("decode_filter_oct", (4, 8)), "QUATERNION": ("decode_filter_quat", (8,)),
                    "EXPONENTIAL": ("decode_filter_exp", None)}


def decode_meshopt_views(gltf: pygltflib.GLTF2, buffers: list[bytes]) -> list[bytes]:
    """Decompress every meshopt bufferView into a new in-memory buffer and repoint the view at it.

    Returns ``buffers`` plus one decoded buffer per compressed view; the views' own buffer/byteOffset (the
    uncompressed fallback, often an empty placeholder) are replaced, so accessors and images read decoded bytes
    through the ordinary path. Without the meshoptimizer package the fallback is read (the file did not require it).
    """
    module = meshoptimizer()
    if module is None:
        return buffers
    buffers = list(buffers)
    for index, view in enumerate(gltf.bufferViews):
        extension = (view.extensions or {}).get(MESHOPT)
        if extension is None:
            continue
        decoded = decode_meshopt_view(module, buffers, extension, f"bufferView {index} {MESHOPT}")
        if len(decoded) != view.byteLength:
            raise _Invalid(
                f"bufferView {index} {MESHOPT}: decoded {len(decoded)} bytes, but the view's byteLength is "
                f"{view.byteLength}"
            )
        buffers.append(decoded)
        view.buffer, view.byteOffset = len(buffers) - 1, 0
    return buffers


def decode_meshopt_view(module, buffers: list[bytes], extension: dict, what: str) -> bytes:
    """One compressed view → its ``count × byteStride`` decoded bytes (mode ATTRIBUTES / TRIANGLES / INDICES)."""
    try:
        source = _item(buffers, extension["buffer"], "buffer")
        start, length = extension.get("byteOffset", 0), extension["byteLength"]
        count, stride = extension["count"], extension["byteStride"]
        mode, filter_name = extension["mode"], extension.get("filter", "NONE")
    except (KeyError, TypeError):
        raise _Invalid(f"{what}: needs buffer, byteLength, count, byteStride and mode") from None
    if start < 0 or start + length > len(source):
        raise _Invalid(f"{what}: bytes {start}..{start + length} lie past the end of buffer {extension['buffer']}")
    filter_decoder = _filter_decoder(filter_name, mode, stride, what)
    data = bytes(source[start : start + length])
    try:
        if mode == "ATTRIBUTES":
            values = module.decode_vertex_buffer(count, stride, data)
        elif mode in ("TRIANGLES", "INDICES"):
            if stride not in (2, 4):
                raise _Invalid(f"{what}: index byteStride must be 2 or 4, not {stride}")
            decode = module.decode_index_buffer if mode == "TRIANGLES" else module.decode_index_sequence
            values = decode(count, stride, data)
        else:
            raise _Invalid(f"{what}: unknown mode {mode!r}")
    except (ValueError, RuntimeError) as e:  # the bindings' errors for bad sizes and corrupt data
        raise _Invalid(f"{what}: the data could not be decoded ({e})") from None
    # The bindings hand back typed arrays (uint32 indices even for 2-byte ones, written packed at the front);
    # the view's bytes are the first count × stride bytes of that memory.
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(-1)[: count * stride].copy()
    if filter_decoder is not None:
        raw = getattr(module, filter_decoder)(raw, count, stride)
    return raw.tobytes()


def _filter_decoder(filter_name: str, mode: str, stride: int, what: str) -> str | None:
    """The bindings' decoder for a view's filter (None for NONE), once the spec's rules for it hold (Appendix B):
    known, in mode ATTRIBUTES, and on a stride it is defined for."""
    if filter_name == "NONE":
        return None
    if filter_name not in _MESHOPT_FILTERS or mode != "ATTRIBUTES":
        raise _Invalid(f"{what}: filter {filter_name!r} is not valid for mode {mode}")
    strides = _MESHOPT_FILTERS[filter_name][1]
    if strides is not None and stride not in strides:
        allowed = " or ".join(map(str, strides))
        raise _Invalid(f"{what}: filter {filter_name} needs byteStride {allowed}, not {stride}")
    return _MESHOPT_FILTERS[filter_name][0]
