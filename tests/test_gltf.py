"""glTF 2.0 loading and animation evaluation (diffusion4d.assets.gltf).

Expected values come from the files' own data, read here independently with json/base64/struct, or from numbers
derived by hand (the derivation is in the comments). Small files built in tmp_path cover what the Khronos samples
do not (STEP/CUBICSPLINE, quantised accessors, sparse, textures, GLB, topologies, bad input).
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from PIL import Image

from diffusion4d.assets.animation import sample_sampler, slerp
from diffusion4d.assets.gltf import (
    MAX_TRIANGLES,
    AssetError,
    GltfAsset,
    joint_matrices,
    load_gltf,
)
from diffusion4d.assets.gltf_io import read_elements

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "assets" / "gltf"
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"Khronos sample assets not found at {SAMPLES} (shared/ is not beside the checkout)"
)
SAMPLE_FILES = sorted(SAMPLES.glob("*.gltf")) if SAMPLES.is_dir() else []


# ----------------------------------------------------------------------------------------------------------------
# Independent reference helpers (deliberately written differently from the module: struct, loops, vector formulas)
# ----------------------------------------------------------------------------------------------------------------


def load_doc(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def read_accessor(doc: dict, index: int) -> np.ndarray:
    """Accessor of an embedded sample file → float64 [count, components], one struct.unpack per element."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    data = base64.b64decode(doc["buffers"][view["buffer"]]["uri"].split(",", 1)[1])
    n = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    code = {5121: "B", 5123: "H", 5125: "I", 5126: "f"}[acc["componentType"]]
    size = struct.calcsize(code)
    stride = view.get("byteStride", n * size)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.array(
        [struct.unpack_from("<" + code * n, data, start + i * stride) for i in range(acc["count"])], dtype=float
    )


def rotate(q, v):
    """Rotate vector v by quaternion q = (x, y, z, w): v + 2w(q⃗×v) + 2q⃗×(q⃗×v)."""
    q = np.asarray(q, float) / np.linalg.norm(q)
    u, w = q[:3], q[3]
    return v + 2 * w * np.cross(u, v) + 2 * np.cross(u, np.cross(u, v))


def rot_matrix(q):
    return np.stack([rotate(q, e) for e in np.eye(3)], axis=1)


def z_rotation_quat(degrees):
    h = math.radians(degrees) / 2
    return np.array([0.0, 0.0, math.sin(h), math.cos(h)])


def ref_slerp(a, b, u):
    """Textbook slerp on normalised inputs, shortest arc."""
    a, b = np.asarray(a, float) / np.linalg.norm(a), np.asarray(b, float) / np.linalg.norm(b)
    d = float(a @ b)
    if d < 0:
        b, d = -b, -d
    if d > 0.99999:
        r = a + u * (b - a)
    else:
        th = math.acos(d)
        r = (math.sin((1 - u) * th) * a + math.sin(u * th) * b) / math.sin(th)
    return r / np.linalg.norm(r)


def ref_linear_sample(times, values, t, rotation):
    """LINEAR sampler by a linear scan; clamps outside the keys."""
    if t <= times[0]:
        return values[0]
    if t >= times[-1]:
        return values[-1]
    for k in range(len(times) - 1):
        if times[k] <= t < times[k + 1]:
            u = (t - times[k]) / (times[k + 1] - times[k])
            if rotation:
                return ref_slerp(values[k], values[k + 1], u)
            return (1 - u) * values[k] + u * values[k + 1]
    raise AssertionError


def ref_local_matrices(doc: dict, t: float) -> list[np.ndarray]:
    """Local matrices of every node at time t with animation 0 (LINEAR samplers only) applied."""
    trs = []
    for node in doc["nodes"]:
        trs.append(
            {
                "matrix": node.get("matrix"),
                "translation": np.array(node.get("translation", [0, 0, 0]), float),
                "rotation": np.array(node.get("rotation", [0, 0, 0, 1]), float),
                "scale": np.array(node.get("scale", [1, 1, 1]), float),
            }
        )
    for anim in doc.get("animations", [])[:1]:
        for ch in anim["channels"]:
            s = anim["samplers"][ch["sampler"]]
            assert s.get("interpolation", "LINEAR") == "LINEAR"
            times = read_accessor(doc, s["input"])[:, 0]
            values = read_accessor(doc, s["output"])
            path = ch["target"]["path"]
            trs[ch["target"]["node"]][path] = ref_linear_sample(times, values, t, path == "rotation")
            trs[ch["target"]["node"]]["matrix"] = None
    out = []
    for p in trs:
        if p["matrix"] is not None:
            out.append(np.array(p["matrix"], float).reshape(4, 4).T)  # column-major in the file
        else:
            m = np.eye(4)
            m[:3, :3] = rot_matrix(p["rotation"]) @ np.diag(p["scale"])
            m[:3, 3] = p["translation"]
            out.append(m)
    return out


def ref_global_matrices(doc: dict, t: float) -> list[np.ndarray]:
    local = ref_local_matrices(doc, t)
    parent = {c: i for i, n in enumerate(doc["nodes"]) for c in n.get("children", [])}

    def world(i):
        return world(parent[i]) @ local[i] if i in parent else local[i]

    return [world(i) for i in range(len(doc["nodes"]))]


def ref_skinned_positions(doc: dict, t: float, mesh_node: int) -> np.ndarray:
    """Σ_k w_k·G(joint_k)·IBM_k·v per vertex (the mesh node's own transform cancels out, spec §3.7.3)."""
    node = doc["nodes"][mesh_node]
    skin = doc["skins"][node["skin"]]
    prim = doc["meshes"][node["mesh"]]["primitives"][0]
    pos = read_accessor(doc, prim["attributes"]["POSITION"])
    joints = read_accessor(doc, prim["attributes"]["JOINTS_0"]).astype(int)
    weights = read_accessor(doc, prim["attributes"]["WEIGHTS_0"])
    ibm = [m.reshape(4, 4).T for m in read_accessor(doc, skin["inverseBindMatrices"])]
    g = ref_global_matrices(doc, t)
    out = []
    for v, js, ws in zip(pos, joints, weights):
        m = sum(w * (g[skin["joints"][j]] @ ibm[j]) for j, w in zip(js, ws))
        out.append((m @ np.append(v, 1.0))[:3] / sum(ws))
    return np.array(out)


# ----------------------------------------------------------------------------------------------------------------
# Builder for small synthetic files
# ----------------------------------------------------------------------------------------------------------------

CTYPE = {np.int8: 5120, np.uint8: 5121, np.int16: 5122, np.uint16: 5123, np.uint32: 5125, np.float32: 5126}
TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


class Builder:
    """Accessors from numpy arrays, all in one buffer; writes .gltf (data URI) or .glb."""

    def __init__(self):
        self.blob = bytearray()
        self.doc = {"asset": {"version": "2.0"}, "accessors": [], "bufferViews": [], "buffers": []}

    def view(self, data: bytes, stride: int | None = None) -> int:
        self.blob += b"\0" * (-len(self.blob) % 4)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if stride:
            view["byteStride"] = stride
        self.blob += data
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, array, dtype=np.float32, normalized=False, type_=None) -> int:
        array = np.asarray(array)
        flat = array.reshape(len(array), -1)
        acc = {
            "bufferView": self.view(flat.astype(dtype).tobytes()),
            "componentType": CTYPE[dtype],
            "count": len(flat),
            "type": type_ or TYPES[flat.shape[1]],
        }
        if normalized:
            acc["normalized"] = True
        if dtype is np.float32 and flat.shape[1] == 3:
            acc["min"], acc["max"] = flat.min(0).tolist(), flat.max(0).tolist()
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def gltf(self, path: Path) -> Path:
        uri = "data:application/octet-stream;base64," + base64.b64encode(self.blob).decode()
        self.doc["buffers"] = [{"byteLength": len(self.blob), "uri": uri}]
        path.write_text(json.dumps(self.doc))
        return path

    def glb(self, path: Path) -> Path:
        self.doc["buffers"] = [{"byteLength": len(self.blob)}]
        path.write_bytes(make_glb(json.dumps(self.doc).encode(), bytes(self.blob)))
        return path


def make_glb(json_bytes: bytes, bin_bytes: bytes | None) -> bytes:
    """GLB container: 12-byte header, JSON chunk (space padded), optional BIN chunk (zero padded)."""
    json_bytes += b" " * (-len(json_bytes) % 4)
    chunks = struct.pack("<II", len(json_bytes), 0x4E4F534A) + json_bytes
    if bin_bytes is not None:
        bin_bytes += b"\0" * (-len(bin_bytes) % 4)
        chunks += struct.pack("<II", len(bin_bytes), 0x004E4942) + bin_bytes
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


TRI = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)


def triangle_builder(positions=TRI, **attributes) -> Builder:
    """One node, one mesh, one primitive (attributes given as accessor indices after POSITION)."""
    b = Builder()
    attrs = {"POSITION": b.accessor(positions)}
    for name, value in attributes.items():
        attrs[name] = b.accessor(value) if not isinstance(value, int) else value
    b.doc.update(
        scene=0, scenes=[{"nodes": [0]}], nodes=[{"mesh": 0}], meshes=[{"primitives": [{"attributes": attrs}]}]
    )
    return b


def add_animation(b: Builder, times, values, interpolation, name=None, path="translation", **output_kwargs) -> None:
    """One channel on node 0; output_kwargs (dtype, normalized) go to the output accessor."""
    anim = {
        "samplers": [
            {"input": b.accessor(np.asarray(times, np.float32)[:, None]),
             "output": b.accessor(np.asarray(values), **output_kwargs), "interpolation": interpolation}
        ],
        "channels": [{"sampler": 0, "target": {"node": 0, "path": path}}],
    }
    if name:
        anim["name"] = name
    b.doc.setdefault("animations", []).append(anim)


def positions(asset: GltfAsset, t: float, prim: int = 0) -> np.ndarray:
    return asset.pose(t, normalize=False).primitives[prim].positions.astype(float)


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Khronos samples
# ----------------------------------------------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_every_sample_loads_poses_and_normalises(path):
    asset = load_gltf(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert asset.uid == path.stem and asset.has_animation and asset.animation_index == 0
    assert asset.animation_names == ["animation_0"]  # none of the samples names its animation
    # duration = largest key time over the animation's sampler inputs (README table).
    expected = max(read_accessor(doc, s["input"]).max() for s in doc["animations"][0]["samplers"])
    assert asset.duration == pytest.approx(expected)
    lo, hi = asset.pose(0.0).bounds()
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)  # unit cube at frame 0 ...
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-6)  # ... centred on the origin
    for t in np.linspace(-0.5, asset.duration + 0.5, 7):
        mesh = asset.pose(t)
        assert mesh.num_triangles == asset.num_triangles > 0
        for p in mesh.primitives:
            assert p.positions.dtype == np.float32 and p.normals.dtype == np.float32
            assert p.indices.dtype == np.uint32 and p.indices.shape[1] == 3
            assert p.colors.dtype == np.float32 and p.colors.shape == (len(p.positions), 4)
            assert np.isfinite(p.positions).all()
            np.testing.assert_allclose(np.linalg.norm(p.normals, axis=1), 1.0, atol=1e-5)


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_glb_round_trip_matches_gltf(path, tmp_path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    for buffer in doc["buffers"]:  # pygltflib's writer only understands the octet-stream data-URI header
        buffer["uri"] = "data:application/octet-stream;base64," + buffer["uri"].split(",", 1)[1]
    glb = tmp_path / f"{path.stem}.glb"
    assert pygltflib.GLTF2.gltf_from_json(json.dumps(doc)).save_binary(str(glb))
    a, b = load_gltf(path), load_gltf(glb)
    assert b.duration == a.duration and b.num_triangles == a.num_triangles
    for t in (0.0, 0.3, 0.9, 2.0):
        for pa, pb in zip(a.pose(t).primitives, b.pose(t).primitives, strict=True):
            np.testing.assert_array_equal(pa.positions, pb.positions)
            np.testing.assert_array_equal(pa.normals, pb.normals)
            np.testing.assert_array_equal(pa.indices, pb.indices)


@needs_samples
def test_animated_triangle_rotation_keys_and_slerp():
    doc = load_doc("AnimatedTriangle.gltf")
    times, quats = read_accessor(doc, 2)[:, 0], read_accessor(doc, 3)
    np.testing.assert_allclose(times, [0.0, 0.25, 0.5, 0.75, 1.0])
    asset = load_gltf(SAMPLES / "AnimatedTriangle.gltf")
    tri = read_accessor(doc, 1)  # (0,0,0), (1,0,0), (0,1,0)

    # At a key time the rotation is the key quaternion: key 1 = (0, 0, .707, .707) = 90° about z.
    np.testing.assert_allclose(positions(asset, 0.25), [rotate(quats[1], v) for v in tri], atol=1e-6)
    np.testing.assert_allclose(positions(asset, 0.25), [[0, 0, 0], [0, 1, 0], [-1, 0, 0]], atol=1e-6)

    # Between keys 1 (90°) and 2 (180°): slerp at u = 0.5 is 135° about z.
    q = ref_slerp(quats[1], quats[2], 0.5)
    np.testing.assert_allclose(q, z_rotation_quat(135), atol=1e-6)
    c = math.cos(math.radians(135))
    np.testing.assert_allclose(positions(asset, 0.375), [[0, 0, 0], [c, -c, 0], [c, c, 0]], atol=1e-6)

    # u = 0.4 of the way from 0° (t=0) to 90° (t=0.25) is 36°.
    np.testing.assert_allclose(
        positions(asset, 0.1), [rotate(z_rotation_quat(36), v) for v in tri], atol=1e-6
    )
    # Key 3 (0,0,.707,−.707) is −90°, key 4 is identity; their dot is −0.707 so the shortest arc goes through
    # −45° (not through +135°): (1,0,0) ↦ (cos −45°, sin −45°).
    np.testing.assert_allclose(positions(asset, 0.875)[1], [math.sqrt(0.5), -math.sqrt(0.5), 0], atol=1e-6)
    # Clamped outside [0, 1]: first and last key (both identity).
    np.testing.assert_allclose(positions(asset, -3.0), tri, atol=1e-6)
    np.testing.assert_allclose(positions(asset, 7.0), tri, atol=1e-6)
    # Normalised at t = 0: bounds [0,1]² → scale 1, offset −(0.5, 0.5, 0).
    scale, offset = asset.normalization
    assert scale == pytest.approx(1.0)
    np.testing.assert_allclose(offset, [-0.5, -0.5, 0.0])
    expected = [[-0.5, -0.5, 0], [-0.5, 0.5, 0], [-1.5, -0.5, 0]]
    np.testing.assert_allclose(asset.pose(0.25).primitives[0].positions, expected, atol=1e-6)


@needs_samples
def test_simple_morph_weights_between_keys():
    doc = load_doc("SimpleMorph.gltf")
    base, d1, d2 = read_accessor(doc, 1), read_accessor(doc, 2), read_accessor(doc, 3)
    times, w = read_accessor(doc, 4)[:, 0], read_accessor(doc, 5).reshape(-1, 2)
    # Keys (w1, w2): t=0 (0,0), t=1 (0,1), t=2 (1,1), t=3 (1,0), t=4 (0,0).
    np.testing.assert_allclose(w, [[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]])
    asset = load_gltf(SAMPLES / "SimpleMorph.gltf")
    for t in (0.0, 0.5, 1.5, 2.25, 3.9, 10.0):
        w1, w2 = ref_linear_sample(times, w, t, rotation=False)
        np.testing.assert_allclose(positions(asset, t), base + w1 * d1 + w2 * d2, atol=1e-6)
    # t = 1.5: (w1, w2) = (0.5, 1); vertex 2 = (0.5,0.5,0) + 0.5·(−1,1,0) + 1·(1,1,0) = (1, 2, 0).
    np.testing.assert_allclose(positions(asset, 1.5)[2], [1.0, 2.0, 0.0], atol=1e-6)
    # No NORMAL attribute → flat normals; the CCW triangle faces +z.
    np.testing.assert_allclose(asset.pose(1.5).primitives[0].normals, [[0, 0, 1]] * 3, atol=1e-6)
    # Rest pose (animation=None) uses the mesh's default weights (0.5, 0.5): vertex 2 = (0.5, 1.5, 0).
    rest = load_gltf(SAMPLES / "SimpleMorph.gltf", animation=None)
    assert not rest.has_animation and rest.animation_index is None and rest.duration == 0.0
    np.testing.assert_allclose(positions(rest, 1.5)[2], [0.5, 1.5, 0.0], atol=1e-6)


@needs_samples
def test_simple_skin_hand_computed_blend():
    doc = load_doc("SimpleSkin.gltf")
    asset = load_gltf(SAMPLES / "SimpleSkin.gltf")
    # Joint 0 = node 1 at (0,1,0) with IBM translate(0,−1,0) → identity. Joint 1 = node 2 (child of node 1, animated
    # rotation) with the same IBM → rotation about the point (0,1,0). At t = 1.0 the key is (0,0,.707,.707) = 90°.
    # No NORMAL → flat shading, so the pose has one vertex per face corner: corner c shows source vertex idx[c].
    idx = read_accessor(doc, 0)[:, 0].astype(int)
    p = positions(asset, 1.0)
    assert len(p) == len(idx) == 24

    def check_vertex(i, expected):  # every corner made from source vertex i
        corners = p[np.flatnonzero(idx == i)]
        assert len(corners) > 0
        np.testing.assert_allclose(corners, np.broadcast_to(expected, corners.shape), atol=1e-6)

    # Vertex 4 (−0.5, 1, 0), weights (0.5, 0.5): joint 0 keeps it; joint 1 turns (−0.5,0,0) about (0,1,0) by 90°
    # to (0,−0.5,0)+(0,1,0) = (0,0.5,0). Blend: 0.5·(−0.5,1,0) + 0.5·(0,0.5,0) = (−0.25, 0.75, 0).
    check_vertex(4, [-0.25, 0.75, 0.0])
    # Vertex 8 (−0.5, 2, 0), weight 1 on joint 1: (−0.5,1,0) turned 90° is (−1,−0.5,0);
    # + (0,1,0) = (−1, 0.5, 0).
    check_vertex(8, [-1.0, 0.5, 0.0])
    check_vertex(0, [-0.5, 0.0, 0.0])  # weight 1 on joint 0: unmoved
    # Between keys, against the independent reference (slerp of the joint's keys + explicit blend).
    for t in (0.0, 0.3, 1.2, 2.7, 4.9, 6.0):
        np.testing.assert_allclose(positions(asset, t), ref_skinned_positions(doc, t, 0)[idx], atol=1e-5)


@needs_samples
def test_rigged_simple_skinning_and_joint_matrix_formula():
    doc = load_doc("RiggedSimple.gltf")
    asset = load_gltf(SAMPLES / "RiggedSimple.gltf")
    times = read_accessor(doc, 5)[:, 0]
    # A key time (exact key values), a time between keys, and a time before the first key (0.0417 s).
    for t in (float(times[20]), float((times[30] + times[31]) / 2), 0.0, 1.0, 3.0):
        np.testing.assert_allclose(positions(asset, t), ref_skinned_positions(doc, t, 2), atol=1e-5)
    # The spec's joint matrix inverse(G(mesh)) · G(joint) · IBM, followed by the mesh node's own G(mesh) that a
    # renderer applies, equals G(joint)·IBM: the mesh node (under Z_UP·Armature) must not be applied twice.
    g = ref_global_matrices(doc, 1.0)
    ibm = np.array([m.reshape(4, 4).T for m in read_accessor(doc, 9)])
    joints = np.array([g[3], g[4]])
    np.testing.assert_allclose(g[2] @ joint_matrices(g[2], joints, ibm), joints @ ibm, atol=1e-9)
    assert not np.allclose(g[2], np.eye(4))  # the mesh node really has a transform to get wrong


@needs_samples
def test_box_animated_channels_of_different_lengths():
    doc = load_doc("BoxAnimated.gltf")
    rot_times = read_accessor(doc, 6)[:, 0]
    tr_times = read_accessor(doc, 8)[:, 0]
    np.testing.assert_allclose(rot_times, [1.25, 2.5])  # rotation of node 2 (inner box) ...
    np.testing.assert_allclose(tr_times, [0, 1.25, 2.5, 3.70833], atol=1e-5)  # ... translation of node 0
    asset = load_gltf(SAMPLES / "BoxAnimated.gltf")
    assert asset.duration == pytest.approx(3.70833, abs=1e-5)
    inner = read_accessor(doc, 2)  # inner-box POSITION; drawn second (scene nodes [3, 0])
    inner_n = read_accessor(doc, 1)
    outer = read_accessor(doc, 5)

    # t = 3.0: the rotation channel ended at 2.5 → clamps to its last key (1,0,0,~0) = 180° about x;
    # translation: u = 0.5/1.2083 between (0,2.52,0) and (0,0,0).
    u = (3.0 - 2.5) / (tr_times[3] - 2.5)
    ty = (1 - u) * 2.52
    mesh = asset.pose(3.0, normalize=False)
    expected = inner * [1, -1, -1] + [0, ty, 0]
    np.testing.assert_allclose(mesh.primitives[1].positions, expected, atol=1e-5)
    np.testing.assert_allclose(mesh.primitives[1].normals, inner_n * [1, -1, -1], atol=1e-5)
    np.testing.assert_allclose(mesh.primitives[0].positions, outer, atol=1e-6)  # outer box never moves
    # t = 0.5: before the rotation's first key → its first key (−0,−0,−0,−1) = identity; translation u = 0.4.
    np.testing.assert_allclose(positions(asset, 0.5, prim=1), inner + [0, 0.4 * 2.52, 0], atol=1e-5)
    # Past the whole clip: rotation stays at 180°, translation back at its last key (0,0,0).
    np.testing.assert_allclose(positions(asset, 10.0, prim=1), inner * [1, -1, -1], atol=1e-5)
    # Normalisation is fixed at frame 0, so the motion survives in normalised space.
    scale, offset = asset.normalization
    np.testing.assert_allclose(asset.pose(3.0).primitives[1].positions, (expected + offset) * scale, atol=1e-5)


@needs_samples
def test_rigged_figure():
    doc = load_doc("RiggedFigure.gltf")
    assert len(doc["skins"][0]["joints"]) == 19
    asset = load_gltf(SAMPLES / "RiggedFigure.gltf")
    assert asset.duration == pytest.approx(1.25)
    assert asset.num_triangles == 768 // 3
    # Every one of the 19 joints takes part: the pose matches the reference skinning at and between keys.
    for t in (0.0, 0.4, 0.625, 1.25, 2.0):
        np.testing.assert_allclose(positions(asset, t), ref_skinned_positions(doc, t, 1), atol=1e-5)
    lo, hi = asset.pose(0.0).bounds()
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-6)
    frames = [asset.pose(t) for t in asset.frame_times(24, mode="clip")]
    assert all(np.isfinite(m.primitives[0].positions).all() for m in frames)
    assert not np.allclose(frames[0].primitives[0].positions, frames[12].primitives[0].positions)


# ----------------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------------


def test_step_sampler(tmp_path):
    b = triangle_builder()
    add_animation(b, [0, 1, 2], [[0, 0, 0], [1, 0, 0], [5, 0, 0]], "STEP")
    asset = load_gltf(b.gltf(tmp_path / "step.gltf"))
    for t, x in [(-1, 0), (0.0, 0), (0.99, 0), (1.0, 1), (1.5, 1), (2.0, 5), (9, 5)]:
        np.testing.assert_allclose(positions(asset, t), TRI + [x, 0, 0], atol=1e-6, err_msg=f"t={t}")


def test_cubicspline_translation_hand_computed(tmp_path):
    # Keys at t=0 and t=2 (Δt = 2). x components: a0=9 (unused), v0=0, b0=3; a1=−1, v1=1, b1=7 (unused).
    # At t=0.5, u=0.25: h00 = 2u³−3u²+1 = 0.84375, h10 = u³−2u²+u = 0.140625,
    #                   h01 = −2u³+3u² = 0.15625,  h11 = u³−u² = −0.046875
    # x = h00·0 + h10·(Δt·3) + h01·1 + h11·(Δt·(−1)) = 0.84375 + 0.15625 + 0.09375 = 1.09375.
    keys = [[9, 0, 0], [0, 0, 0], [3, 0, 0], [-1, 0, 0], [1, 0, 0], [7, 0, 0]]
    b = triangle_builder()
    add_animation(b, [0, 2], keys, "CUBICSPLINE")
    asset = load_gltf(b.gltf(tmp_path / "cubic.gltf"))
    np.testing.assert_allclose(positions(asset, 0.5), TRI + [1.09375, 0, 0], atol=1e-6)
    np.testing.assert_allclose(positions(asset, 2.0), TRI + [1, 0, 0], atol=1e-6)  # key value, not tangent
    np.testing.assert_allclose(positions(asset, -1.0), TRI, atol=1e-6)


def test_cubicspline_rotation_is_normalised(tmp_path):
    # Zero tangents, keys 0° and 90° about z: at u = 0.5 the Hermite value is (q0+q1)/2, whose normalisation is
    # the 45° rotation.
    q0, q1, zero = [0, 0, 0, 1], z_rotation_quat(90), [0, 0, 0, 0]
    b = triangle_builder()
    add_animation(b, [0, 1], [zero, q0, zero, zero, q1, zero], "CUBICSPLINE", path="rotation")
    asset = load_gltf(b.gltf(tmp_path / "cubic_rot.gltf"))
    np.testing.assert_allclose(positions(asset, 0.5), [rotate(z_rotation_quat(45), v) for v in TRI], atol=1e-6)


def test_sample_sampler_and_slerp_directly():
    times = np.array([0.0, 1.0])
    q = np.array([[0, 0, 0, 1], [0, 0, -1, 0]], float)  # −q of 180° about z → still the z axis
    half = math.sqrt(0.5)
    np.testing.assert_allclose(sample_sampler(times, q, "LINEAR", 0.5, True), [0, 0, -half, half], atol=1e-9)
    # Shortest path: slerp(q, −q') equals slerp(q, q').
    a, b = z_rotation_quat(10), z_rotation_quat(70)
    np.testing.assert_allclose(slerp(a, -b, 0.5), z_rotation_quat(40), atol=1e-9)
    # Stacked samplers (G = 2) evaluate together: [K, G, D] → [G, D].
    v = np.array([[[0, 0, 0], [1, 1, 1]], [[2, 0, 0], [3, 3, 3]]], float)
    np.testing.assert_allclose(sample_sampler(times, v, "LINEAR", 0.25, False), [[0.5, 0, 0], [1.5, 1.5, 1.5]])


# ----------------------------------------------------------------------------------------------------------------
# Accessors
# ----------------------------------------------------------------------------------------------------------------


def test_normalized_integer_accessors(tmp_path):
    b = Builder()
    # KHR_mesh_quantization: int16 normalised positions; signed normalisation is max(c/32767, −1).
    pos = b.accessor(np.array([[0, 0, 0], [32767, 0, 0], [0, -32768, 16384]]), np.int16, normalized=True)
    color = b.accessor(np.array([[255, 0, 128], [0, 255, 0], [51, 51, 51]]), np.uint8, normalized=True)
    b.doc.update(
        extensionsUsed=["KHR_mesh_quantization"],
        extensionsRequired=["KHR_mesh_quantization"],
        scenes=[{"nodes": [0]}],
        nodes=[{"mesh": 0}],
        meshes=[{"primitives": [{"attributes": {"POSITION": pos, "COLOR_0": color}}]}],
    )
    # Rotation keys as normalised int16: 23170/32767 ≈ sin 45° → (0,0,.7071,.7071) = 90° about z.
    rotation_keys = [[0, 0, 0, 32767], [0, 0, 23170, 23170]]
    add_animation(b, [0, 1], rotation_keys, "LINEAR", path="rotation", dtype=np.int16, normalized=True)
    asset = load_gltf(b.gltf(tmp_path / "quantized.gltf"))
    np.testing.assert_allclose(positions(asset, 0.0), [[0, 0, 0], [1, 0, 0], [0, -1, 16384 / 32767]], atol=1e-6)
    np.testing.assert_allclose(
        asset.pose(0).primitives[0].colors, [[1, 0, 128 / 255, 1], [0, 1, 0, 1], [0.2, 0.2, 0.2, 1]], atol=1e-6
    )
    np.testing.assert_allclose(positions(asset, 1.0)[1], [0, 1, 0], atol=1e-4)  # (1,0,0) turned 90°


@pytest.mark.parametrize(
    "dtype, normalized",
    [(t, False) for t in (np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.float32)]
    + [(t, True) for t in (np.int8, np.uint8, np.int16, np.uint16)],  # normalized: 8/16-bit integers only
)
def test_every_component_type_as_positions(tmp_path, dtype, normalized):
    raw = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 1]])
    b = triangle_builder()
    b.doc["accessors"][0] = b.doc["accessors"][b.accessor(raw, dtype, normalized=normalized)]
    b.doc["extensionsRequired"] = ["KHR_mesh_quantization"]
    # Normalised: signed b-bit c/(2^(b−1)−1), unsigned c/(2^b−1); plain integers are used as they are.
    divisor = {np.int8: 127, np.uint8: 255, np.int16: 32767, np.uint16: 65535}[dtype] if normalized else 1
    np.testing.assert_allclose(positions(load_gltf(b.gltf(tmp_path / "q.gltf")), 0), raw / divisor, atol=1e-6)


def test_padded_matrix_columns():
    # MAT2 of uint8: each 2-byte column starts on a 4-byte boundary → 8-byte elements (spec §3.6.2.4).
    data = bytes([1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0, 0, 7, 8, 0, 0])
    values = read_elements(memoryview(data), 0, 2, np.dtype("u1"), (2, 2), None, "test")
    np.testing.assert_array_equal(values, [[1, 2, 3, 4], [5, 6, 7, 8]])  # column-major, padding dropped
    # MAT3 of int16: 6-byte columns padded to 8.
    m = np.arange(9, dtype="<i2").reshape(3, 3)
    data = b"".join(col.tobytes() + b"\0\0" for col in m)
    values = read_elements(memoryview(data), 0, 1, np.dtype("<i2"), (3, 3), None, "test")
    np.testing.assert_array_equal(values, [m.ravel()])


def test_interleaved_stride_sparse_and_bufferless_accessors(tmp_path):
    b = Builder()
    # Interleaved vertices: POSITION (12 bytes) + COLOR_0 float vec4 (16 bytes) + 4 padding = 32-byte stride.
    interleaved = bytearray()
    pos = TRI.astype(np.float32)
    col = np.array([[1, 0, 0, 1], [0, 1, 0, 0.5], [0, 0, 1, 1]], np.float32)
    for p, c in zip(pos, col):
        interleaved += p.tobytes() + c.tobytes() + b"\0" * 4
    view = b.view(bytes(interleaved), stride=32)
    b.doc["accessors"] += [
        {"bufferView": view, "byteOffset": 0, "componentType": 5126, "count": 3, "type": "VEC3"},
        {"bufferView": view, "byteOffset": 12, "componentType": 5126, "count": 3, "type": "VEC4"},
    ]
    # Morph target: no bufferView (all zeros) + sparse: vertex 2 gets delta (0, 0, 2).
    idx_view = b.view(np.array([2], np.uint16).tobytes())
    val_view = b.view(np.array([[0, 0, 2]], np.float32).tobytes())
    b.doc["accessors"].append(
        {
            "componentType": 5126, "count": 3, "type": "VEC3",
            "sparse": {"count": 1, "indices": {"bufferView": idx_view, "componentType": 5123},
                       "values": {"bufferView": val_view}},
        }
    )
    # A target with no bufferView and no sparse block: all zeros.
    b.doc["accessors"].append({"componentType": 5126, "count": 3, "type": "VEC3"})
    b.doc.update(
        scenes=[{"nodes": [0]}],
        nodes=[{"mesh": 0, "weights": [0.5, 1.0]}],  # node weights override the mesh's
        meshes=[
            {
                "primitives": [
                    {"attributes": {"POSITION": 0, "COLOR_0": 1}, "targets": [{"POSITION": 2}, {"POSITION": 3}]}
                ],
                "weights": [0.0, 0.0],
            }
        ],
    )
    asset = load_gltf(b.gltf(tmp_path / "stride.gltf"))
    pose = asset.pose(0, normalize=False).primitives[0]
    np.testing.assert_allclose(pose.positions, TRI + [[0, 0, 0], [0, 0, 0], [0, 0, 1.0]], atol=1e-6)  # 0.5·2
    np.testing.assert_allclose(pose.colors, col, atol=1e-6)


def test_more_than_four_influences(tmp_path):
    # One vertex at (1,0,0) with 5 influences over JOINTS_0/WEIGHTS_0 and JOINTS_1/WEIGHTS_1. Joint j translates
    # by (0, j, 0) (no IBM → identity). Weights 0.1, 0.2, 0.3, 0.2 | 0.2 on joints 0..4:
    # y = 0.1·0 + 0.2·1 + 0.3·2 + 0.2·3 + 0.2·4 = 2.2.
    b = triangle_builder(
        WEIGHTS_0=np.array([[0.1, 0.2, 0.3, 0.2]] * 3, np.float32),
        WEIGHTS_1=np.array([[0.2, 0, 0, 0]] * 3, np.float32),
    )
    attrs = b.doc["meshes"][0]["primitives"][0]["attributes"]
    attrs["JOINTS_0"] = b.accessor(np.array([[0, 1, 2, 3]] * 3), np.uint8)
    attrs["JOINTS_1"] = b.accessor(np.array([[4, 0, 0, 0]] * 3), np.uint8)
    b.doc["nodes"] = [{"mesh": 0, "skin": 0, "translation": [100, 0, 0]}] + [
        {"translation": [0, j, 0]} for j in range(5)
    ]
    b.doc["scenes"] = [{"nodes": [0, 1, 2, 3, 4, 5]}]
    b.doc["skins"] = [{"joints": [1, 2, 3, 4, 5]}]
    asset = load_gltf(b.gltf(tmp_path / "five.gltf"))
    # The mesh node's translation (100,0,0) is ignored: skinned vertices follow the joints only.
    np.testing.assert_allclose(positions(asset, 0), TRI + [0, 2.2, 0], atol=1e-6)


def test_morph_then_skin_with_normals(tmp_path):
    # Morph first (+1 in x at weight 1), then a joint rotating 90° about z: (1,0,0)+(1,0,0) → (0,2,0).
    b = triangle_builder(
        NORMAL=np.array([[0, 0, 1]] * 3, np.float32),
        WEIGHTS_0=np.array([[1, 0, 0, 0]] * 3, np.float32),
    )
    attrs = b.doc["meshes"][0]["primitives"][0]["attributes"]
    attrs["JOINTS_0"] = b.accessor(np.zeros((3, 4)), np.uint16)
    target = b.accessor(np.array([[1, 0, 0]] * 3, np.float32))
    normal_target = b.accessor(np.array([[0, 1, -1]] * 3, np.float32))
    b.doc["meshes"][0]["primitives"][0]["targets"] = [{"POSITION": target, "NORMAL": normal_target}]
    b.doc["meshes"][0]["weights"] = [1.0]
    b.doc["nodes"] = [{"mesh": 0, "skin": 0}, {"rotation": z_rotation_quat(90).tolist()}]
    b.doc["scenes"] = [{"nodes": [0, 1]}]
    b.doc["skins"] = [{"joints": [1]}]
    asset = load_gltf(b.gltf(tmp_path / "morphskin.gltf"))
    pose = asset.pose(0, normalize=False).primitives[0]
    np.testing.assert_allclose(pose.positions, [rotate(z_rotation_quat(90), v + [1, 0, 0]) for v in TRI], atol=1e-6)
    # Normal (0,0,1) + (0,1,−1) = (0,1,0), turned 90° about z → (−1,0,0).
    np.testing.assert_allclose(pose.normals, [[-1, 0, 0]] * 3, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Materials, textures, containers
# ----------------------------------------------------------------------------------------------------------------

PIXELS = np.array([[[255, 0, 0, 255], [0, 255, 0, 255]], [[0, 0, 255, 128], [10, 20, 30, 255]]], np.uint8)


def textured_builder(tex_coord=1, image=None) -> Builder:
    b = triangle_builder(
        COLOR_0=np.array([[1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 1]], np.float32),
        TEXCOORD_0=np.zeros((3, 2), np.float32),
        TEXCOORD_1=np.array([[0, 0], [1, 0], [0, 1]], np.float32),
    )
    b.doc["meshes"][0]["primitives"][0]["material"] = 0
    b.doc["materials"] = [
        {
            "pbrMetallicRoughness": {
                "baseColorFactor": [0.5, 1.0, 0.25, 0.8],
                "baseColorTexture": {"index": 0, "texCoord": tex_coord},
            },
            "doubleSided": True,
        }
    ]
    b.doc["textures"] = [{"source": 0}]
    b.doc["images"] = [image or {"uri": "data:image/png;base64," + base64.b64encode(png_bytes(PIXELS)).decode()}]
    return b


def check_textured(asset):
    p = asset.pose(0).primitives[0]
    # colour = COLOR_0 (vec3 → alpha 1) × baseColorFactor
    np.testing.assert_allclose(p.colors, [[0.5, 1, 0.25, 0.8], [0.25, 0.5, 0.125, 0.8], [0.5, 0, 0.25, 0.8]], atol=1e-6)
    np.testing.assert_array_equal(p.texture, PIXELS)
    np.testing.assert_allclose(p.uvs, [[0, 0], [1, 0], [0, 1]])  # TEXCOORD_1, as texCoord says
    assert p.double_sided and p.texture.dtype == np.uint8 and p.uvs.dtype == np.float32


def test_texture_base_colour_factor_and_vertex_colour(tmp_path):
    check_textured(load_gltf(textured_builder().gltf(tmp_path / "tex.gltf")))
    # External image file relative to the .gltf, and an image stored in a bufferView of a .glb.
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "tex.png").write_bytes(png_bytes(PIXELS))
    check_textured(load_gltf(textured_builder(image={"uri": "sub%20dir/tex.png"}).gltf(tmp_path / "ext.gltf")))
    b = textured_builder()
    b.doc["images"] = [{"bufferView": b.view(png_bytes(PIXELS)), "mimeType": "image/png"}]
    check_textured(load_gltf(b.glb(tmp_path / "tex.glb")))


def test_texture_transform(tmp_path):
    # README example of KHR_texture_transform: offset [0,1], rotation π/2, scale 0.5 selects the lower-left quadrant:
    # u' = 0.5·v, v' = 1 − 0.5·u.
    b = textured_builder(tex_coord=0)
    b.doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["extensions"] = {
        "KHR_texture_transform": {"offset": [0, 1], "rotation": math.pi / 2, "scale": [0.5, 0.5], "texCoord": 1}
    }
    # The extension's texCoord (1) overrides the textureInfo's (0, whose UVs are all zero here).
    uv1 = b.accessor(np.array([[0, 0], [1, 0], [1, 1]], np.float32))
    b.doc["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_1"] = uv1
    b.doc["extensionsRequired"] = b.doc["extensionsUsed"] = ["KHR_texture_transform"]
    p = load_gltf(b.gltf(tmp_path / "tt.gltf")).pose(0).primitives[0]
    np.testing.assert_allclose(p.uvs, [[0, 1], [0, 0.5], [0.5, 0.5]], atol=1e-6)


def test_untextured_default_material(tmp_path):
    p = load_gltf(triangle_builder().gltf(tmp_path / "plain.gltf")).pose(0).primitives[0]
    np.testing.assert_allclose(p.colors, np.ones((3, 4)))
    assert p.uvs is None and p.texture is None and not p.double_sided


def test_external_buffer_file(tmp_path):
    b = triangle_builder()
    b.gltf(tmp_path / "x.gltf")
    (tmp_path / "geometry.bin").write_bytes(bytes(b.blob))
    b.doc["buffers"] = [{"byteLength": len(b.blob), "uri": "geometry.bin"}]
    (tmp_path / "x.gltf").write_text(json.dumps(b.doc))
    np.testing.assert_allclose(positions(load_gltf(tmp_path / "x.gltf"), 0), TRI)


# ----------------------------------------------------------------------------------------------------------------
# Topology, scene graph, winding
# ----------------------------------------------------------------------------------------------------------------


def test_strip_fan_missing_indices_and_skipped_points(tmp_path):
    quad = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    b = Builder()
    pos = b.accessor(quad)
    fan_idx = b.accessor(np.array([0, 1, 3, 2])[:, None], np.uint16)
    b.doc.update(
        scenes=[{"nodes": [0]}],
        nodes=[{"mesh": 0}],
        meshes=[{"primitives": [
            {"attributes": {"POSITION": pos}, "mode": 5},  # strip, no indices → 0,1,2,3
            {"attributes": {"POSITION": pos}, "mode": 6, "indices": fan_idx},
            {"attributes": {"POSITION": pos}, "mode": 0},  # points: skipped
            {"attributes": {"POSITION": pos}, "mode": 1},  # lines: skipped
        ]}],
    )
    asset = load_gltf(b.gltf(tmp_path / "topo.gltf"))
    mesh = asset.pose(0, normalize=False)
    assert len(mesh.primitives) == 2 and asset.num_triangles == 4
    strip, fan = mesh.primitives
    # Strip (spec): triangle 0 = (v0, v1, v2); triangle 1 (odd) = (v1, v3, v2) — both counter-clockwise.
    # No NORMAL → vertices are unshared per face, so compare corner positions.
    np.testing.assert_allclose(strip.positions[strip.indices], quad[[[0, 1, 2], [1, 3, 2]]])
    # Fan (spec): triangle i = (v_{i+1}, v_{i+2}, v_0) over indices [0,1,3,2]: (1,3,0), (3,2,0).
    np.testing.assert_allclose(fan.positions[fan.indices], quad[[[1, 3, 0], [3, 2, 0]]])
    for p in (strip, fan):
        np.testing.assert_allclose(p.normals, np.tile([0, 0, 1], (len(p.normals), 1)), atol=1e-6)


def test_instances_matrix_nodes_and_mirroring(tmp_path):
    b = triangle_builder()
    # The mesh is drawn by node 1 (matrix: translate x+5, column-major) and node 2 (scale −1 in x: a mirror).
    b.doc["nodes"] = [
        {"children": [1, 2]},
        {"mesh": 0, "matrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 5, 0, 0, 1]},
        {"mesh": 0, "scale": [-1, 1, 1]},
    ]
    asset = load_gltf(b.gltf(tmp_path / "inst.gltf"))
    a, m = asset.pose(0, normalize=False).primitives
    np.testing.assert_allclose(a.positions, TRI + [5, 0, 0])
    np.testing.assert_allclose(m.positions, TRI * [-1, 1, 1])
    # The mirror reverses the winding (negative determinant); after flipping, the face is CCW seen from +z and its
    # flat normal still points to +z.
    np.testing.assert_array_equal(m.indices, a.indices[:, [0, 2, 1]])
    np.testing.assert_allclose(m.normals, [[0, 0, 1]] * 3, atol=1e-6)
    corners = m.positions[m.indices[0]]
    assert np.cross(corners[1] - corners[0], corners[2] - corners[0])[2] > 0


def test_scene_selection_and_no_scenes(tmp_path):
    b = triangle_builder()
    b.doc["nodes"] = [{"mesh": 0}, {"mesh": 0, "translation": [3, 0, 0]}]
    b.doc["scenes"] = [{"nodes": [0]}, {"nodes": [1]}]
    b.doc["scene"] = 1
    np.testing.assert_allclose(positions(load_gltf(b.gltf(tmp_path / "s1.gltf")), 0), TRI + [3, 0, 0])
    del b.doc["scenes"], b.doc["scene"]  # no scenes: every root node is drawn
    asset = load_gltf(b.gltf(tmp_path / "s2.gltf"))
    assert len(asset.pose(0).primitives) == 2


# ----------------------------------------------------------------------------------------------------------------
# Animation selection, time mapping, static files
# ----------------------------------------------------------------------------------------------------------------


def two_animation_file(tmp_path) -> Path:
    b = triangle_builder()
    add_animation(b, [0, 2], [[0, 0, 0], [2, 0, 0]], "LINEAR", name="walk")
    add_animation(b, [0, 1], [[0, 0, 0], [0, 0, 3]], "LINEAR")  # unnamed → "animation_1"
    return b.gltf(tmp_path / "two.gltf")


def test_animation_selection(tmp_path):
    path = two_animation_file(tmp_path)
    walk = load_gltf(path)
    assert walk.animation_names == ["walk", "animation_1"] and walk.animation_index == 0
    assert walk.duration == 2.0
    np.testing.assert_allclose(positions(walk, 1.0), TRI + [1, 0, 0], atol=1e-6)
    for sel in (1, "animation_1"):
        other = load_gltf(path, animation=sel)
        assert other.animation_index == 1 and other.duration == 1.0
        np.testing.assert_allclose(positions(other, 0.5), TRI + [0, 0, 1.5], atol=1e-6)
    assert load_gltf(path, animation="walk").animation_index == 0
    rest = load_gltf(path, animation=None)
    assert not rest.has_animation and rest.duration == 0.0
    np.testing.assert_allclose(positions(rest, 1.0), TRI)
    for bad in (2, -1, "run"):
        with pytest.raises(AssetError) as err:
            load_gltf(path, animation=bad)
        msg = str(err.value)
        assert msg.startswith(str(path)) and "walk" in msg and "animation_1" in msg and str(bad) in msg


def test_frame_times(tmp_path):
    asset = load_gltf(two_animation_file(tmp_path))  # duration 2.0
    np.testing.assert_allclose(asset.frame_times(24), np.arange(24) / 24)  # official: the first second
    np.testing.assert_allclose(asset.frame_times(4, fps=8), [0, 0.125, 0.25, 0.375])
    np.testing.assert_allclose(asset.frame_times(5, mode="clip"), [0, 0.5, 1.0, 1.5, 2.0])
    assert asset.frame_times(24).shape == (24,)
    with pytest.raises(ValueError):
        asset.frame_times(24, mode="blender")


def test_static_file(tmp_path):
    asset = load_gltf(triangle_builder().gltf(tmp_path / "static.gltf"))
    assert not asset.has_animation and asset.animation_index is None and asset.animation_names == []
    assert asset.duration == 0.0
    np.testing.assert_array_equal(asset.frame_times(4, mode="clip"), np.zeros(4))
    np.testing.assert_array_equal(asset.pose(0).primitives[0].positions, asset.pose(3.7).primitives[0].positions)
    with pytest.raises(AssetError, match="no animations"):
        load_gltf(tmp_path / "static.gltf", animation="walk")


def test_normalisation_is_fixed_at_frame0(tmp_path):
    asset = load_gltf(two_animation_file(tmp_path))
    # Frame 0: triangle in [0,1]² → scale 1, offset −(0.5, 0.5, 0). At t=2 it has moved +2 in x, still visible.
    scale, offset = asset.normalization
    assert scale == 1.0
    np.testing.assert_allclose(offset, [-0.5, -0.5, 0])
    np.testing.assert_allclose(asset.pose(2.0).primitives[0].positions, TRI + [2, 0, 0] + offset, atol=1e-6)


def test_static_arrays_are_shared_read_only(tmp_path):
    asset = load_gltf(triangle_builder().gltf(tmp_path / "ro.gltf"))
    p = asset.pose(0).primitives[0]
    with pytest.raises(ValueError):
        p.colors[0, 0] = 0.0
    p.positions[0, 0] = 42.0  # positions are fresh every pose
    assert asset.pose(0).primitives[0].positions[0, 0] != 42.0


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------


def assert_asset_error(path, *words, **kwargs):
    with pytest.raises(AssetError) as err:
        load_gltf(path, **kwargs)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    for word in words:
        assert word.lower() in msg.lower(), (word, msg)
    return msg


def test_missing_file(tmp_path):
    assert_asset_error(tmp_path / "nope.glb", "not found")


def test_corrupt_glb(tmp_path):
    b = triangle_builder()
    good = b.glb(tmp_path / "good.glb").read_bytes()
    load_gltf(tmp_path / "good.glb")
    cases = {
        "truncated.glb": (good[: len(good) // 2], ["truncated"]),
        "tiny.glb": (good[:7], ["truncated"]),
        "magic.glb": (b"gLTF" + good[4:], ["magic"]),
        "version.glb": (good[:4] + struct.pack("<I", 1) + good[8:], ["version"]),
        "chunk.glb": (good[:12] + struct.pack("<I", 10**6) + good[16:], ["chunk", "past the end"]),
        "nobin.glb": (make_glb(json.dumps(b.doc).encode(), None), ["BIN chunk"]),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_asset_error(tmp_path / name, *words)


def test_json_that_is_not_gltf(tmp_path):
    cases = {
        "garbage.gltf": ("{not json", ["invalid JSON"]),
        "list.gltf": ("[1, 2]", ["not a glTF"]),
        "noasset.gltf": ('{"nodes": []}', ["asset.version"]),
        "v1.gltf": ('{"asset": {"version": "1.0"}}', ["version", "1.0"]),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        assert_asset_error(tmp_path / name, *words)
    (tmp_path / "binary.gltf").write_bytes(b"\xff\xfe\x00garbage")
    assert_asset_error(tmp_path / "binary.gltf", "not a glTF")


@pytest.mark.parametrize("extension", ["KHR_texture_basisu", "KHR_materials_volume"])
def test_unsupported_required_extension(tmp_path, extension):
    b = triangle_builder()
    b.doc["extensionsRequired"] = b.doc["extensionsUsed"] = [extension]
    assert_asset_error(b.gltf(tmp_path / "ext.gltf"), extension, "unsupported")
    b.doc["extensionsRequired"] = []  # merely used, not required: loads (the extension is ignored)
    load_gltf(b.gltf(tmp_path / "used.gltf"))


def test_missing_external_files(tmp_path):
    b = triangle_builder()
    b.doc["buffers"] = [{"byteLength": 10, "uri": "missing_geometry.bin"}]
    (tmp_path / "buf.gltf").write_text(json.dumps(b.doc))
    assert_asset_error(tmp_path / "buf.gltf", "missing_geometry.bin", "not found")
    b = textured_builder(image={"uri": "missing_texture.png"})
    assert_asset_error(b.gltf(tmp_path / "img.gltf"), "missing_texture.png", "not found")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    b = textured_builder(image={"uri": "broken.png"})
    assert_asset_error(b.gltf(tmp_path / "badimg.gltf"), "image 0", "decoded")


def test_accessor_past_buffer_end(tmp_path):
    b = triangle_builder()
    b.doc["accessors"][0]["count"] = 1000
    assert_asset_error(b.gltf(tmp_path / "count.gltf"), "accessor 0", "past the end")
    b = triangle_builder()
    b.doc["bufferViews"][0]["byteLength"] = 10_000
    assert_asset_error(b.gltf(tmp_path / "view.gltf"), "bufferView 0", "past the end")
    b = triangle_builder()
    b.gltf(tmp_path / "short.gltf")
    b.doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(bytes(b.blob[:8])).decode()
    (tmp_path / "short.gltf").write_text(json.dumps(b.doc))
    assert_asset_error(tmp_path / "short.gltf", "buffer 0")


def test_too_many_triangles(tmp_path):
    path = triangle_builder().gltf(tmp_path / "big.gltf")
    load_gltf(path, max_triangles=1)
    msg = assert_asset_error(path, "1 triangles", "limit of 0", max_triangles=0)
    assert "max_triangles" in msg
    # The default limit is stated in the message too: pretend the scene draws the mesh 2,000,001 times.
    b = triangle_builder()
    b.doc["accessors"][0]["count"] = 3 * (MAX_TRIANGLES + 1)  # refused from counts, before any buffer is read
    assert_asset_error(b.gltf(tmp_path / "huge.gltf"), "2,000,001", "2,000,000")


def test_scene_without_triangles(tmp_path):
    b = triangle_builder()
    b.doc["meshes"][0]["primitives"][0]["mode"] = 0
    assert_asset_error(b.gltf(tmp_path / "points.gltf"), "no triangles")
    b = triangle_builder()
    b.doc["nodes"] = [{}]
    assert_asset_error(b.gltf(tmp_path / "empty.gltf"), "no triangles")


def test_dangling_references_and_bad_shapes(tmp_path):
    cases = {
        "noattrs.gltf": lambda d: d["meshes"][0]["primitives"][0].update(attributes={}),
        "mesh.gltf": lambda d: d["nodes"][0].update(mesh=7),
        "child.gltf": lambda d: d["nodes"][0].update(children=[5]),
        "cycle.gltf": lambda d: d.update(nodes=[{"mesh": 0, "children": [1]}, {"children": [0]}]),
        "acc.gltf": lambda d: d["meshes"][0]["primitives"][0]["attributes"].update(POSITION=9),
        "type.gltf": lambda d: d["accessors"][0].update(type="VEC7"),
        "ctype.gltf": lambda d: d["accessors"][0].update(componentType=1234),
        "index.gltf": lambda d: d["meshes"][0]["primitives"][0].update(indices=0),
        "nodes.gltf": lambda d: d.update(nodes="oops"),
        "trs.gltf": lambda d: d["nodes"][0].update(translation=[1, 2]),
    }
    for name, edit in cases.items():
        b = triangle_builder()
        edit(b.doc)
        with pytest.raises(AssetError) as err:
            load_gltf(b.gltf(tmp_path / name))
        assert str(err.value).startswith(str(tmp_path / name)), str(err.value)


def test_bad_animation_data(tmp_path):
    b = triangle_builder()
    add_animation(b, [0, 1], [[0, 0, 0], [1, 0, 0]], "LINEAR")
    b.doc["animations"][0]["samplers"][0]["interpolation"] = "BEZIER"
    assert_asset_error(b.gltf(tmp_path / "interp.gltf"), "interpolation", "BEZIER")
    b = triangle_builder()
    add_animation(b, [0, 1, 2], [[0, 0, 0], [1, 0, 0]], "LINEAR")
    assert_asset_error(b.gltf(tmp_path / "count.gltf"), "sampler output", "expected 3 keys")
