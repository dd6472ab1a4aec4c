"""A self-contained HTML page that plays a 4D Gaussian asset in the browser (WebGL2, no network).

The page (template ``viewer.html`` beside this file) embeds every timestamp's Gaussians as base64 of quantised
arrays, 20 bytes per Gaussian:

* means      uint16 [N, 3], normalised to the frame's bounding box ``lo``/``hi`` (error ≤ extent / 131070)
* scales     float16 [N, 3], linear (relative error ≤ 2⁻¹¹)
* quats      int8 [N, 4], unit wxyz with w ≥ 0, times 127 (error ≤ 0.004 per component)
* rgba       uint8 [N, 4], colour and opacity times 255 (error ≤ 0.002)

A frame is a dict of numpy arrays ``{means [N, 3], quats [N, 4] (wxyz), scales [N, 3] (linear), opacities [N]
(0..1), rgb [N, 3] (0..1)}``; N may differ between frames. Viewer camera conventions are the project's orbit
(cameras.py): glTF world (+Y up), orbit around the origin, field of view over the larger image side.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np

from diffusion4d.cameras import DEFAULT_DISTANCE, DEFAULT_FOV_DEG
from diffusion4d.io import write_text_atomic
from diffusion4d.reconstruction.export import read_ply

#: Columns per Gaussian of each frame array (``None``: a vector [N]).
FRAME_COLUMNS = {"means": 3, "quats": 4, "scales": 3, "opacities": None, "rgb": 3}
DEFAULT_CAMERA = {"azimuth_deg": 0.0, "elevation_deg": 0.0, "distance": DEFAULT_DISTANCE, "fov_deg": DEFAULT_FOV_DEG}
_DATA_MARK = "__VIEWER_DATA__"
_TITLE_MARK = "__TITLE__"
_DATA_RE = re.compile(r'<script type="application/json" id="viewer-data">(.*?)</script>', re.S)


def check_frame(frame: dict, where: str) -> dict[str, np.ndarray]:
    """Validate one frame and return it as float64 arrays (quats normalised, rgb clipped to [0, 1]).

    ``where`` names the frame in errors (e.g. ``"out/viewer.html: frame 3"``).
    """
    if not isinstance(frame, dict):
        raise ValueError(f"{where}: a frame must be a dict of arrays, got {type(frame).__name__}")
    missing = [k for k in FRAME_COLUMNS if k not in frame]
    if missing:
        raise ValueError(f"{where}: missing arrays {missing} (needs {list(FRAME_COLUMNS)})")
    out = {}
    for key, cols in FRAME_COLUMNS.items():
        try:
            a = np.asarray(frame[key], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {key} is not numeric: {exc}") from None
        if a.ndim != (1 if cols is None else 2) or (cols is not None and a.shape[1] != cols):
            raise ValueError(f"{where}: {key} must have shape [N{'' if cols is None else f', {cols}'}], got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{where}: {key} has {int(np.sum(~np.isfinite(a)))} non-finite values (NaN/inf)")
        out[key] = a
    counts = {k: len(a) for k, a in out.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{where}: arrays disagree on the number of Gaussians: {counts}")
    if counts["means"] == 0:
        raise ValueError(f"{where}: the frame has no Gaussians")
    if np.any(out["scales"] < 0):
        raise ValueError(f"{where}: scales must be linear (non-negative), got min {out['scales'].min():.3g}")
    if np.any((out["opacities"] < 0) | (out["opacities"] > 1)):
        raise ValueError(f"{where}: opacities must lie in [0, 1] (after the sigmoid)")
    norms = np.linalg.norm(out["quats"], axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        raise ValueError(f"{where}: quats has {int(np.sum(norms < 1e-12))} zero quaternions")
    out["quats"] = out["quats"] / norms
    out["rgb"] = np.clip(out["rgb"], 0.0, 1.0)  # SH-derived colours overshoot; the rasterizer clamps likewise
    return out


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def _unb64(s: str, dtype: str, cols: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.dtype(dtype).newbyteorder("<")).reshape(-1, cols)


def quantise_frame(frame: dict[str, np.ndarray]) -> dict:
    """A checked frame → the page's JSON record ``{n, lo [3], hi [3], means, scales, quats, rgba}`` (base64)."""
    means = frame["means"]
    lo, hi = means.min(0), means.max(0)
    extent = np.where(hi - lo > 0, hi - lo, 1.0)
    q_means = np.round((means - lo) / extent * 65535).astype(np.uint16)
    q_scales = np.minimum(frame["scales"], 65504.0).astype(np.float16)  # float16's largest finite value
    quats = frame["quats"] * np.where(frame["quats"][:, :1] < 0, -1.0, 1.0)  # q and −q are one rotation
    q_quats = np.round(quats * 127).astype(np.int8)
    rgba = np.concatenate([frame["rgb"], frame["opacities"][:, None]], 1)
    q_rgba = np.round(rgba * 255).astype(np.uint8)
    return {
        "n": int(len(means)),
        "lo": lo.tolist(),
        "hi": (lo + extent).tolist(),
        "means": _b64(q_means),
        "scales": _b64(q_scales),
        "quats": _b64(q_quats),
        "rgba": _b64(q_rgba),
    }


def dequantise_frame(record: dict) -> dict[str, np.ndarray]:
    """Inverse of :func:`quantise_frame` (as the page decodes it): a frame dict of float64 arrays."""
    lo, hi = np.asarray(record["lo"]), np.asarray(record["hi"])
    means = lo + _unb64(record["means"], "u2", 3) / 65535.0 * (hi - lo)
    quats = np.maximum(_unb64(record["quats"], "i1", 4) / 127.0, -1.0)
    rgba = _unb64(record["rgba"], "u1", 4) / 255.0
    scales = _unb64(record["scales"], "f2", 3).astype(np.float64)
    return {"means": means, "quats": quats, "scales": scales, "opacities": rgba[:, 3], "rgb": rgba[:, :3]}


def _check_times(times, num_frames: int, where: str) -> list[float]:
    if times is None:
        return [i / max(num_frames - 1, 1) for i in range(num_frames)]
    t = np.asarray(times, dtype=np.float64)
    if t.shape != (num_frames,) or not np.all(np.isfinite(t)):
        raise ValueError(f"{where}: times must be {num_frames} finite numbers (one per frame), got shape {t.shape}")
    return t.tolist()


def _check_camera(camera: dict | None, where: str) -> dict:
    unknown = set(camera or {}) - set(DEFAULT_CAMERA)
    if unknown:
        raise ValueError(f"{where}: unknown camera keys {sorted(unknown)} (known: {list(DEFAULT_CAMERA)})")
    merged = {**DEFAULT_CAMERA, **(camera or {})}
    try:
        merged = {k: float(v) for k, v in merged.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: camera values must be numbers: {exc}") from None
    if not all(math.isfinite(v) for v in merged.values()) or merged["distance"] <= 0:
        raise ValueError(f"{where}: camera needs finite values and distance > 0, got {merged}")
    if not 0 < merged["fov_deg"] < 180:
        raise ValueError(f"{where}: camera fov_deg must lie in (0, 180), got {merged['fov_deg']}")
    return merged


def write_viewer(
    path: str | Path,
    frames: list[dict],
    times=None,
    title: str = "Diffusion4D — 4D Gaussian asset",
    camera: dict | None = None,
    fps: float = 8.0,
) -> Path:
    """Write the self-contained viewer page for ``frames`` (one dict per timestamp, see the module doc).

    ``times`` [T] are the frames' timestamps (default i/(T−1)); ``camera`` overrides the initial view
    (``azimuth_deg``, ``elevation_deg``, ``distance``, ``fov_deg``); ``fps`` is the playback rate. Returns the path.
    """
    path = Path(path)
    if isinstance(frames, dict) or not hasattr(frames, "__len__"):
        raise ValueError(f"{path}: frames must be a list of frame dicts (one per timestamp)")
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to show")
    checked = [check_frame(f, f"{path}: frame {i}") for i, f in enumerate(frames)]
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{path}: fps must be a positive number, got {fps}")
    payload = {
        "version": 1,
        "title": str(title),
        "camera": _check_camera(camera, str(path)),
        "fps": float(fps),
        "times": _check_times(times, len(frames), str(path)),
        "frames": [quantise_frame(f) for f in checked],
    }
    # "<" only occurs inside JSON strings, where \u003c is the same character: no "</script>" can end the data early.
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    template = resources.files("diffusion4d.reconstruction").joinpath("viewer.html").read_text("utf-8")
    page = template.replace(_TITLE_MARK, html.escape(str(title)), 1).replace(_DATA_MARK, data, 1)
    write_text_atomic(path, page)
    return path


def read_viewer(path: str | Path) -> tuple[list[dict[str, np.ndarray]], list[float], dict]:
    """Decode a page written by :func:`write_viewer`: ``(frames, times, meta)`` (meta: title, camera, fps)."""
    path = Path(path)
    try:
        match = _DATA_RE.search(path.read_text("utf-8"))
        payload = json.loads(match.group(1)) if match else None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read viewer data: {exc}") from None
    if payload is None:
        raise ValueError(f"{path}: not a diffusion4d viewer page (no embedded data)")
    meta = {k: payload[k] for k in ("title", "camera", "fps")}
    return [dequantise_frame(r) for r in payload["frames"]], payload["times"], meta


def frame_from_gaussians(g) -> dict[str, np.ndarray]:
    """A viewer frame from anything with ``means, quats, scales, opacities, rgb`` (e.g. :class:`Gaussians`,
    whose ``scales``/``opacities``/``rgb`` are the activated values); tensors are detached and moved to the CPU."""
    def array(x):
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)

    return {key: array(getattr(g, key)) for key in FRAME_COLUMNS}


def write_viewer_from_plys(path: str | Path, ply_paths: list, times=None, **kwargs) -> Path:
    """Viewer page for per-timestamp 3DGS PLY files (one per frame, in time order); kwargs as :func:`write_viewer`.

    PLY activations as 3DGS stores them: opacity = sigmoid(opacity), scales = exp(scale_*), rgb = 0.5 + C0·f_dc.
    """
    if len(ply_paths) == 0:
        raise ValueError(f"{path}: no PLY files given")
    return write_viewer(path, [frame_from_gaussians(read_ply(p)) for p in ply_paths], times, **kwargs)
