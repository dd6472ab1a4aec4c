"""Orbit cameras: the one place that fixes trajectories, intrinsics and axis conventions.

Conventions (DESIGN.md, "Orbit"):

* World axes are glTF's: +Y up, the asset's front faces +Z. Assets are normalised to the unit cube at the origin.
* A camera pose is a camera-to-world matrix ``c2w`` [4, 4] in OpenGL/Blender camera axes: the camera looks down
  its local −Z, +Y is up in the image, +X is right.
* View i of an orbit of T views sits at azimuth φ_i = φ_0 + 360°·i/(T−1) (so the first and last views coincide),
  elevation θ, distance d: position d·(cos θ sin φ, sin θ, cos θ cos φ), i.e. turning from +Z towards +X.
  Its timestamp is τ_i = i/(T−1).
* Camera JSON files (``multi{i}.json``) use the official keys: ``matrix_world`` is the camera-to-world matrix in
  *Blender's* world axes (+Z up, front = −Y), which is what Blender's glTF importer turns glTF axes into and what
  the authors' render script saved; ``x_fov`` / ``y_fov`` are in radians. We convert on write and on read, so
  everything inside the package works in glTF axes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: Blender's default camera (50 mm lens on a 36 mm sensor), used by the official renders.
DEFAULT_FOV_DEG = 39.6
DEFAULT_DISTANCE = 2.0
DEFAULT_NUM_VIEWS = 24

#: glTF world (+Y up) → Blender world (+Z up): (x, y, z) ↦ (x, −z, y), as Blender's glTF importer does.
GLTF_TO_BLENDER = np.array(
    [[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64
)
BLENDER_TO_GLTF = GLTF_TO_BLENDER.T  # a rotation: its inverse is its transpose


def orbit_azimuths(num_views: int = DEFAULT_NUM_VIEWS, start_deg: float = 0.0) -> np.ndarray:
    """Azimuths φ_i = φ_0 + 360°·i/(T−1) in degrees, shape [T]; first and last coincide (mod 360)."""
    if num_views < 2:
        raise ValueError(f"an orbit needs at least 2 views, got {num_views}")
    return start_deg + 360.0 * np.arange(num_views) / (num_views - 1)


def orbit_timestamps(num_views: int = DEFAULT_NUM_VIEWS) -> np.ndarray:
    """Normalised timestamps τ_i = i/(T−1) ∈ [0, 1], shape [T]."""
    if num_views < 2:
        raise ValueError(f"an orbit needs at least 2 views, got {num_views}")
    return np.arange(num_views) / (num_views - 1)


def look_at(position: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world [4, 4] (OpenGL camera axes) of a camera at ``position`` [3] looking at ``target`` [3]."""
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: any right vector will do
        right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, position
    return c2w


def orbit_camera_to_world(
    num_views: int = DEFAULT_NUM_VIEWS,
    start_deg: float = 0.0,
    elevation_deg: float = 0.0,
    distance: float = DEFAULT_DISTANCE,
) -> np.ndarray:
    """Camera-to-world matrices [T, 4, 4] of the orbit, in glTF world axes, looking at the origin."""
    phi = np.deg2rad(orbit_azimuths(num_views, start_deg))
    theta = math.radians(elevation_deg)
    positions = distance * np.stack(
        [math.cos(theta) * np.sin(phi), np.full_like(phi, math.sin(theta)), math.cos(theta) * np.cos(phi)], -1
    )
    return np.stack([look_at(p) for p in positions])


def fov_xy(fov_deg: float, width: int, height: int) -> tuple[float, float]:
    """(x_fov, y_fov) in radians; ``fov_deg`` spans the larger image side, as Blender's sensor fit AUTO does."""
    fov = math.radians(fov_deg)
    half = math.tan(fov / 2)
    if width >= height:
        return fov, 2 * math.atan(half * height / width)
    return 2 * math.atan(half * width / height), fov


def intrinsics(x_fov: float, y_fov: float, width: int, height: int) -> np.ndarray:
    """Pinhole matrix K [3, 3] in pixels (OpenCV style: +v down), principal point at the image centre."""
    fx = width / 2 / math.tan(x_fov / 2)
    fy = height / 2 / math.tan(y_fov / 2)
    return np.array([[fx, 0, width / 2], [0, fy, height / 2], [0, 0, 1]], dtype=np.float64)


def project(points: np.ndarray, c2w: np.ndarray, x_fov: float, y_fov: float, width: int, height: int):
    """Project world points [N, 3] to pixel coordinates [N, 2] (u right, v down; pixel centres at +0.5).

    Returns ``(uv [N, 2], depth [N])`` with depth the distance along the viewing axis (positive in front).
    """
    points = np.asarray(points, dtype=np.float64)
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]
    K = intrinsics(x_fov, y_fov, width, height)
    u = K[0, 2] + K[0, 0] * cam[:, 0] / depth
    v = K[1, 2] - K[1, 1] * cam[:, 1] / depth  # camera +Y is image up; pixel rows grow downwards
    return np.stack([u, v], -1), depth


def projection_matrix(x_fov: float, y_fov: float, near: float = 0.1, far: float = 10.0) -> np.ndarray:
    """OpenGL clip-space projection [4, 4] for a symmetric frustum."""
    p = np.zeros((4, 4))
    p[0, 0] = 1 / math.tan(x_fov / 2)
    p[1, 1] = 1 / math.tan(y_fov / 2)
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -2 * far * near / (far - near)
    p[3, 2] = -1
    return p


def camera_to_json(c2w: np.ndarray, x_fov: float, y_fov: float) -> dict:
    """The official camera record: Blender-world ``matrix_world`` (4×4 nested list) and fovs in radians."""
    matrix_world = GLTF_TO_BLENDER @ np.asarray(c2w, dtype=np.float64)
    return {"matrix_world": matrix_world.tolist(), "x_fov": float(x_fov), "y_fov": float(y_fov)}


def camera_from_json(record: dict, source: str | Path = "<camera>") -> tuple[np.ndarray, float, float]:
    """Inverse of :func:`camera_to_json`: ``(c2w [4, 4] in glTF axes, x_fov, y_fov)``.

    Accepts the authors' files too; ``matrix_world`` may be 4×4 or 3×4. ``source`` names the file in errors.
    """
    try:
        m = np.asarray(record["matrix_world"], dtype=np.float64)
        x_fov = float(record["x_fov"])
        y_fov = float(record.get("y_fov", x_fov))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: not a camera record (needs matrix_world, x_fov, y_fov): {exc}") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"{source}: matrix_world must be a finite 4x4 (or 3x4) matrix, got shape {m.shape}")
    return BLENDER_TO_GLTF @ m, x_fov, y_fov


def read_camera_json(path: str | Path) -> tuple[np.ndarray, float, float]:
    """Read one camera JSON file: ``(c2w [4, 4] in glTF axes, x_fov, y_fov)``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read camera JSON: {exc}") from None
    return camera_from_json(record, path)
