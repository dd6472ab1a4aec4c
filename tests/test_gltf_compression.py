"""Compressed glTF meshes (diffusion4d.assets.gltf_compression): Draco files written here with DracoPy's encoder,
loaded and compared with the same mesh stored uncompressed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pygltflib
import pytest

from diffusion4d.assets.gltf import load_gltf
from diffusion4d.assets.gltf_compression import DRACO, decode_draco_primitive
from diffusion4d.assets.gltf_io import load_buffers
from test_gltf import Builder, add_animation, assert_asset_error, png_bytes, positions, triangle_builder

DracoPy = pytest.importorskip("DracoPy")

QUANT_BITS = 14  # position quantisation: error ≤ range / 2^bits per axis (range 2 here)


def cube() -> dict:
    """A unit cube with per-face vertices (24): positions, normals, UVs, RGBA8 colours, joints and weights."""
    positions, normals, uvs, faces = [], [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            normal = np.zeros(3)
            normal[axis] = sign
            u, v = np.eye(3)[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3]
            if sign < 0:
                u, v = v, u  # keep the corners counter-clockwise seen from outside
            base = len(positions)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                positions.append(normal + a * u + b * v)
                normals.append(normal)
                uvs.append(((a + 1) / 2, (b + 1) / 2))
            faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    n = len(positions)
    rng = np.random.default_rng(0)
    weights = rng.random((n, 4)).astype(np.float32)
    return {
        "POSITION": np.array(positions, np.float32),
        "NORMAL": np.array(normals, np.float32),
        "TEXCOORD_0": np.array(uvs, np.float32),
        "COLOR_0": rng.integers(0, 256, (n, 4)).astype(np.uint8),
        "JOINTS_0": rng.integers(0, 3, (n, 4)).astype(np.uint16),
        "WEIGHTS_0": weights / weights.sum(1, keepdims=True),
        "faces": np.array(faces, np.uint32),
    }


def _scene(b: Builder, primitive: dict) -> None:
    """One node drawing ``primitive`` with a textured material (the loader reads TEXCOORD_0 only for a texture)."""
    image = b.view(png_bytes(np.full((2, 2, 4), 255, np.uint8)))
    b.doc.update(images=[{"bufferView": image, "mimeType": "image/png"}], textures=[{"source": 0}],
                 materials=[{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}])
    primitive = {**primitive, "material": 0}
    b.doc.update(scene=0, scenes=[{"nodes": [0]}], nodes=[{"mesh": 0}], meshes=[{"primitives": [primitive]}])


def uncompressed_file(mesh: dict, path):
    b = Builder()
    attrs = {name: b.accessor(mesh[name], mesh[name].dtype.type, normalized=name == "COLOR_0")
             for name in ("POSITION", "NORMAL", "TEXCOORD_0", "COLOR_0", "JOINTS_0", "WEIGHTS_0")}
    _scene(b, {"attributes": attrs, "indices": b.accessor(mesh["faces"].reshape(-1, 1), np.uint32)})
    return b.gltf(path)


def draco_file(mesh: dict, path, required: bool = True, glb: bool = False):
    """The mesh as a Draco-only primitive: accessors without bufferViews, the bitstream in its own bufferView.

    The extension's attribute ids are the unique ids DracoPy assigned, read back by attribute type
    (0 position, 1 normal, 2 colour, 3 tex coord) and by our own generic ids for joints (10) and weights (11).
    """
    f64 = lambda name: mesh[name].astype(np.float64)  # noqa: E731 (DracoPy's encoder asserts float64 input)
    data = DracoPy.encode(
        f64("POSITION"), mesh["faces"], quantization_bits=QUANT_BITS, normals=f64("NORMAL"),
        tex_coord=f64("TEXCOORD_0"), colors=mesh["COLOR_0"],
        generic_attributes={10: mesh["JOINTS_0"], 11: mesh["WEIGHTS_0"]},
    )
    decoded = DracoPy.decode(data)
    by_type = {a["attribute_type"]: a["unique_id"] for a in decoded.attributes}
    ids = {"POSITION": by_type[0], "NORMAL": by_type[1], "COLOR_0": by_type[2], "TEXCOORD_0": by_type[3],
           "JOINTS_0": 10, "WEIGHTS_0": 11}
    n = len(decoded.points)
    b = Builder()
    kinds = {"POSITION": (5126, "VEC3"), "NORMAL": (5126, "VEC3"), "TEXCOORD_0": (5126, "VEC2"),
             "COLOR_0": (5121, "VEC4"), "JOINTS_0": (5123, "VEC4"), "WEIGHTS_0": (5126, "VEC4")}
    attrs = {}
    for name, (ctype, type_) in kinds.items():
        accessor = {"componentType": ctype, "count": n, "type": type_}
        if name == "COLOR_0":
            accessor["normalized"] = True
        if name == "POSITION":
            accessor["min"], accessor["max"] = [-1.0] * 3, [1.0] * 3
        b.doc["accessors"].append(accessor)
        attrs[name] = len(b.doc["accessors"]) - 1
    b.doc["accessors"].append({"componentType": 5125, "count": len(decoded.faces) * 3, "type": "SCALAR"})
    extension = {"bufferView": b.view(bytes(data)), "attributes": ids}
    _scene(b, {"attributes": attrs, "indices": len(b.doc["accessors"]) - 1, "extensions": {DRACO: extension}})
    b.doc["extensionsUsed"] = [DRACO]
    if required:
        b.doc["extensionsRequired"] = [DRACO]
    return b.glb(path) if glb else b.gltf(path)


def match_vertices(original: np.ndarray, decoded: np.ndarray, tol: float) -> np.ndarray:
    """For each decoded vertex feature row [K, D], the index of the one original row [N, D] within ``tol``."""
    dist = np.abs(decoded[:, None, :] - original[None, :, :]).max(axis=2)
    nearest = dist.argmin(axis=1)
    assert dist[np.arange(len(decoded)), nearest].max() <= tol
    assert len(np.unique(nearest)) == len(nearest), "two decoded vertices matched one original vertex"
    return nearest


def canonical_triangles(faces: np.ndarray) -> set:
    """Triangles as a set, each rotated to start at its smallest index (so winding is kept, ordering is not)."""
    return {tuple(np.roll(f, -int(np.argmin(f)))) for f in faces.tolist()}


@pytest.mark.parametrize("glb", [False, True])
def test_draco_primitive_matches_uncompressed(tmp_path, glb):
    mesh = cube()
    plain = load_gltf(uncompressed_file(mesh, tmp_path / "plain.gltf")).pose(0.0, normalize=False).primitives[0]
    asset = load_gltf(draco_file(mesh, tmp_path / ("draco.glb" if glb else "draco.gltf"), glb=glb))
    packed = asset.pose(0.0, normalize=False).primitives[0]
    tol = 2.0 / 2**QUANT_BITS
    # Position + normal + UV identify each of the 24 corners uniquely (positions alone are shared by 3 faces).
    features = lambda p: np.concatenate([p.positions, p.normals, p.uvs], axis=1).astype(np.float64)  # noqa: E731
    to_plain = match_vertices(features(plain), features(packed), tol)
    assert len(packed.positions) == len(plain.positions)
    np.testing.assert_allclose(packed.positions, plain.positions[to_plain], atol=tol)
    np.testing.assert_array_equal(packed.colors, plain.colors[to_plain])  # RGBA8 is stored losslessly
    assert canonical_triangles(to_plain[packed.indices]) == canonical_triangles(plain.indices.astype(np.int64))


def test_draco_joints_and_weights_follow_attribute_ids(tmp_path):
    """Generic attributes (joints as uint16, weights as float) reach the accessors their ids are mapped to."""
    mesh = cube()
    path = draco_file(mesh, tmp_path / "draco.gltf")
    gltf = pygltflib.GLTF2().load(str(path))
    primitive = gltf.meshes[0].primitives[0]
    attributes = {k: v for k, v in vars(primitive.attributes).items() if v is not None}
    buffers = load_buffers(gltf, path.parent, None)
    decoded = decode_draco_primitive(
        DracoPy, gltf, buffers, primitive, attributes, primitive.extensions[DRACO], "mesh 0 primitive 0"
    )
    position = decoded[attributes["POSITION"]]
    normal = decoded[attributes["NORMAL"]]
    to_orig = match_vertices(
        np.concatenate([mesh["POSITION"], mesh["NORMAL"]], 1), np.concatenate([position, normal], 1), 0.01
    )
    joints = decoded[attributes["JOINTS_0"]]
    assert joints.dtype == np.uint16  # DracoPy widens to uint32; cast back to the accessor's type
    np.testing.assert_array_equal(joints, mesh["JOINTS_0"][to_orig])
    np.testing.assert_allclose(decoded[attributes["WEIGHTS_0"]], mesh["WEIGHTS_0"][to_orig], atol=1e-6)
    assert decoded[primitive.indices].shape == (36, 1)


def test_draco_without_dracopy(tmp_path, monkeypatch):
    mesh = cube()
    required = draco_file(mesh, tmp_path / "required.gltf")
    monkeypatch.setitem(sys.modules, "DracoPy", None)  # makes `import DracoPy` raise ImportError
    assert_asset_error(required, DRACO, "DracoPy", "pip install")


def test_draco_used_not_required_falls_back_without_dracopy(tmp_path, monkeypatch):
    """A file with an uncompressed fallback loads from it when DracoPy is missing (spec "Conformance")."""
    mesh = cube()
    b = Builder()
    attrs = {"POSITION": b.accessor(mesh["POSITION"])}
    b.doc["accessors"].append({"componentType": 5125, "count": 36, "type": "SCALAR",
                               "bufferView": b.view(mesh["faces"].tobytes())})
    # An undecodable bitstream: the fallback path must never look at it.
    extension = {"bufferView": b.view(b"not draco"), "attributes": {"POSITION": 0}}
    _scene(b, {"attributes": attrs, "indices": 1, "extensions": {DRACO: extension}})
    b.doc["extensionsUsed"] = [DRACO]
    path = b.gltf(tmp_path / "fallback.gltf")
    assert_asset_error(path, DRACO, "could not be decoded")  # with DracoPy the extension is processed first
    monkeypatch.setitem(sys.modules, "DracoPy", None)
    assert len(load_gltf(path).pose(0.0).primitives[0].indices) == 12


def test_corrupt_draco_data(tmp_path):
    mesh = cube()
    path = draco_file(mesh, tmp_path / "draco.gltf")
    doc = json.loads(path.read_text())
    prim = doc["meshes"][0]["primitives"][0]
    prim["extensions"][DRACO]["attributes"]["NORMAL"] = 99
    path.write_text(json.dumps(doc))
    assert_asset_error(path, "NORMAL", "99")
    prim["extensions"][DRACO]["attributes"]["NORMAL"] = prim["extensions"][DRACO]["attributes"]["POSITION"]
    doc["accessors"][prim["attributes"]["NORMAL"]]["count"] = 3
    path.write_text(json.dumps(doc))
    assert_asset_error(path, "accessor", "declares")


# ----------------------------------------------------------------------------------------------------------------
# EXT_meshopt_compression
# ----------------------------------------------------------------------------------------------------------------

MESHOPT = "EXT_meshopt_compression"


def meshopt_view(b: Builder, raw: bytes, count: int, stride: int, mode: str, filter_: str = "NONE") -> int:
    """A bufferView on the fallback buffer 1 (no bytes) whose extension holds the encoded data in buffer 0."""
    mo = pytest.importorskip("meshoptimizer")
    rows = np.frombuffer(raw, np.uint8).reshape(count, stride)
    if mode == "ATTRIBUTES":
        data = mo.encode_vertex_buffer(rows, count, stride)
    else:
        indices = np.frombuffer(raw, np.uint16 if stride == 2 else np.uint32).astype(np.uint32)
        encode = mo.encode_index_buffer if mode == "TRIANGLES" else mo.encode_index_sequence
        data = encode(indices, count, int(indices.max()) + 1)
    b.blob += b"\0" * (-len(b.blob) % 4)
    extension = {"buffer": 0, "byteOffset": len(b.blob), "byteLength": len(data), "byteStride": stride,
                 "count": count, "mode": mode}
    if filter_ != "NONE":
        extension["filter"] = filter_
    b.blob += bytes(data)
    b.doc["bufferViews"].append({"buffer": 1, "byteLength": count * stride, "byteStride": stride,
                                 "extensions": {MESHOPT: extension}})
    return len(b.doc["bufferViews"]) - 1


def meshopt_file(mesh: dict, path, index_stride: int = 4, index_mode: str = "TRIANGLES"):
    """The cube with positions (EXPONENTIAL filter, encoded by hand below), normals, colours, indices compressed."""
    b = Builder()
    n = len(mesh["POSITION"])
    attrs = {}
    # Exponential filter input: each 32-bit word is a signed 24-bit mantissa m with a signed 8-bit exponent e above
    # it, decoding to m·2^e. Positions are ±1 here, so e = −10 keeps them exact.
    mantissa = np.round(mesh["POSITION"].astype(np.float64) * 2**10).astype(np.int32)
    words = (mantissa & 0xFFFFFF) | (np.uint32(256 - 10) << 24).astype(np.int64)
    for name, raw, ctype, type_, stride, filter_ in (
        ("POSITION", words.astype("<u4").tobytes(), 5126, "VEC3", 12, "EXPONENTIAL"),
        ("NORMAL", mesh["NORMAL"].astype("<f4").tobytes(), 5126, "VEC3", 12, "NONE"),
        ("COLOR_0", mesh["COLOR_0"].tobytes(), 5121, "VEC4", 4, "NONE"),
    ):
        view = meshopt_view(b, raw, n, stride, "ATTRIBUTES", filter_)
        b.doc["accessors"].append({"bufferView": view, "componentType": ctype, "count": n, "type": type_,
                                   "normalized": name == "COLOR_0"})
        attrs[name] = len(b.doc["accessors"]) - 1
    flat = mesh["faces"].reshape(-1).astype("<u2" if index_stride == 2 else "<u4")
    view = meshopt_view(b, flat.tobytes(), len(flat), index_stride, index_mode)
    b.doc["bufferViews"][view].pop("byteStride")  # index views must not have a stride (spec §3.6.1)
    b.doc["accessors"].append({"bufferView": view, "componentType": 5123 if index_stride == 2 else 5125,
                               "count": len(flat), "type": "SCALAR"})
    _scene(b, {"attributes": attrs, "indices": len(b.doc["accessors"]) - 1})
    return meshopt_gltf(b, path)


def meshopt_gltf(b: Builder, path, extensions: tuple[str, ...] = ()):
    """Write ``b`` as a .gltf whose meshopt views (see meshopt_view) point at an empty fallback buffer 1."""
    b.doc["extensionsUsed"] = b.doc["extensionsRequired"] = [MESHOPT, *extensions]
    path = b.gltf(path)
    doc = json.loads(path.read_text())
    doc["buffers"].append({"byteLength": max(v["byteLength"] for v in doc["bufferViews"]),
                           "extensions": {MESHOPT: {"fallback": True}}})
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("index_stride,index_mode", [(4, "TRIANGLES"), (2, "TRIANGLES"), (4, "INDICES")])
def test_meshopt_matches_uncompressed(tmp_path, index_stride, index_mode):
    pytest.importorskip("meshoptimizer")
    mesh = cube()
    plain = load_gltf(uncompressed_file(mesh, tmp_path / "plain.gltf")).pose(0.0, normalize=False).primitives[0]
    packed = load_gltf(meshopt_file(mesh, tmp_path / "meshopt.gltf", index_stride, index_mode))
    packed = packed.pose(0.0, normalize=False).primitives[0]
    # meshopt is lossless and keeps the order: everything is identical.
    np.testing.assert_array_equal(packed.positions, plain.positions)
    np.testing.assert_array_equal(packed.normals, plain.normals)
    np.testing.assert_array_equal(packed.colors, plain.colors)
    np.testing.assert_array_equal(packed.indices, plain.indices)


def test_meshopt_without_decoder(tmp_path, monkeypatch):
    pytest.importorskip("meshoptimizer")
    path = meshopt_file(cube(), tmp_path / "meshopt.gltf")
    monkeypatch.setitem(sys.modules, "meshoptimizer", None)
    assert_asset_error(path, MESHOPT, "meshoptimizer", "pip install")


def test_corrupt_meshopt_data(tmp_path):
    pytest.importorskip("meshoptimizer")
    path = meshopt_file(cube(), tmp_path / "meshopt.gltf")
    doc = json.loads(path.read_text())
    doc["bufferViews"][0]["extensions"][MESHOPT]["byteLength"] = 5  # truncated stream
    path.write_text(json.dumps(doc))
    assert_asset_error(path, "bufferView 0", MESHOPT, "could not be decoded")


# The two filters below are encoded here by inverting the decoders of the extension's spec (Appendix B): the
# meshoptimizer bindings decode them but have no encoder for them.


def octahedral_filter_input(normals: np.ndarray, bits: int, stride: int) -> bytes:
    """Unit vectors [N, 3] → OCTAHEDRAL filter input: the octahedral map's x, y as signed ``bits``-bit integers,
    then 1.0 on that scale, then 0; as int8 (stride 4) or int16 (stride 8)."""
    one = (1 << (bits - 1)) - 1
    p = normals / np.abs(normals).sum(1, keepdims=True)  # onto the octahedron |x| + |y| + |z| = 1
    sign = np.where(p[:, :2] >= 0, 1.0, -1.0)
    xy = np.where(p[:, 2:] < 0, (1 - np.abs(p[:, 1::-1])) * sign, p[:, :2])  # the lower half folded outwards
    words = np.zeros((len(normals), 4))
    words[:, :2], words[:, 2] = np.round(xy * one), one
    return words.astype("<i1" if stride == 4 else "<i2").tobytes()


def quaternion_filter_input(quats: np.ndarray, bits: int) -> bytes:
    """Unit quaternions [N, 4] → QUATERNION filter input: the three components after the largest (cyclically), ×√2
    as signed ``bits``-bit integers, then 1.0 on that scale with the largest one's index in its low 2 bits."""
    one = (1 << (bits - 1)) - 1
    rows = np.arange(len(quats))
    big = np.abs(quats).argmax(1)
    q = quats * np.sign(quats[rows, big])[:, None]  # the omitted component must be positive (q and −q agree)
    words = np.zeros((len(q), 4), np.int64)
    words[:, :3] = np.round(np.stack([q[rows, (big + k) % 4] for k in (1, 2, 3)], 1) * np.sqrt(2) * one)
    words[:, 3] = (one & ~3) | big
    return words.astype("<i2").tobytes()


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.normal(size=(n, d))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("stride,bits,tol", [(4, 8, 0.02), (8, 12, 2e-3), (8, 16, 2e-4)])
def test_meshopt_octahedral_normals_match_the_originals(tmp_path, stride, bits, tol):
    pytest.importorskip("meshoptimizer")
    mesh = cube()
    normals = unit_rows(np.random.default_rng(1), len(mesh["POSITION"]), 3)  # every octant, both hemispheres
    b = Builder()
    view = meshopt_view(b, octahedral_filter_input(normals, bits, stride), len(normals), stride, "ATTRIBUTES",
                        "OCTAHEDRAL")
    # KHR_mesh_quantization: the filter's output is normalized int8 / int16, the fourth component padding.
    b.doc["accessors"].append({"bufferView": view, "componentType": 5120 if stride == 4 else 5122,
                               "normalized": True, "count": len(normals), "type": "VEC3"})
    attrs = {"NORMAL": len(b.doc["accessors"]) - 1, "POSITION": b.accessor(mesh["POSITION"])}
    indices = b.accessor(mesh["faces"].reshape(-1, 1), np.uint32)
    b.doc.update(scene=0, scenes=[{"nodes": [0]}], nodes=[{"mesh": 0}],
                 meshes=[{"primitives": [{"attributes": attrs, "indices": indices}]}])
    path = meshopt_gltf(b, tmp_path / "octahedral.gltf", ("KHR_mesh_quantization",))
    decoded = load_gltf(path).pose(0.0, normalize=False).primitives[0].normals
    assert np.abs(decoded - normals).max() <= tol
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("bits,tol", [(12, 3e-3), (16, 3e-4)])
def test_meshopt_quaternion_rotations_match_the_originals(tmp_path, bits, tol):
    pytest.importorskip("meshoptimizer")
    times = np.arange(5.0)
    quats = unit_rows(np.random.default_rng(2), len(times), 4)
    # The same sign as the filter's output: the file is compared with, not the loader's interpolation of −q.
    quats *= np.sign(quats[np.arange(len(quats)), np.abs(quats).argmax(1)])[:, None]
    plain = triangle_builder()
    add_animation(plain, times, quats, "LINEAR", path="rotation")
    packed = triangle_builder()
    add_animation(packed, times, quats, "LINEAR", path="rotation")
    output = packed.doc["animations"][0]["samplers"][0]["output"]
    view = meshopt_view(packed, quaternion_filter_input(quats, bits), len(quats), 8, "ATTRIBUTES", "QUATERNION")
    packed.doc["accessors"][output] = {"bufferView": view, "componentType": 5122, "normalized": True,
                                       "count": len(quats), "type": "VEC4"}
    plain_asset = load_gltf(plain.gltf(tmp_path / "plain.gltf"))
    packed_asset = load_gltf(meshopt_gltf(packed, tmp_path / "quaternion.gltf"))
    for t in np.linspace(0, times[-1], 17):  # on the keys and between them
        np.testing.assert_allclose(positions(packed_asset, t), positions(plain_asset, t), atol=tol)


@pytest.mark.parametrize("view,filter_,message", [(1, "OCTAHEDRAL", "byteStride 4 or 8, not 12"),
                                                  (2, "QUATERNION", "byteStride 8, not 4"),
                                                  (3, "EXPONENTIAL", "not valid for mode TRIANGLES")])
def test_meshopt_filter_where_the_spec_does_not_allow_it(tmp_path, view, filter_, message):
    # Checked before decoding: the bindings' filter decoders write past their buffer on another stride.
    pytest.importorskip("meshoptimizer")
    path = meshopt_file(cube(), tmp_path / "meshopt.gltf")
    doc = json.loads(path.read_text())
    doc["bufferViews"][view]["extensions"][MESHOPT]["filter"] = filter_
    path.write_text(json.dumps(doc))
    assert_asset_error(path, f"bufferView {view}", MESHOPT, filter_, message)
