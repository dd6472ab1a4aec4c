"""Headless rasterizer: geometry matches cameras.project, depth, colours, textures, alpha, robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion4d import cameras
from diffusion4d.assets.mesh import PosedMesh, PosedPrimitive
from diffusion4d.render import Renderer, RenderOutput, rasterizer
from diffusion4d.render.rasterizer import LIGHTS, light_intensity, linear_to_srgb

W = H = 128
FOV = cameras.fov_xy(40.0, W, H)

# ---------------------------------------------------------------------------------------------- mesh builders


def _prim(positions, normals, indices, color, uvs=None, texture=None) -> PosedPrimitive:
    positions = np.asarray(positions, np.float32)
    n = len(positions)
    normals = np.broadcast_to(np.asarray(normals, np.float32), (n, 3)).copy()
    colors = np.broadcast_to(np.asarray(color, np.float32), (n, 4)).copy()
    return PosedPrimitive(
        positions=positions,
        normals=normals,
        indices=np.asarray(indices, np.uint32).reshape(-1, 3),
        colors=colors,
        uvs=None if uvs is None else np.asarray(uvs, np.float32),
        texture=texture,
    )


def cube(half=0.5, color=(0.8, 0.8, 0.8, 1.0), flip_winding=False) -> PosedMesh:
    """Axis-aligned cube at the origin, 24 vertices (flat normals), CCW outward faces."""
    positions, normals, indices = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.roll([0.0, 1.0, 0.0], axis) if axis != 1 else np.array([0.0, 0.0, 1.0])
            v = np.cross(n, u)
            base = len(positions)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                positions.append(half * (n + a * u + b * v))
                normals.append(n)
            tris = [[0, 1, 2], [0, 2, 3]]
            if np.dot(np.cross(u, v), n) < 0:  # keep CCW seen from outside
                tris = [[0, 2, 1], [0, 3, 2]]
            if flip_winding:
                tris = [t[::-1] for t in tris]
            indices += [[base + i for i in t] for t in tris]
    return PosedMesh([_prim(positions, normals, indices, color)])


def quad(center, normal, size, color, up=(0.0, 1.0, 0.0), uvs=False, texture=None) -> PosedMesh:
    """A square of side ``size`` facing ``normal``; vertices TL, TR, BR, BL as seen from the front."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    right = np.cross(np.asarray(up, float), n)
    right /= np.linalg.norm(right)
    top = np.cross(n, right)
    c, s = np.asarray(center, float), size / 2
    positions = [c - s * right + s * top, c + s * right + s * top, c + s * right - s * top, c - s * right - s * top]
    uv = [[0, 0], [1, 0], [1, 1], [0, 1]] if uvs else None  # glTF: (0, 0) is the image's top-left
    return PosedMesh([_prim(positions, n, [[0, 3, 2], [0, 2, 1]], color, uv, texture)])


def front_camera(distance=2.0, target=(0.0, 0.0, 0.0), direction=(0.0, 0.0, 1.0)) -> np.ndarray:
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    return cameras.look_at(np.asarray(target) + distance * d, target)


def expected_srgb(albedo, normal) -> np.ndarray:
    """sRGB uint8 that the lighting constants predict for a flat linear albedo under ``normal``."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    return np.round(255 * linear_to_srgb(np.asarray(albedo, float) * light_intensity(n)))


@pytest.fixture(scope="module")
def renderer():
    with Renderer(W, H, samples=4) as r:
        yield r


# ---------------------------------------------------------------------------------------------- outputs & geometry


def test_output_types_and_cube_coverage(renderer):
    out = renderer.render(cube(), front_camera(), *FOV)
    assert isinstance(out, RenderOutput)
    assert out.rgba.shape == (H, W, 4) and out.rgba.dtype == np.uint8
    assert out.depth.shape == (H, W) and out.depth.dtype == np.float32
    assert out.alpha.shape == (H, W) and out.alpha.dtype == np.float32
    border = np.concatenate([out.alpha[0], out.alpha[-1], out.alpha[:, 0], out.alpha[:, -1]])
    assert np.all(border == 0)
    assert out.alpha[H // 2, W // 2] == 1.0
    empty = out.alpha == 0
    assert np.all(out.rgba[empty] == 0) and np.all(out.depth[empty] == 0)
    assert np.array_equal(out.rgba[..., 3], np.round(out.alpha * 255).astype(np.uint8))


def test_depth_of_cube_face(renderer):
    for distance in (2.0, 3.5):
        out = renderer.render(cube(0.5), front_camera(distance), *FOV)
        assert abs(out.depth[H // 2, W // 2] - (distance - 0.5)) < 1e-3
        inside = out.alpha == 1
        assert np.all(out.depth[inside] >= distance - 0.5 - 1e-3)


@pytest.mark.parametrize("azimuth", [0.0, 55.0, 140.0, 260.0])
def test_triangle_lands_where_project_says(renderer, azimuth):
    tri = np.array([[0.25, 0.15, 0.1], [0.40, 0.20, -0.05], [0.30, 0.35, 0.05]])
    normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    mesh = PosedMesh([_prim(tri, normal / np.linalg.norm(normal), [[0, 1, 2]], (1, 1, 1, 1))])
    mesh.primitives[0].double_sided = True  # some azimuths see its back
    c2w = cameras.orbit_camera_to_world(2, start_deg=azimuth, elevation_deg=20.0)[0]
    for w, h in ((W, H), (96, 64)):  # a non-square image too
        fov = cameras.fov_xy(40.0, w, h)
        r = renderer if (w, h) == (W, H) else Renderer(w, h)
        try:
            out = r.render(mesh, c2w, *fov)
        finally:
            if r is not renderer:
                r.close()
        uv, depth = cameras.project(tri, c2w, *fov, w, h)
        assert np.all(depth > 0)
        a = out.alpha.astype(np.float64)
        assert a.sum() > 3
        ys, xs = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
        centroid = np.array([(a * xs).sum(), (a * ys).sum()]) / a.sum()
        assert np.linalg.norm(centroid - uv.mean(0)) < 1.0, (centroid, uv.mean(0))


# ---------------------------------------------------------------------------------------------- shading


def test_flat_quad_facing_key_light_has_predicted_colour(renderer):
    key = np.asarray(LIGHTS[0][0])
    albedo = (0.8, 0.5, 0.2)
    out = renderer.render(quad((0, 0, 0), key, 1.0, (*albedo, 1.0)), front_camera(direction=key), *FOV)
    centre = out.rgba[H // 2 - 5 : H // 2 + 5, W // 2 - 5 : W // 2 + 5, :3].reshape(-1, 3).astype(int)
    expected = expected_srgb(albedo, key)
    assert np.all(np.abs(centre - expected) <= 1), (centre[0], expected)
    # The key light is the brightest direction for this albedo: it must not be clipped.
    assert light_intensity(key) < 1.0


def test_lighting_is_view_independent(renderer):
    """The same face, seen from two different cameras on its front side, has the same colour."""
    mesh = quad((0, 0, 0), (0, 0, 1), 1.0, (0.6, 0.6, 0.6, 1.0))
    a = renderer.render(mesh, front_camera(direction=(0.0, 0.0, 1.0)), *FOV)
    b = renderer.render(mesh, front_camera(direction=(0.6, 0.4, 0.7)), *FOV)
    assert np.array_equal(a.rgba[H // 2, W // 2], b.rgba[H // 2, W // 2])


def test_back_faces_are_shaded_like_the_side_seen(renderer):
    albedo = (0.7, 0.7, 0.7)
    mesh = quad((0, 0, 0), (0, 0, 1), 1.0, (*albedo, 1.0))  # normal +Z, seen from behind
    mesh.primitives[0].double_sided = True  # single-sided back faces are culled (test_gltf_materials.py)
    out = renderer.render(mesh, front_camera(direction=(0.0, 0.0, -1.0)), *FOV)
    got = out.rgba[H // 2, W // 2, :3].astype(int)
    assert np.all(np.abs(got - expected_srgb(albedo, (0, 0, -1))) <= 1)
    assert got.min() > 80  # not black


def test_inside_out_cube_shades_like_normal_cube(renderer):
    cam = cameras.orbit_camera_to_world(2, start_deg=30.0, elevation_deg=25.0)[0]
    # Double-sided: single-sided, the inside-out cube's outer faces would be culled as back faces.
    good, inside_out = cube(), cube(flip_winding=True)
    good.primitives[0].double_sided = inside_out.primitives[0].double_sided = True
    good = renderer.render(good, cam, *FOV)
    bad = renderer.render(inside_out, cam, *FOV)
    assert np.array_equal(good.alpha, bad.alpha)
    assert np.abs(good.rgba.astype(int) - bad.rgba.astype(int)).max() <= 1


def test_lighting_never_black():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(10000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    i = light_intensity(n)
    assert i.min() > 0.15 and i.max() < 1.0


def test_straight_alpha_edges_keep_colour(renderer):
    albedo = (0.2, 0.6, 0.9)
    mesh = quad((0, 0, 0), (0, 0, 1), 0.8, (*albedo, 1.0))
    c2w = front_camera() @ _rot_z(math.radians(17))  # tilt the image so edges cut pixels
    out = renderer.render(mesh, c2w, *FOV)
    edge = (out.alpha > 0) & (out.alpha < 1)
    assert edge.sum() > 20
    interior = out.rgba[H // 2, W // 2, :3].astype(int)
    assert np.all(np.abs(out.rgba[edge][:, :3].astype(int) - interior) <= 1)
    assert np.all(out.depth[edge] > 0)  # edges get the nearest covered depth, never 0


def _rot_z(angle):
    m = np.eye(4)
    m[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    return m


# ---------------------------------------------------------------------------------------------- textures


def _quadrant_texture():
    """8×8 sRGB texture of 4×4 blocks: top-left red, top-right green, bottom-left blue, bottom-right white.

    Blocks, not single texels, so bilinear filtering cannot bleed into the quadrant centres.
    """
    quadrants = np.array(
        [[[255, 0, 0, 255], [0, 255, 0, 255]], [[0, 0, 255, 255], [255, 255, 255, 255]]], dtype=np.uint8
    )
    return np.repeat(np.repeat(quadrants, 4, axis=0), 4, axis=1)


def test_texture_orientation_top_left_texel_lands_top_left(renderer):
    mesh = quad((0, 0, 0), (0, 0, 1), 1.0, (1, 1, 1, 1), uvs=True, texture=_quadrant_texture())
    out = renderer.render(mesh, front_camera(), *FOV)
    (u0, v0), (u1, v1) = cameras.project(np.array([[-0.25, 0.25, 0], [0.25, -0.25, 0]]), front_camera(), *FOV, W, H)[0]
    top_left = out.rgba[int(v0), int(u0), :3].astype(int)
    bottom_right = out.rgba[int(v1), int(u1), :3].astype(int)
    top_right = out.rgba[int(v0), int(u1), :3].astype(int)
    bottom_left = out.rgba[int(v1), int(u0), :3].astype(int)
    lit = expected_srgb((1, 1, 1), (0, 0, 1))
    assert np.all(np.abs(top_left - [lit[0], 0, 0]) <= 1)
    assert np.all(np.abs(top_right - [0, lit[1], 0]) <= 1)
    assert np.all(np.abs(bottom_left - [0, 0, lit[2]]) <= 1)
    assert np.all(np.abs(bottom_right - lit) <= 1)


def test_texture_is_decoded_from_srgb_and_multiplied_by_vertex_colour(renderer):
    texture = np.full((4, 4, 3), 128, np.uint8)  # RGB textures are accepted too
    colour = (0.5, 1.0, 0.25)
    mesh = quad((0, 0, 0), (0, 0, 1), 1.0, (*colour, 1), uvs=True, texture=texture)
    out = renderer.render(mesh, front_camera(), *FOV)
    linear = rasterizer.srgb_to_linear(128 / 255) * np.asarray(colour)
    assert np.all(np.abs(out.rgba[H // 2, W // 2, :3].astype(int) - expected_srgb(linear, (0, 0, 1))) <= 1)


def test_texture_cache_reuses_and_evicts():
    tex_a, tex_b = _quadrant_texture(), _quadrant_texture()[::-1].copy()
    with Renderer(32, 32, texture_cache_size=1) as r:
        mesh_a = quad((0, 0, 0), (0, 0, 1), 1.0, (1, 1, 1, 1), uvs=True, texture=tex_a)
        r.render(mesh_a, front_camera(), *FOV)
        first = r._textures[next(iter(r._textures))][1]
        r.render(mesh_a, front_camera(), *FOV)
        assert len(r._textures) == 1 and r._textures[next(iter(r._textures))][1] is first
        r.render(quad((0, 0, 0), (0, 0, 1), 1.0, (1, 1, 1, 1), uvs=True, texture=tex_b), front_camera(), *FOV)
        assert len(r._textures) == 1 and r._textures[next(iter(r._textures))][0] is tex_b


# ---------------------------------------------------------------------------------------------- robustness


def test_deterministic(renderer):
    cam = cameras.orbit_camera_to_world(2, start_deg=33.0, elevation_deg=15.0)[0]
    a, b = renderer.render(cube(), cam, *FOV), renderer.render(cube(), cam, *FOV)
    assert np.array_equal(a.rgba, b.rgba) and np.array_equal(a.depth, b.depth) and np.array_equal(a.alpha, b.alpha)


def test_two_renderers_in_one_process_interleaved(renderer):
    cam = cameras.orbit_camera_to_world(2, start_deg=70.0, elevation_deg=10.0)[0]
    reference = renderer.render(cube(), cam, *FOV)
    with Renderer(W, H, samples=4) as other, Renderer(48, 40, samples=0) as small:
        for _ in range(2):
            got = other.render(cube(), cam, *FOV)
            s = small.render(cube(), cam, *cameras.fov_xy(40.0, 48, 40))
            again = renderer.render(cube(), cam, *FOV)
            assert np.array_equal(got.rgba, reference.rgba) and np.array_equal(again.rgba, reference.rgba)
            assert s.rgba.shape == (40, 48, 4)
            assert set(np.unique(s.alpha)) <= {0.0, 1.0}  # no MSAA: binary coverage


def test_empty_and_zero_triangle_primitives(renderer):
    empty = _prim(np.zeros((3, 3)), (0, 0, 1), np.zeros((0, 3)), (1, 1, 1, 1))
    out = renderer.render(PosedMesh([empty]), front_camera(), *FOV)
    assert not out.rgba.any() and not out.depth.any() and not out.alpha.any()
    out = renderer.render(PosedMesh([empty, *cube().primitives]), front_camera(), *FOV)
    assert out.alpha[H // 2, W // 2] == 1


def test_degenerate_normals_fall_back_to_face_normal(renderer):
    mesh = quad((0, 0, 0), (0, 0, 1), 1.0, (0.7, 0.7, 0.7, 1.0))
    mesh.primitives[0].normals[:] = 0.0
    out = renderer.render(mesh, front_camera(), *FOV)
    assert np.all(np.abs(out.rgba[H // 2, W // 2, :3].astype(int) - expected_srgb((0.7,) * 3, (0, 0, 1))) <= 1)


def test_bad_indices_rejected(renderer):
    bad = _prim(np.zeros((3, 3)), (0, 0, 1), [[0, 1, 3]], (1, 1, 1, 1))
    with pytest.raises(ValueError, match="out of range"):
        renderer.render(PosedMesh([bad]), front_camera(), *FOV)


def test_missing_opengl_gives_helpful_error(monkeypatch):
    import moderngl

    def fail(*args, **kwargs):
        raise Exception("libEGL.so: cannot open shared object file")

    monkeypatch.setattr(moderngl, "create_context", fail)
    with pytest.raises(RuntimeError, match="egl") as info:
        Renderer(16, 16)
    assert "libegl1" in str(info.value) and "libgl1-mesa-dri" in str(info.value)


def test_closed_renderer_refuses():
    r = Renderer(16, 16)
    r.close()
    r.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        r.render(cube(), front_camera(), *FOV)


def _sphere(radius=0.5, n_lat=24, n_lon=32) -> PosedMesh:
    theta, phi = np.meshgrid(np.linspace(0, np.pi, n_lat + 1), np.linspace(0, 2 * np.pi, n_lon + 1), indexing="ij")
    normals = np.stack([np.sin(theta) * np.sin(phi), np.cos(theta), np.sin(theta) * np.cos(phi)], -1).reshape(-1, 3)
    a = (np.arange(n_lat)[:, None] * (n_lon + 1) + np.arange(n_lon)[None]).reshape(-1)
    b = a + n_lon + 1
    indices = np.concatenate([np.stack([a, b, a + 1], -1), np.stack([a + 1, b, b + 1], -1)])
    prim = _prim(radius * normals, (0, 0, 1), indices, (0.5, 0.5, 0.5, 1))
    prim.normals[:] = normals
    return PosedMesh([prim])


def test_silhouette_depth_is_never_extrapolated(renderer):
    """Every covered pixel, edges included, has a depth the sphere can actually have."""
    distance, radius = 2.0, 0.5
    for azimuth in (0.0, 40.0, 123.0):
        c2w = cameras.orbit_camera_to_world(2, start_deg=azimuth, elevation_deg=20.0, distance=distance)[0]
        out = renderer.render(_sphere(radius), c2w, *FOV)
        covered = out.alpha > 0
        assert np.array_equal(covered, out.depth > 0)
        assert (out.alpha[covered] < 1).sum() > 20
        assert out.depth[covered].min() >= distance - radius - 1e-3
        assert out.depth[covered].max() <= distance


def test_too_many_samples_are_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="MSAA"):
        r = Renderer(16, 16, samples=1024)
    with r:
        assert 1 < r.samples < 1024
        assert r.render(cube(), front_camera(), *FOV).alpha.shape == (16, 16)
