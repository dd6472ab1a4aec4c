"""The 4D Gaussian viewer: the embedded data round-trips, bad input is refused, and the page works in Chromium."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion4d.cameras import fov_xy, orbit_camera_to_world, project
from diffusion4d.reconstruction.viewer import (
    SH_C0,
    read_gaussian_ply,
    read_viewer,
    write_viewer,
    write_viewer_from_plys,
)

NUM_TIMES, SIZE = 8, 192  # timestamps of the synthetic asset; canvas side in pixels


def blob_frames(num_times: int = NUM_TIMES, n: int = 300, seed: int = 0) -> list[dict]:
    """A ball of Gaussians sliding from x = −0.3 to +0.3 and turning from red to blue; N varies per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(num_times):
        s = i / (num_times - 1)
        k = n + 7 * i
        quats = rng.normal(size=(k, 4))
        frames.append({
            "means": rng.normal(scale=0.06, size=(k, 3)) + [-0.3 + 0.6 * s, 0.0, 0.0],
            "quats": quats,
            "scales": rng.uniform(0.01, 0.04, size=(k, 3)),
            "opacities": rng.uniform(0.6, 1.0, size=k),
            "rgb": np.tile([1.0 - s, 0.1, s], (k, 1)) + rng.uniform(-0.05, 0.05, size=(k, 3)),
        })  # fmt: skip
    return frames


# ---------------------------------------------------------------------------------------------- the Python side


def test_embedded_data_decodes_within_quantisation_error(tmp_path):
    frames = blob_frames()
    times = np.linspace(0.0, 1.0, NUM_TIMES) ** 2
    path = write_viewer(tmp_path / "v.html", frames, times, title="blob </script> & co", camera={"elevation_deg": 10})
    decoded, got_times, meta = read_viewer(path)
    assert np.allclose(got_times, times) and meta["camera"]["elevation_deg"] == 10 and meta["fps"] == 8.0
    assert meta["title"] == "blob </script> & co" and "<title>blob &lt;/script&gt; &amp; co</title>" in path.read_text()
    assert len(decoded) == NUM_TIMES
    for f, d in zip(frames, decoded):
        n = len(f["means"])
        assert {k: v.shape for k, v in d.items()} == {k: np.shape(v) for k, v in f.items()}
        extent = np.ptp(f["means"], 0)
        assert np.all(np.abs(d["means"] - f["means"]) <= extent / 65535 * 0.5 + 1e-12)
        assert np.allclose(d["scales"], f["scales"], rtol=2**-11, atol=0)
        unit = f["quats"] / np.linalg.norm(f["quats"], axis=1, keepdims=True)
        unit *= np.sign(unit[:, :1])  # stored with w ≥ 0: the same rotation
        assert np.abs(d["quats"] - unit).max() <= 0.5 / 127 + 1e-9
        assert np.abs(d["rgb"] - np.clip(f["rgb"], 0, 1)).max() <= 0.5 / 255 + 1e-9
        assert np.abs(d["opacities"] - f["opacities"]).max() <= 0.5 / 255 + 1e-9
        assert n == len(d["means"])


def test_file_size_is_twenty_bytes_per_gaussian_in_base64(tmp_path):
    frames = blob_frames(num_times=2, n=5000)
    path = write_viewer(tmp_path / "v.html", frames)
    gaussians = sum(len(f["means"]) for f in frames)
    overhead = 40_000  # the template and JSON keys
    assert path.stat().st_size <= gaussians * 20 * 4 / 3 + overhead


def _with(frame: dict, **changes) -> list[dict]:
    return [{**frame, **changes}]


@pytest.mark.parametrize(
    "make_frames, message",
    [
        (lambda f: [], "no frames"),
        (lambda f: _with(f, means=f["means"][:, :2]), "means must have shape [N, 3]"),
        (lambda f: _with(f, opacities=f["opacities"][:-1]), "disagree on the number of Gaussians"),
        (lambda f: _with(f, rgb=np.where(np.arange(len(f["rgb"]))[:, None] == 3, np.nan, f["rgb"])), "rgb has 3 non"),
        (lambda f: _with(f, scales=np.full_like(f["scales"], np.inf)), "scales has"),
        (lambda f: _with(f, **{k: np.zeros((0,) + np.shape(v)[1:]) for k, v in f.items()}), "has no Gaussians"),
        (lambda f: _with(f, scales=-f["scales"]), "linear (non-negative)"),
        (lambda f: _with(f, opacities=f["opacities"] * 3), "opacities must lie in [0, 1]"),
        (lambda f: _with(f, quats=np.zeros_like(f["quats"])), "zero quaternions"),
        (lambda f: [{k: v for k, v in f.items() if k != "rgb"}], "missing arrays ['rgb']"),
    ],
)
def test_bad_frames_raise_clear_value_errors(tmp_path, make_frames, message):
    frame = blob_frames(num_times=2, n=10)[0]
    with pytest.raises(ValueError, match=r"v\.html.*" + __import__("re").escape(message)):
        write_viewer(tmp_path / "v.html", make_frames(frame))
    assert not (tmp_path / "v.html").exists()


def test_bad_times_and_camera_raise(tmp_path):
    frames = blob_frames(num_times=2, n=10)
    with pytest.raises(ValueError, match="times must be 2 finite numbers"):
        write_viewer(tmp_path / "v.html", frames, times=[0.0, float("nan")])
    with pytest.raises(ValueError, match="unknown camera keys"):
        write_viewer(tmp_path / "v.html", frames, camera={"zoom": 2})
    with pytest.raises(ValueError, match="distance > 0"):
        write_viewer(tmp_path / "v.html", frames, camera={"distance": 0})


def write_3dgs_ply(path: Path, frame: dict) -> None:
    """The standard 3DGS layout (x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*), pre-activation values."""
    n = len(frame["means"])
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    op = frame["opacities"]
    cols = np.concatenate([
        frame["means"], np.zeros((n, 3)), (frame["rgb"] - 0.5) / SH_C0, np.zeros((n, 9)),
        np.log(op / (1 - op))[:, None], np.log(frame["scales"]), frame["quats"],
    ], 1).astype("<f4")  # fmt: skip
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path.write_bytes(header.encode() + cols.tobytes())


def test_viewer_from_3dgs_plys(tmp_path):
    frames = blob_frames(num_times=3, n=50)
    for f in frames:
        f["rgb"] = np.clip(f["rgb"], 0.01, 0.99)
    plys = [tmp_path / f"t{i}.ply" for i in range(3)]
    for p, f in zip(plys, frames):
        write_3dgs_ply(p, f)
    frame = read_gaussian_ply(plys[1])
    for key in ("means", "scales", "opacities", "rgb", "quats"):
        assert np.allclose(frame[key], frames[1][key], atol=1e-5, rtol=1e-5), key
    decoded, times, _ = read_viewer(write_viewer_from_plys(tmp_path / "v.html", plys, times=[0, 0.5, 1]))
    assert times == [0, 0.5, 1] and np.abs(decoded[2]["rgb"] - frames[2]["rgb"]).max() < 0.003
    plys[0].write_bytes(plys[0].read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"t0\.ply: truncated PLY"):
        read_gaussian_ply(plys[0])
    plys[0].write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match="'ascii' is not supported"):
        read_gaussian_ply(plys[0])
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        read_gaussian_ply(tmp_path / "missing.ply")
