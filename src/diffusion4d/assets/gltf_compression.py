"""Compressed mesh data in glTF: ``KHR_draco_mesh_compression`` decoded with the optional DracoPy package.

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
#: Where a file needing Draco sends the user when DracoPy is missing.
DRACO_INSTALL_HINT = "install the DracoPy package: pip install 'diffusion4d[gltf]' (or pip install DracoPy)"


def dracopy():
    """The DracoPy module, or None when it is not installed (it is an optional extra)."""
    try:
        return importlib.import_module("DracoPy")
    except ImportError:
        return None


def check_decoders_available(required: list) -> None:
    """Refuse a file that requires Draco when DracoPy is missing, saying what to install."""
    if DRACO in required and dracopy() is None:
        raise _Invalid(f"requires glTF extension {DRACO}, which needs the DracoPy package to decode; {DRACO_INSTALL_HINT}")


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
    return reader.overlay(decode_draco_primitive(module, reader.gltf, reader.buffers, primitive, attributes, extension, what))


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
        decoded[primitive.indices] = _as_accessor(gltf, primitive.indices, np.asarray(faces).reshape(-1, 1), what + " indices")
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
