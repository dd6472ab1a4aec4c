"""Procedural animated assets (diffusion4d.assets.procedural) and the GLB writer under them (gltf_writer).

Files are read back with pygltflib plus a few lines of numpy here (not the writer's code), and — when the package's
loader is present — posed with ``diffusion4d.assets.gltf.load_gltf`` to check that the motion is real.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pygltflib
import pytest

from diffusion4d.assets import procedural as proc
from diffusion4d.assets.gltf_writer import Channel, GlbBuilder, MorphTarget, Primitive

try:
    from diffusion4d.assets.gltf import load_gltf
except ImportError:  # the loader is written in parallel; its checks below skip without it
    load_gltf = None

SKINNED = {"biped_walk", "quadruped_trot", "bird_flap", "fish_swim", "snake_slither", "caterpillar_crawl",
           "waving_figure"}
MORPHED = {"bouncing_ball", "growing_plant", "jellyfish_pulse", "flag_wave"}
TEXTURED = {"bouncing_ball", "door_swing", "flag_wave"}
VERTEX_COLOURED = {"spinning_top", "snake_slither", "fish_swim", "caterpillar_crawl"}

_DTYPES = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def parse(glb: bytes) -> tuple[pygltflib.GLTF2, bytes]:
    gltf = pygltflib.GLTF2.load_from_bytes(glb)
    return gltf, gltf.binary_blob()


def accessor(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = _WIDTHS[acc.type]
    dtype = np.dtype(_DTYPES[acc.componentType])
    assert acc.byteOffset in (0, None) and view.byteStride is None  # the writer packs tightly, one view each
    assert view.byteLength == acc.count * width * dtype.itemsize
    data = np.frombuffer(blob, dtype, acc.count * width, view.byteOffset)
    return data.reshape(acc.count, width)


def first_index_of_each_family(seed: int = 0) -> dict[str, int]:
    found: dict[str, int] = {}
    index = 0
    while len(found) < len(proc.FAMILIES):
        family = proc.asset_uid(seed, index).split("_", 2)[2]
        found.setdefault(family, index)
        index += 1
    return found


@pytest.fixture(scope="module")
def family_assets() -> dict[str, proc.ProceduralAsset]:
    return {family: proc.make_asset(0, index) for family, index in first_index_of_each_family().items()}


def attribute_accessors(prim) -> dict[str, int]:
    return {k: v for k, v in vars(prim.attributes).items() if v is not None}


def target_accessors(target) -> dict[str, int]:
    items = target.items() if isinstance(target, dict) else vars(target).items()
    return {k: v for k, v in items if v is not None}


def srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def nearest_palette_names(srgb_colours: np.ndarray) -> set[str]:
    names = list(proc.PALETTE)
    table = np.array([proc.PALETTE[n] for n in names])
    d = np.linalg.norm(srgb_colours[:, None, :3] - table[None], axis=-1)
    return {names[i] for i in np.unique(d.argmin(1))}


def colours_in_file(glb: bytes) -> set[str]:
    """Palette names nearest to any colour the file shows: base-colour factors, vertex colours, texture texels."""
    import io

    from PIL import Image

    gltf, blob = parse(glb)
    found: list[np.ndarray] = []
    for mesh in gltf.meshes:
        for prim in mesh.primitives:
            mat = gltf.materials[prim.material]
            factor = np.array(mat.pbrMetallicRoughness.baseColorFactor)[:3]
            colour = np.tile(factor, (1, 1))
            if prim.attributes.COLOR_0 is not None:
                colour = accessor(gltf, blob, prim.attributes.COLOR_0)[:, :3] * factor
            found.append(srgb(colour))
            info = mat.pbrMetallicRoughness.baseColorTexture
            if info is not None:
                image = gltf.images[gltf.textures[info.index].source]
                view = gltf.bufferViews[image.bufferView]
                png = blob[view.byteOffset: view.byteOffset + view.byteLength]
                texels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3) / 255.0
                found.append(texels * srgb(factor))
    return nearest_palette_names(np.concatenate(found))


# ----------------------------------------------------------------------------------------------------------------
# The writer
# ----------------------------------------------------------------------------------------------------------------


def _small_document() -> bytes:
    """A skinned, morphed, textured, vertex-coloured triangle pair animated by every interpolation mode."""
    b = GlbBuilder()
    tex = b.add_texture(np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3))
    mat = b.add_material((1.0, 0.5, 0.25), texture=tex)
    positions = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.5]], np.float32)
    normals = np.tile([0, 0, 1.0], (4, 1))
    prim = Primitive(positions, normals, np.array([[0, 1, 2], [0, 2, 3]]), material=mat,
                     colors=np.full((4, 4), 0.5), uvs=positions[:, :2],
                     joints=np.array([[0, 1, 0, 0]] * 4), weights=np.array([[0.75, 0.25, 0, 0]] * 4),
                     targets=[MorphTarget(np.full((4, 3), 0.1), np.zeros((4, 3)))])
    mesh = b.add_mesh([prim])
    j0 = b.add_node(name="j0", translation=(0, 0, 0))
    j1 = b.add_node(name="j1", translation=(0, 1, 0))
    b.attach(j0, j1)
    skin = b.add_skin([j0, j1], np.stack([np.eye(4), np.linalg.inv(np.array(
        [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1.0]]))]))
    skinned = b.add_node(mesh=mesh, skin=skin)
    times = np.array([0.0, 0.5, 1.0])
    cubic = np.zeros((3, 3, 3))
    cubic[:, 1] = [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    b.add_animation([
        Channel(j1, "rotation", times, [[0, 0, 0, 1], [0, 0, 0.7071068, 0.7071068], [0, 0, 1, 0]]),
        Channel(j0, "translation", times, cubic, "CUBICSPLINE"),
        Channel(j0, "scale", times, [[1, 1, 1], [2, 2, 2], [1, 1, 1]], "STEP"),
        Channel(skinned, "weights", times, [[0.0], [1.0], [0.0]]),
    ], name="all")
    return b.to_glb([j0, skinned])


def test_writer_builds_a_valid_deterministic_glb():
    glb = _small_document()
    assert glb == _small_document()  # byte-identical for identical calls
    assert glb[:4] == b"glTF" and int.from_bytes(glb[8:12], "little") == len(glb)
    gltf, blob = parse(glb)
    assert gltf.asset.version == "2.0"
    assert all(v.byteOffset % 4 == 0 for v in gltf.bufferViews)
    assert len(blob) % 4 == 0 and gltf.buffers[0].byteLength == len(blob)
    prim = gltf.meshes[0].primitives[0]
    pos = accessor(gltf, blob, prim.attributes.POSITION)
    acc = gltf.accessors[prim.attributes.POSITION]
    np.testing.assert_array_equal(acc.min, pos.min(0))
    np.testing.assert_array_equal(acc.max, pos.max(0))
    assert gltf.accessors[prim.attributes.JOINTS_0].componentType == pygltflib.UNSIGNED_BYTE
    # joints listed with weight 0 are zeroed (validators warn about them otherwise)
    np.testing.assert_array_equal(accessor(gltf, blob, prim.attributes.JOINTS_0)[0], [0, 1, 0, 0])
    assert gltf.meshes[0].weights == [0.0]
    ibm = accessor(gltf, blob, gltf.skins[0].inverseBindMatrices).reshape(2, 4, 4)
    assert ibm[1][3, 1] == -1.0  # column-major: the translation sits in the last column, stored last
    anim = gltf.animations[0]
    assert [s.interpolation for s in anim.samplers] == ["LINEAR", "CUBICSPLINE", "STEP", "LINEAR"]
    assert len({s.input for s in anim.samplers}) == 1  # channels on one time grid share one input accessor
    counts = [gltf.accessors[s.output].count for s in anim.samplers]
    assert counts == [3, 9, 3, 3]
    assert gltf.accessors[anim.samplers[0].input].max == [1.0]
    image = gltf.images[0]
    assert image.mimeType == "image/png" and gltf.textures[0].source == 0


@pytest.mark.parametrize("bad", [
    dict(path="rotation", values=[[0, 0, 0, 2.0]] * 2),  # not unit quaternions
    dict(path="translation", values=[[0, 0]] * 2),  # wrong width
    dict(path="colour", values=[[0, 0, 0]] * 2),  # unknown path
    dict(path="translation", values=[[0, 0, 0]] * 2, interpolation="CUBIC"),
    dict(path="translation", values=[[0, 0, 0]] * 2, times=[0.5, 0.5]),  # not increasing
    dict(path="weights", values=[[0.0]] * 2),  # the node has no morph targets
])
def test_writer_rejects_malformed_channels(bad):
    b = GlbBuilder()
    node = b.add_node()
    times = bad.pop("times", [0.0, 1.0])
    with pytest.raises(ValueError):
        b.add_animation([Channel(node, times=np.asarray(times), **bad)])


def test_writer_rejects_bad_geometry():
    b = GlbBuilder()
    p = np.zeros((3, 3))
    with pytest.raises(ValueError, match="indices"):
        b.add_mesh([Primitive(p, p, np.array([[0, 1, 3]]))])
    with pytest.raises(ValueError, match="weights"):
        b.add_mesh([Primitive(p, p, np.array([[0, 1, 2]]), joints=np.zeros((3, 4)), weights=np.ones((3, 4)))])
    with pytest.raises(ValueError, match="finite"):
        b.add_mesh([Primitive(p + np.nan, p, np.array([[0, 1, 2]]))])


# ----------------------------------------------------------------------------------------------------------------
# Geometry generators
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", [
    proc.box((1.0, 2.0, 0.5)),
    proc.ellipsoid((0.3, 0.5, 0.2), axis="z"),
    proc.cylinder(0.2, 1.0, rings=4, top_radius=0.1),
    proc.cone(0.3, 0.6),
    proc.limb(0.1, (0, 0, 0), (0.3, -0.5, 0.2)),
    proc.transformed(proc.ellipsoid((1, 1, 1)), linear_map=np.diag([-1.0, 1, 1])),  # a mirror
], ids=["box", "ellipsoid", "cylinder", "cone", "limb", "mirrored"])
def test_generated_solids_are_closed_and_face_outwards(part):
    tri = part.positions[part.indices]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume > 0  # counter-clockwise seen from outside encloses positive volume
    # vertex normals agree with the faces they belong to
    vn = part.normals[part.indices].mean(1)
    assert np.mean(np.einsum("ij,ij->i", face_n, vn) > 0) > 0.98
    np.testing.assert_allclose(np.linalg.norm(part.normals, axis=1), 1.0, atol=1e-9)


def test_chain_weights_are_smooth_partitions_of_unity():
    coord = np.linspace(-0.5, 1.5, 201)
    joints, weights = proc.chain_weights(coord, [0.0, 0.5, 1.0], [7, 8, 9], blend=0.1)
    np.testing.assert_allclose(weights.sum(1), 1.0)
    w8 = (weights * (joints == 8)).sum(1)
    assert w8[np.searchsorted(coord, 0.75)] == pytest.approx(1.0)  # inside bone 8's span
    assert w8[np.searchsorted(coord, 0.25)] == pytest.approx(0.0)
    assert np.abs(np.diff(w8)).max() < 0.2  # ramps, not jumps


# ----------------------------------------------------------------------------------------------------------------
# Assets
# ----------------------------------------------------------------------------------------------------------------


def test_make_asset_is_deterministic_and_seeded():
    a, b = proc.make_asset(3, 7), proc.make_asset(3, 7)
    assert a.glb == b.glb and a.caption == b.caption and a.attributes == b.attributes
    assert a.uid == proc.asset_uid(3, 7) == f"proc3_00007_{a.family}"
    assert proc.make_asset(4, 7).glb != a.glb
    assert proc.make_asset(3, 8).glb != a.glb
    with pytest.raises(ValueError):
        proc.make_asset(-1, 0)


def test_families_are_drawn_evenly():
    families = [proc.asset_uid(0, i).split("_", 2)[2] for i in range(800)]
    counts = np.array([families.count(f) for f in proc.FAMILIES])
    assert len(proc.FAMILIES) >= 12 and counts.min() > 0.4 * counts.mean()


@pytest.mark.parametrize("family", proc.FAMILIES)
def test_every_family_writes_a_valid_animated_glb(family, family_assets):
    asset = family_assets[family]
    assert asset.family == family
    assert len(asset.glb) < 200_000
    gltf, blob = parse(asset.glb)
    assert gltf.asset.version == "2.0"
    assert all(v.byteOffset % 4 == 0 for v in gltf.bufferViews)
    triangles = 0
    for mesh in gltf.meshes:
        for prim in mesh.primitives:
            attrs = attribute_accessors(prim)
            n = gltf.accessors[attrs["POSITION"]].count
            assert all(gltf.accessors[a].count == n for a in attrs.values())
            pos = accessor(gltf, blob, attrs["POSITION"])
            acc = gltf.accessors[attrs["POSITION"]]
            np.testing.assert_allclose(acc.min, pos.min(0), rtol=0, atol=0)
            np.testing.assert_allclose(acc.max, pos.max(0), rtol=0, atol=0)
            idx = accessor(gltf, blob, prim.indices)
            assert idx.max() < n and len(idx) % 3 == 0
            triangles += len(idx) // 3
            normals = accessor(gltf, blob, attrs["NORMAL"])
            np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
            for target in prim.targets or []:
                t = target_accessors(target)
                tp = accessor(gltf, blob, t["POSITION"])
                np.testing.assert_array_equal(gltf.accessors[t["POSITION"]].min, tp.min(0))
                assert gltf.accessors[t["POSITION"]].count == n
    assert triangles < 5000

    anim = gltf.animations[0]
    assert anim.channels and len(anim.samplers) == len(anim.channels)
    for ch in anim.channels:
        s = anim.samplers[ch.sampler]
        keys = gltf.accessors[s.input].count
        times = accessor(gltf, blob, s.input)[:, 0]
        assert np.all(np.diff(times) > 0) and times[-1] >= 1.0 - 1e-6  # covers the rendered first second
        per_key = 3 if s.interpolation == "CUBICSPLINE" else 1
        if ch.target.path == "weights":
            per_key *= len(gltf.meshes[gltf.nodes[ch.target.node].mesh].weights)
        assert gltf.accessors[s.output].count == keys * per_key

    has_skin = bool(gltf.skins)
    assert has_skin == (family in SKINNED)
    for skin in gltf.skins:
        assert gltf.accessors[skin.inverseBindMatrices].count == len(skin.joints)
        for node in gltf.nodes:
            if node.skin is not None:
                for prim in gltf.meshes[node.mesh].primitives:
                    joints = accessor(gltf, blob, prim.attributes.JOINTS_0)
                    weights = accessor(gltf, blob, prim.attributes.WEIGHTS_0)
                    assert joints.max() < len(skin.joints)
                    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    morphed = any(p.targets for m in gltf.meshes for p in m.primitives)
    assert morphed == (family in MORPHED)
    assert any(ch.target.path == "weights" for ch in anim.channels) == (family in MORPHED)
    if family in TEXTURED:
        assert gltf.images and gltf.textures
    if family in VERTEX_COLOURED:
        assert any(p.attributes.COLOR_0 is not None for m in gltf.meshes for p in m.primitives)


@pytest.mark.parametrize("family", proc.FAMILIES)
def test_captions_name_colours_and_sizes_that_are_in_the_file(family, family_assets):
    asset = family_assets[family]
    words = set(asset.caption.replace(",", " ").split())
    named = words & set(proc.PALETTE)
    assert named, asset.caption  # every caption names at least one colour
    assert named <= colours_in_file(asset.glb), (asset.caption, colours_in_file(asset.glb))
    gltf, _ = parse(asset.glb)
    root_scale = gltf.nodes[gltf.scenes[0].nodes[0]].scale[0]
    assert root_scale == pytest.approx(asset.attributes["scale"])
    if "small" in words:
        assert asset.attributes["size"] == "small" and root_scale < 0.6
    if "large" in words:
        assert asset.attributes["size"] == "large" and root_scale > 1.5
    json.dumps(asset.attributes)  # plain JSON types only


def test_dataset_writes_captions_and_resumes(tmp_path):
    out = tmp_path / "procedural"
    paths = proc.write_procedural_dataset(out, 5, seed=2, progress=False)
    assert [p.name for p in paths] == [f"{proc.asset_uid(2, i)}.glb" for i in range(5)]
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in paths] + ["captions.jsonl"])
    lines = (out / "captions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["uid"] for r in records] == [p.stem for p in paths]
    for r, p in zip(records, paths):
        asset = proc.make_asset(2, paths.index(p))
        assert r == {"uid": asset.uid, "caption": asset.caption, "family": asset.family,
                     "attributes": asset.attributes}
        assert p.read_bytes() == asset.glb

    old = 1_000_000_000  # mark every file as old, so any rewrite shows in its mtime
    for p in paths:
        os.utime(p, (old, old))
    paths[1].unlink()  # lost: regenerated
    paths[2].write_bytes(paths[2].read_bytes()[:100])  # truncated: rewritten
    (out / "captions.jsonl").write_text("\n".join(lines[:3]) + "\nnot json\n")  # partly lost
    again = proc.write_procedural_dataset(out, 6, seed=2, progress=False)
    assert again[:5] == paths
    assert [os.stat(p).st_mtime for p in (paths[0], paths[3], paths[4])] == [old] * 3
    assert paths[1].exists() and os.stat(paths[2]).st_mtime != old
    assert all(proc.glb_is_complete(p) for p in again)
    records = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [r["uid"] for r in records] == [p.stem for p in again]
    assert records[4]["caption"] == proc.make_asset(2, 4).caption


# ----------------------------------------------------------------------------------------------------------------
# Motion, through the package's loader
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(load_gltf is None, reason="diffusion4d.assets.gltf.load_gltf is not available")
def test_every_family_moves_visibly_and_stays_near_the_unit_cube(family_assets, tmp_path):
    outside = []
    for family, asset in family_assets.items():
        path = tmp_path / f"{asset.uid}.glb"
        path.write_bytes(asset.glb)
        loaded = load_gltf(path)
        poses = {t: np.concatenate([p.positions for p in loaded.pose(t).primitives]) for t in (0.0, 0.25, 0.5)}
        assert all(np.all(np.isfinite(p)) for p in poses.values())
        for t in (0.25, 0.5):
            moved = np.linalg.norm(poses[t] - poses[0.0], axis=1)
            assert moved.mean() > 0.01 and moved.max() > 0.05, (family, t)  # motion is real, not a twitch
        extent = max(np.abs(np.concatenate([p.positions for p in loaded.pose(t).primitives])).max()
                     for t in loaded.frame_times(24))
        if extent > 0.7:
            outside.append((family, round(float(extent), 3)))
    assert len(outside) <= 2, outside


def test_chest_lids_close_as_far_as_their_attributes_and_captions_say():
    """How far a lid closes is drawn, so the family's motion magnitude varies with its swing (issue 21)."""
    chests = [proc.make_asset(0, i) for i in range(400) if proc.asset_uid(0, i).endswith("chest_lid")][:12]
    closest = []
    for asset in chests:
        gltf, blob = parse(asset.glb)
        lid = next(i for i, node in enumerate(gltf.nodes) if node.name == "lid")
        channel = next(c for c in gltf.animations[0].channels if c.target.node == lid and c.target.path == "rotation")
        q = accessor(gltf, blob, gltf.animations[0].samplers[channel.sampler].output)  # xyzw about −X
        opening = np.degrees(2 * np.arctan2(-q[:, 0], q[:, 3]))
        attrs = asset.attributes
        assert opening.max() == pytest.approx(attrs["max_open_deg"], abs=0.1)
        assert opening.min() == pytest.approx(attrs["min_open_deg"], abs=1.0)  # keys straddle the turn
        assert (attrs["min_open_deg"] > 25) == ("part way" in asset.caption or "half closed" in asset.caption)
        closest.append(attrs["min_open_deg"])
    assert min(closest) < 25 < 40 < max(closest)  # both kinds of caption are exercised
