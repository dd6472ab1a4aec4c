"""The on-disk orbit layout — the authors' released one — in one place (DESIGN.md, "On-disk orbit layout").

Per asset ``<uid>/``::

    multi_frame{i}.png   + multi{i}.json     dynamic orbit V: view i at time τ_i, RGBA
    multi_static_frame{i}.png + static{i}.json   static orbit V̄: the same cameras, all at τ0
    front_frame{k}.png                       our addition: the front camera at τ_k, k ∈ {T/4, T/2}, for curation
    metadata.json                            our addition: how it was rendered; written last = "this asset is done"

and per random-start orbit a sibling folder ``<uid>_az0.xx`` (start azimuth as a fraction of a turn) with the same
dynamic and static files. ``manifest.jsonl`` beside the folders lists the curated assets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from diffusion4d import cameras
from diffusion4d.io import write_json_atomic, write_png_atomic

if TYPE_CHECKING:
    import torch

DYNAMIC, STATIC = "dynamic", "static"
_FRAME = {DYNAMIC: "multi_frame{i}.png", STATIC: "multi_static_frame{i}.png"}
_CAMERA = {DYNAMIC: "multi{i}.json", STATIC: "static{i}.json"}
FRONT_FRAME = "front_frame{i}.png"
METADATA = "metadata.json"
MANIFEST = "manifest.jsonl"
_RANDOM_START = re.compile(r"^(?P<uid>.+)_az(?P<turns>[01]\.\d+)$")


def frame_path(folder: Path, kind: str, i: int) -> Path:
    return Path(folder) / _FRAME[kind].format(i=i)


def camera_path(folder: Path, kind: str, i: int) -> Path:
    return Path(folder) / _CAMERA[kind].format(i=i)


def random_start_dirname(uid: str, start_turns: float) -> str:
    """``<uid>_az0.xx``: the authors' name for an orbit starting at ``start_turns`` of a full turn."""
    return f"{uid}_az{start_turns:.2f}"


def parse_orbit_dirname(name: str) -> tuple[str, float | None]:
    """(uid, start_turns) of a random-start folder name, or (name, None) for any other name."""
    match = _RANDOM_START.match(name)
    if match is None:
        return name, None
    return match["uid"], float(match["turns"])


def count_views(folder: Path, kind: str = DYNAMIC) -> int:
    """Number of views T of an orbit: frames 0…T−1 must all be there (a gap is an error naming the file)."""
    folder = Path(folder)
    pattern = re.compile("^" + re.escape(_FRAME[kind]).replace(r"\{i\}", r"(\d+)") + "$")
    indices = sorted(int(m[1]) for p in folder.iterdir() if (m := pattern.match(p.name)))
    if not indices:
        raise FileNotFoundError(f"{folder}: no {kind} orbit frames ({_FRAME[kind].format(i=0)} …)")
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    if missing:
        raise FileNotFoundError(
            f"{frame_path(folder, kind, missing[0])}: missing frame ({len(missing)} missing in all)")
    return len(indices)


def read_rgba(path: Path) -> np.ndarray:
    """An image as RGBA uint8 [H, W, 4]; images without alpha are taken as fully opaque."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image: {exc}") from None


@dataclass
class Orbit:
    images: np.ndarray  # [T, H, W, 4] uint8 RGBA
    c2w: np.ndarray  # [T, 4, 4] camera-to-world, glTF axes (from the per-view JSON, never from the formula)
    x_fov: float  # radians
    y_fov: float

    @property
    def timestamps(self) -> np.ndarray:
        """τ_i = i/(T−1): view i of an orbit is seen at time τ_i (static orbits: all at τ0, but same cameras)."""
        return cameras.orbit_timestamps(len(self.images))


def read_orbit(folder: Path, kind: str = DYNAMIC, num_views: int | None = None) -> Orbit:
    """Read one orbit (images + cameras). Errors name the offending file."""
    folder = Path(folder)
    T = count_views(folder, kind) if num_views is None else num_views
    images, c2ws, fovs = [], [], []
    for i in range(T):
        image_file = frame_path(folder, kind, i)
        if not image_file.exists():
            raise FileNotFoundError(f"{image_file}: missing frame")
        images.append(read_rgba(image_file))
        if images[-1].shape != images[0].shape:
            raise ValueError(
                f"{image_file}: image size {images[-1].shape[1]}x{images[-1].shape[0]} differs from "
                f"{frame_path(folder, kind, 0).name}'s {images[0].shape[1]}x{images[0].shape[0]}"
            )
        c2w, x_fov, y_fov = cameras.read_camera_json(camera_path(folder, kind, i))
        c2ws.append(c2w)
        fovs.append((x_fov, y_fov))
    return Orbit(np.stack(images), np.stack(c2ws), *fovs[0])


def read_static_orbit(folder: Path) -> Orbit:
    """A folder given as a static orbit V̄: its static frames if it has them, else its dynamic ones (a still asset)."""
    folder = Path(folder)
    return read_orbit(folder, STATIC if frame_path(folder, STATIC, 0).exists() else DYNAMIC)


def write_view(folder: Path, kind: str, i: int, rgba: np.ndarray, c2w: np.ndarray, x_fov: float, y_fov: float):
    """Write view i of an orbit: image then camera, each atomically."""
    write_png_atomic(frame_path(folder, kind, i), rgba)
    write_json_atomic(camera_path(folder, kind, i), cameras.camera_to_json(c2w, x_fov, y_fov))


def composite(rgba: np.ndarray | torch.Tensor, background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """RGBA uint8 [..., H, W, 4] → RGB float [..., 3, H, W] in [0, 1], straight alpha over ``background``."""
    import torch  # here, not at the top: render workers read and write this layout without torch (~1.2 s each)

    x = torch.tensor(np.asarray(rgba), dtype=torch.float32) / 255.0  # a copy: read-only arrays (PIL's) are fine
    rgb, alpha = x[..., :3], x[..., 3:]
    bg = torch.tensor(background, dtype=x.dtype)
    out = rgb * alpha + bg * (1 - alpha)
    return out.movedim(-1, -3).contiguous()


def read_captions(root: Path) -> dict[str, str]:
    """uid → caption from a ``captions.jsonl`` in ``root`` (optional: metadata.json captions come first)."""
    path = Path(root) / "captions.jsonl"
    if not path.exists():
        return {}
    captions = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
                captions[record["uid"]] = record["caption"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: not a caption record (needs uid and caption)") from None
    return captions
