"""Export of Gaussian assets: the standard 3DGS PLY (readable by common splat viewers) and orbit videos.

PLY layout (binary_little_endian, one float32 property each, in this order — the INRIA 3DGS layout):
``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 [f_rest_0 … f_rest_44] opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2
rot_3``, where f_dc is the degree-0 SH coefficient, opacity is the logit, scales are logs and rot is (w, x, y, z).
Normals are zeros. Our Gaussians are degree 0, so by default no f_rest is written (SuperSplat and
antimatter15/splat's converter accept that); ``sh_rest_zeros=True`` writes 45 zero f_rest for viewers that hardcode
degree 3 (the original SIBR viewer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from diffusion4d import cameras
from diffusion4d.io import write_bytes_atomic, write_videos_atomic
from diffusion4d.reconstruction.gaussians import Gaussians

_REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
NUM_SH_REST = 45  # degree 3: 3 colours × 15 coefficients


def ply_properties(sh_rest_zeros: bool = False) -> list[str]:
    """Property names of the PLY we write, in order."""
    rest = [f"f_rest_{i}" for i in range(NUM_SH_REST)] if sh_rest_zeros else []
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def write_ply(path: str | Path, g: Gaussians, sh_rest_zeros: bool = False) -> Path:
    """Write ``g`` as a standard 3DGS PLY (atomically). Returns the path."""
    names = ply_properties(sh_rest_zeros)
    data = np.zeros(g.num, dtype=[(name, "<f4") for name in names])
    columns = {
        "x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
        **{f"f_dc_{i}": g.sh0[:, i] for i in range(3)},
        "opacity": g.opacity_logits,
        **{f"scale_{i}": g.log_scales[:, i] for i in range(3)},
        **{f"rot_{i}": g.quats[:, i] for i in range(4)},
    }
    for name, column in columns.items():
        data[name] = column.detach().to("cpu", torch.float32).numpy()
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {g.num}",
                        *(f"property float {name}" for name in names), "end_header"]) + "\n"
    write_bytes_atomic(path, header.encode("ascii") + data.tobytes())
    return Path(path)


def _parse_header(path: Path, raw: bytes) -> tuple[int, list[str], int]:
    """(vertex count, property names, byte offset of the data) of a 3DGS PLY; ValueError naming ``path`` if not."""
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary_little_endian PLY is supported")
    count, names, element = None, [], None
    for line in lines:
        words = line.split()
        if words[:1] == ["element"]:
            element = words[1] if len(words) > 1 else None
            if element == "vertex":
                count = int(words[2])
            elif count is not None:
                raise ValueError(f"{path}: unexpected element {element!r} after the vertices (not a 3DGS PLY)")
        elif words[:1] == ["property"] and element == "vertex":
            if len(words) != 3 or words[1] != "float":
                raise ValueError(f"{path}: vertex property {' '.join(words[1:])!r} is not a float (not a 3DGS PLY)")
            names.append(words[2])
    missing = [n for n in _REQUIRED if n not in names]
    if count is None or missing:
        raise ValueError(f"{path}: not a 3DGS PLY (missing vertex properties {missing or ['element vertex']})")
    return count, names, end + len(b"end_header\n")


def read_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS PLY (ours or another tool's; f_rest, if present, is ignored) into float32 :class:`Gaussians`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such PLY file") from None
    count, names, offset = _parse_header(path, raw)
    dtype = np.dtype([(name, "<f4") for name in names])
    if len(raw) - offset < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated ({len(raw) - offset} data bytes for {count} vertices of "
                         f"{dtype.itemsize} bytes)")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)

    def cols(*keys):
        return torch.from_numpy(np.stack([data[k] for k in keys], -1).astype(np.float32))

    return Gaussians(
        means=cols("x", "y", "z"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        opacity_logits=cols("opacity")[:, 0],
        sh0=cols("f_dc_0", "f_dc_1", "f_dc_2"),
    )


#: render_fn(c2w [4, 4] (glTF world, OpenGL camera axes), x_fov, y_fov, width, height, t) → rgb [H, W, 3] in [0, 1]
RenderFn = Callable[[np.ndarray, float, float, int, int, float], "np.ndarray | torch.Tensor"]


def orbit_video_cameras(num_views: int = 36, elevation_deg: float = 0.0,
                        distance: float = cameras.DEFAULT_DISTANCE) -> np.ndarray:
    """c2w [num_views, 4, 4] evenly around a full turn (no repeated end view, so the video loops cleanly)."""
    # orbit_camera_to_world spaces T views over 360° with the last one repeating the first: ask for one more
    return cameras.orbit_camera_to_world(num_views + 1, elevation_deg=elevation_deg, distance=distance)[:-1]


def render_orbit_video(render_fn: RenderFn, out_path: str | Path, times: Sequence[float] | float = (0.0,),
                       num_views: int = 36, size: int = 256, fov_deg: float = cameras.DEFAULT_FOV_DEG,
                       elevation_deg: float = 0.0, distance: float = cameras.DEFAULT_DISTANCE,
                       fps: int = 12) -> tuple[Path, Path]:
    """Render a ``num_views`` turn around the asset at each time in ``times`` (one turn after the other) and write
    it as ``<out_path>.mp4`` and ``<out_path>.gif`` (atomically). Returns the two paths (the MP4's None where
    imageio has no ffmpeg plugin)."""
    times = [float(times)] if isinstance(times, (int, float)) else [float(t) for t in times]
    if not times or any(not (math.isfinite(t)) for t in times):
        raise ValueError(f"render_orbit_video: times must be finite numbers, got {times}")
    x_fov, y_fov = cameras.fov_xy(fov_deg, size, size)
    frames = []
    with torch.no_grad():
        for t in times:
            for c2w in orbit_video_cameras(num_views, elevation_deg, distance):
                rgb = render_fn(c2w, x_fov, y_fov, size, size, t)
                rgb = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
                if rgb.shape != (size, size, 3):
                    raise ValueError(f"render_orbit_video: render_fn returned shape {list(rgb.shape)}, "
                                     f"expected [{size}, {size}, 3]")
                frames.append((np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
    frames = np.stack(frames)
    out = Path(out_path)
    out = out.with_suffix("") if out.suffix in (".mp4", ".gif") else out
    return write_videos_atomic(out, frames, fps)
