import json
import math

import numpy as np
import pytest

from diffusion4d import cameras


def test_orbit_azimuths_and_timestamps_follow_the_official_trajectory():
    az = cameras.orbit_azimuths(24, start_deg=0.0)
    assert az.shape == (24,)
    assert az[0] == 0.0 and az[-1] == pytest.approx(360.0)  # first and last views coincide
    assert az[1] == pytest.approx(360.0 / 23)
    tau = cameras.orbit_timestamps(24)
    assert tau[0] == 0.0 and tau[-1] == 1.0 and tau[12] == pytest.approx(12 / 23)
    with pytest.raises(ValueError, match="at least 2 views"):
        cameras.orbit_azimuths(1)


def test_orbit_positions_turn_from_front_towards_plus_x():
    c2w = cameras.orbit_camera_to_world(5, start_deg=0.0, distance=2.0)  # azimuths 0, 90, 180, 270, 360
    positions = c2w[:, :3, 3]
    np.testing.assert_allclose(positions[0], [0, 0, 2], atol=1e-12)
    np.testing.assert_allclose(positions[1], [2, 0, 0], atol=1e-12)
    np.testing.assert_allclose(positions[2], [0, 0, -2], atol=1e-12)
    np.testing.assert_allclose(positions[3], [-2, 0, 0], atol=1e-12)
    for m in c2w:  # rotations are orthonormal, cameras look at the origin with +Y up
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
        forward = -m[:3, 2]
        np.testing.assert_allclose(forward, -m[:3, 3] / np.linalg.norm(m[:3, 3]), atol=1e-12)
        assert m[1, 1] == pytest.approx(1.0)


def test_elevation_raises_the_camera():
    c2w = cameras.orbit_camera_to_world(2, elevation_deg=30.0, distance=2.0)
    np.testing.assert_allclose(c2w[0, :3, 3], [0, 1.0, 2 * math.cos(math.radians(30))], atol=1e-12)


@pytest.mark.parametrize("azimuth", [0.0, 45.0, 90.0, 180.0, 250.0])
def test_known_points_project_where_they_should(azimuth):
    W = H = 256
    x_fov, y_fov = cameras.fov_xy(cameras.DEFAULT_FOV_DEG, W, H)
    c2w = cameras.orbit_camera_to_world(2, start_deg=azimuth)[0]
    # The origin projects to the image centre at depth = distance.
    uv, depth = cameras.project(np.zeros((1, 3)), c2w, x_fov, y_fov, W, H)
    np.testing.assert_allclose(uv[0], [128, 128], atol=1e-9)
    assert depth[0] == pytest.approx(2.0)
    # A point above the origin lands above the centre (smaller row), on the vertical mid-line.
    uv, _ = cameras.project(np.array([[0.0, 0.5, 0.0]]), c2w, x_fov, y_fov, W, H)
    f = (W / 2) / math.tan(x_fov / 2)
    np.testing.assert_allclose(uv[0], [128, 128 - f * 0.5 / 2.0], atol=1e-9)
    # The camera's right vector in the plane through the origin lands right of centre.
    phi = math.radians(azimuth)
    right = np.array([math.cos(phi), 0.0, -math.sin(phi)])
    uv, _ = cameras.project(0.3 * right[None], c2w, x_fov, y_fov, W, H)
    np.testing.assert_allclose(uv[0], [128 + f * 0.3 / 2.0, 128], atol=1e-9)


def test_front_view_sees_plus_x_on_the_right_and_the_unit_cube_fits():
    W = H = 256
    x_fov, y_fov = cameras.fov_xy(cameras.DEFAULT_FOV_DEG, W, H)
    c2w = cameras.orbit_camera_to_world(2)[0]
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    uv, depth = cameras.project(corners, c2w, x_fov, y_fov, W, H)
    assert np.all(depth > 0)
    assert np.all((uv > 0) & (uv < W))  # the normalised asset is always in frame at distance 2
    uv_px, _ = cameras.project(np.array([[0.4, 0, 0]]), c2w, x_fov, y_fov, W, H)
    assert uv_px[0, 0] > 128


def test_fov_spans_the_larger_side():
    x_fov, y_fov = cameras.fov_xy(39.6, 200, 100)
    assert x_fov == pytest.approx(math.radians(39.6))
    assert math.tan(y_fov / 2) == pytest.approx(math.tan(x_fov / 2) / 2)
    x_fov, y_fov = cameras.fov_xy(39.6, 100, 200)
    assert y_fov == pytest.approx(math.radians(39.6))


def test_json_uses_blender_world_axes_and_round_trips(tmp_path):
    c2w = cameras.orbit_camera_to_world(24, start_deg=37.0, elevation_deg=10.0)[5]
    x_fov, y_fov = cameras.fov_xy(39.6, 256, 256)
    record = cameras.camera_to_json(c2w, x_fov, y_fov)
    assert set(record) == {"matrix_world", "x_fov", "y_fov"}
    mw = np.array(record["matrix_world"])
    # Blender world is +Z up: the camera's height (glTF y) is Blender z, glTF +z is Blender −y.
    assert mw[2, 3] == pytest.approx(c2w[1, 3]) and mw[1, 3] == pytest.approx(-c2w[2, 3])
    path = tmp_path / "multi5.json"
    path.write_text(json.dumps(record))
    back, xf, yf = cameras.read_camera_json(path)
    np.testing.assert_allclose(back, c2w, atol=1e-12)
    assert (xf, yf) == (x_fov, y_fov)


def test_front_camera_in_blender_axes_sits_on_minus_y():
    record = cameras.camera_to_json(cameras.orbit_camera_to_world(2)[0], 0.69, 0.69)
    np.testing.assert_allclose(np.array(record["matrix_world"])[:3, 3], [0, -2, 0], atol=1e-12)


def test_bad_camera_json_names_the_file(tmp_path):
    path = tmp_path / "multi0.json"
    path.write_text('{"x_fov": 0.5}')
    with pytest.raises(ValueError, match="multi0.json.*matrix_world"):
        cameras.read_camera_json(path)
    path.write_text("not json")
    with pytest.raises(ValueError, match="multi0.json"):
        cameras.read_camera_json(path)
    path.write_text(json.dumps({"matrix_world": [[1, 2], [3, 4]], "x_fov": 0.5, "y_fov": 0.5}))
    with pytest.raises(ValueError, match="4x4"):
        cameras.read_camera_json(path)
