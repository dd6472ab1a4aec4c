"""glTF materials through loader and renderer: alpha modes (OPAQUE, MASK + cutoff, BLEND), doubleSided, emissive.

Each test writes a tiny .gltf (one buffer and PNG images as data URIs) with camera-facing unit quads and renders
it at 48² on the headless EGL renderer (llvmpipe on a CPU).
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from diffusion4d import cameras
from diffusion4d.assets.gltf import AssetError, load_gltf
from diffusion4d.assets.gltf_io import SUPPORTED_EXTENSIONS
from diffusion4d.render.rasterizer import Renderer, light_intensity, linear_to_srgb

W = H = 48
FOV = cameras.fov_xy(40.0, W, H)
LEFT, RIGHT, MID = int(0.35 * W), int(0.65 * W), H // 2  # pixels inside the left / right half of the quad


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _png(rgba: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgba, np.uint8), "RGBA").save(buf, format="PNG")
    return _data_uri(buf.getvalue(), "image/png")


def write_gltf(path, quads: list[tuple[float, int]], materials: list[dict], images=(), extensions_used=()):
    """A scene of unit quads facing +Z (CCW seen from +Z), one primitive each: quads are (z, material index).

    Vertices TL, TR, BR, BL with glTF uvs (0, 0) … (0, 1) in TEXCOORD_0; images are [h, w, 4] uint8 sRGB arrays,
    texture i samples image i.
    """
    positions = np.array([[-0.5, 0.5, 0], [0.5, 0.5, 0], [0.5, -0.5, 0], [-0.5, -0.5, 0]], np.float32)
    normals = np.tile(np.array([0, 0, 1], np.float32), (4, 1))
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    indices = np.array([0, 3, 2, 0, 2, 1], np.uint16)
    blob, views, accessors, prims = b"", [], [], []

    def add(arr: np.ndarray, type_: str, component: int, **extra) -> int:
        nonlocal blob
        data = np.ascontiguousarray(arr).tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)})
        blob += data + b"\0" * (-len(data) % 4)
        accessors.append(
            {"bufferView": len(views) - 1, "componentType": component, "count": len(arr), "type": type_, **extra}
        )
        return len(accessors) - 1

    for z, material in quads:
        p = positions + np.array([0, 0, z], np.float32)
        attributes = {
            "POSITION": add(p, "VEC3", 5126, min=p.min(0).tolist(), max=p.max(0).tolist()),
            "NORMAL": add(normals, "VEC3", 5126),
            "TEXCOORD_0": add(uvs, "VEC2", 5126),
        }
        prims.append({"attributes": attributes, "indices": add(indices, "SCALAR", 5123), "material": material})
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": prims}],
        "materials": materials,
        "buffers": [{"byteLength": len(blob), "uri": _data_uri(blob, "application/octet-stream")}],
        "bufferViews": views,
        "accessors": accessors,
    }
    if len(images):
        doc["images"] = [{"uri": _png(im)} for im in images]
        doc["textures"] = [{"source": i} for i in range(len(images))]
    if extensions_used:
        doc["extensionsUsed"] = doc["extensionsRequired"] = list(extensions_used)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def renderer():
    with Renderer(W, H, samples=4, cull_single_sided=True) as r:
        yield r


def render(renderer, path, from_behind=False):
    mesh = load_gltf(path).pose(0.0, normalize=False)
    eye = np.array([0.0, 0.0, -2.0 if from_behind else 2.0])
    return renderer.render(mesh, cameras.look_at(eye, np.zeros(3)), *FOV), mesh


def half_alpha_texture() -> np.ndarray:
    """White, alpha 0 on the left half and 1 on the right half, [4, 8, 4]."""
    tex = np.full((4, 8, 4), 255, np.uint8)
    tex[:, :4, 3] = 0
    return tex


def textured(alpha_mode: str, **extra) -> dict:
    return {"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}, "alphaMode": alpha_mode, **extra}


# ---------------------------------------------------------------------------------------------- alpha modes


def test_mask_discards_texels_below_the_cutoff(renderer, tmp_path):
    path = write_gltf(tmp_path / "m.gltf", [(0.0, 0)], [textured("MASK")], [half_alpha_texture()])
    out, mesh = render(renderer, path)
    assert mesh.primitives[0].alpha_mode == "MASK" and mesh.primitives[0].alpha_cutoff == 0.5
    assert out.alpha[MID, LEFT] == 0 and out.rgba[MID, LEFT, 3] == 0 and out.depth[MID, LEFT] == 0
    assert out.alpha[MID, RIGHT] == 1 and out.rgba[MID, RIGHT, 3] == 255
    assert out.depth[MID, RIGHT] == pytest.approx(2.0, abs=1e-3)


def test_opaque_ignores_alpha(renderer, tmp_path):
    path = write_gltf(tmp_path / "o.gltf", [(0.0, 0)], [textured("OPAQUE")], [half_alpha_texture()])
    out, _ = render(renderer, path)
    assert out.alpha[MID, LEFT] == 1 and out.alpha[MID, RIGHT] == 1
    assert np.array_equal(out.rgba[MID, LEFT], out.rgba[MID, RIGHT])


@pytest.mark.parametrize("cutoff, drawn", [(None, False), (0.3, True), (0.5, False)])
def test_mask_cutoff_applies_to_the_base_colour_factor(renderer, tmp_path, cutoff, drawn):
    material = {"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 0.4]}, "alphaMode": "MASK"}
    if cutoff is not None:
        material["alphaCutoff"] = cutoff
    out, _ = render(renderer, write_gltf(tmp_path / "c.gltf", [(0.0, 0)], [material]))
    assert out.alpha[MID, W // 2] == (1.0 if drawn else 0.0)


def test_blend_composites_over_opaque_and_keeps_coverage_alpha(renderer, tmp_path):
    red_half = {"pbrMetallicRoughness": {"baseColorFactor": [1, 0, 0, 0.5]}, "alphaMode": "BLEND"}
    blue = {"pbrMetallicRoughness": {"baseColorFactor": [0, 0, 1, 1]}}
    # The blended quad comes first in the file: it must still be drawn after (over) the opaque one behind it.
    path = write_gltf(tmp_path / "b.gltf", [(0.0, 0), (-0.3, 1)], [red_half, blue])
    out, _ = render(renderer, path)
    light = light_intensity(np.array([0.0, 0.0, 1.0]))
    expected = linear_to_srgb(np.array([0.5 * light, 0.0, 0.5 * light])) * 255
    centre = out.rgba[MID, W // 2]
    assert np.all(np.abs(centre[:3].astype(float) - expected) <= 2), (centre, expected)
    assert out.alpha[MID, W // 2] == 1
    assert out.depth[MID, W // 2] == pytest.approx(2.3, abs=1e-3)  # blended surfaces write no depth

    alone = write_gltf(tmp_path / "b1.gltf", [(0.0, 0)], [red_half])
    out, _ = render(renderer, alone)
    assert out.alpha[MID, W // 2] == pytest.approx(0.5, abs=0.01)  # coverage × opacity
    assert out.rgba[MID, W // 2, 3] in (127, 128)
    straight = linear_to_srgb(light) * 255  # colour stays straight (un-premultiplied)
    assert abs(int(out.rgba[MID, W // 2, 0]) - straight) <= 2 and out.rgba[MID, W // 2, 2] == 0
    assert out.depth[MID, W // 2] == 0


# ---------------------------------------------------------------------------------------------- doubleSided


@pytest.mark.parametrize("double_sided", [False, True])
def test_back_faces_are_drawn_only_when_double_sided(renderer, tmp_path, double_sided):
    material = {"pbrMetallicRoughness": {"baseColorFactor": [0.7, 0.7, 0.7, 1]}, "doubleSided": double_sided}
    path = write_gltf(tmp_path / "d.gltf", [(0.0, 0)], [material])
    front, _ = render(renderer, path)
    back, _ = render(renderer, path, from_behind=True)
    assert front.alpha[MID, W // 2] == 1
    assert back.alpha.max() == (1.0 if double_sided else 0.0)
    if double_sided:  # the back is lit with the flipped normal
        expected = linear_to_srgb(0.7 * light_intensity(np.array([0.0, 0.0, -1.0]))) * 255
        assert abs(int(back.rgba[MID, W // 2, 0]) - expected) <= 1


def test_without_culling_both_sides_are_drawn(tmp_path):
    """The default: single-sided faces too are drawn from behind, as Blender drew them in our data checks."""
    material = {"pbrMetallicRoughness": {"baseColorFactor": [0.7, 0.7, 0.7, 1]}, "doubleSided": False}
    path = write_gltf(tmp_path / "s.gltf", [(0.0, 0)], [material])
    with Renderer(W, H, samples=4) as plain:
        back, _ = render(plain, path, from_behind=True)
    assert back.alpha.max() == 1.0


# ---------------------------------------------------------------------------------------------- emissive


def emissive_srgb(linear: float) -> float:
    return float(linear_to_srgb(linear)) * 255


@pytest.mark.parametrize("strength, linear", [(None, 0.25), (2.0, 0.5)])
def test_emissive_factor_and_strength_on_a_black_base(renderer, tmp_path, strength, linear):
    material = {"pbrMetallicRoughness": {"baseColorFactor": [0, 0, 0, 1]}, "emissiveFactor": [0.25, 0, 0]}
    used = ()
    if strength is not None:
        material["extensions"] = {"KHR_materials_emissive_strength": {"emissiveStrength": strength}}
        used = ("KHR_materials_emissive_strength",)  # required: the loader must accept it
    out, _ = render(renderer, write_gltf(tmp_path / "e.gltf", [(0.0, 0)], [material], extensions_used=used))
    got = out.rgba[MID, W // 2, :3].astype(float)
    assert abs(got[0] - emissive_srgb(linear)) <= 1.5 and got[1] == got[2] == 0, got


def test_emissive_texture_is_srgb_and_multiplies_the_factor(renderer, tmp_path):
    tex = np.zeros((2, 2, 4), np.uint8)
    tex[..., 0], tex[..., 3] = round(emissive_srgb(0.5)), 255  # sRGB-encoded linear 0.5
    material = {
        "pbrMetallicRoughness": {"baseColorFactor": [0, 0, 0, 1]},
        "emissiveFactor": [1, 1, 0.5],
        "emissiveTexture": {"index": 0},
    }
    out, mesh = render(renderer, write_gltf(tmp_path / "t.gltf", [(0.0, 0)], [material], [tex]))
    assert mesh.primitives[0].emissive_texture is not None
    got = out.rgba[MID, W // 2, :3].astype(float)
    assert abs(got[0] - emissive_srgb(0.5)) <= 1.5 and got[1] == got[2] == 0, got


def test_emissive_strength_is_a_supported_extension():
    assert "KHR_materials_emissive_strength" in SUPPORTED_EXTENSIONS


# ---------------------------------------------------------------------------------- specular-glossiness, WebP

SPEC_GLOSS = "KHR_materials_pbrSpecularGlossiness"


def colour_texture() -> np.ndarray:
    tex = np.zeros((4, 8, 4), np.uint8)
    tex[:, :4], tex[:, 4:] = (200, 40, 10, 255), (10, 90, 220, 255)
    return tex


def test_specular_glossiness_diffuse_renders_as_the_base_colour(renderer, tmp_path):
    diffuse = {"diffuseFactor": [0.2, 0.6, 1.0, 1.0], "diffuseTexture": {"index": 0}, "glossinessFactor": 0.3}
    # The metallic-roughness block is the fallback for readers without the extension: it must lose.
    spec_gloss = {"pbrMetallicRoughness": {"baseColorFactor": [1, 0, 0, 1]}, "extensions": {SPEC_GLOSS: diffuse}}
    base = {"pbrMetallicRoughness": {"baseColorFactor": diffuse["diffuseFactor"], "baseColorTexture": {"index": 0}}}
    got, mesh = render(renderer, write_gltf(tmp_path / "sg.gltf", [(0.0, 0)], [spec_gloss], [colour_texture()],
                                            extensions_used=[SPEC_GLOSS]))
    expected, _ = render(renderer, write_gltf(tmp_path / "base.gltf", [(0.0, 0)], [base], [colour_texture()]))
    np.testing.assert_allclose(mesh.primitives[0].colors, np.tile(diffuse["diffuseFactor"], (4, 1)))
    assert np.array_equal(got.rgba, expected.rgba)
    assert got.rgba[MID, LEFT, 0] > got.rgba[MID, LEFT, 2] and got.rgba[MID, RIGHT, 2] > got.rgba[MID, RIGHT, 0]


def test_a_malformed_diffuse_factor_names_the_material(tmp_path):
    material = {"extensions": {SPEC_GLOSS: {"diffuseFactor": [1, 1, 1]}}}
    path = write_gltf(tmp_path / "bad.gltf", [(0.0, 0)], [material])
    with pytest.raises(AssetError, match=r"bad\.gltf: material 0: the base colour factor must be 4 numbers"):
        load_gltf(path)


@pytest.mark.parametrize("with_fallback", [True, False])
def test_webp_texture_source_comes_first(tmp_path, with_fallback):
    webp = colour_texture()
    buf = io.BytesIO()
    Image.fromarray(webp, "RGBA").save(buf, format="WEBP", lossless=True)
    fallback = np.full_like(webp, 128)
    path = write_gltf(tmp_path / "w.gltf", [(0.0, 0)], [textured("OPAQUE")], [fallback],
                      extensions_used=["EXT_texture_webp"])
    doc = json.loads(path.read_text())
    doc["images"].append({"uri": _data_uri(buf.getvalue(), "image/webp")})
    doc["textures"] = [{"extensions": {"EXT_texture_webp": {"source": 1}}, **({"source": 0} if with_fallback else {})}]
    path.write_text(json.dumps(doc))
    assert np.array_equal(load_gltf(path).pose(0.0).primitives[0].texture, webp)
