"""Procedural animated 3D assets: our stand-in for Objaverse's animated subset.

Each *family* pairs a body plan with a motion (a quadruped trotting, a door swinging, a jellyfish pulsing …) and
samples proportions, colours and motion parameters from one random generator, so ``make_asset(seed, index)`` is a
pure function of its arguments. Assets are real GLB files whose animation lives in glTF channels (node TRS,
skinning or morph-target weights), so any glTF viewer plays them.

Design rules that keep the assets useful for the render protocol (normalise by the bounds at t = 0, render the
first second from an orbit at distance 2, curate by how much the front view changes at t = 0.25 s and 0.5 s):

* motion is large and starts at once: periodic motions use frequencies whose poses at 0.25 s and 0.5 s differ
  clearly from the pose at 0 (see ``cos_frequency``, ``sin_frequency``, ``spin_rate``); most loops last 1 s or less;
* the pose at t = 0 is chosen to span the motion (e.g. a ball starts at the top of its bounce above a mat, a chest
  starts with its lid open), so the moving asset stays near the unit cube it is normalised into;
* creatures that walk are turned sideways (their heading is an attribute and named in the caption), because gait
  seen head-on from the front camera barely changes the image; long bodies avoid diagonal headings, which the
  per-axis normalisation would stretch out of the orbit cameras' frames.

Everything is modelled at roughly unit size facing +Z with +Y up; one root node applies heading and overall
scale, so the "small"/"large" words of a caption are true of the file.

This package holds the public API; the parts live in :mod:`.shapes` (colours, meshes, textures),
:mod:`.rigging` (animation helpers, rigs, scene assembly), :mod:`.creatures` and :mod:`.objects` (the families).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from diffusion4d.io import write_bytes_atomic, write_text_atomic

from .creatures import (
    biped_walk,
    bird_flap,
    caterpillar_crawl,
    fish_swim,
    jellyfish_pulse,
    quadruped_trot,
    snake_slither,
    waving_figure,
)
from .objects import (
    bouncing_ball,
    chest_lid,
    door_swing,
    flag_wave,
    growing_plant,
    robot_arm,
    spinning_top,
    windmill,
)
from .rigging import Built
from .shapes import PALETTE, box, chain_weights, cone, cylinder, ellipsoid, limb, transformed

__all__ = [
    "FAMILIES",
    "ProceduralAsset",
    "asset_uid",
    "glb_is_complete",
    "make_asset",
    "write_procedural_dataset",
    # building blocks re-exported from .shapes, so ``procedural.box`` etc. keep working
    "PALETTE",
    "box",
    "chain_weights",
    "cone",
    "cylinder",
    "ellipsoid",
    "limb",
    "transformed",
]


# ================================================================================================================
# Public API
# ================================================================================================================

_BUILDERS: dict[str, Callable[[np.random.Generator], Built]] = {
    "biped_walk": biped_walk,
    "quadruped_trot": quadruped_trot,
    "bird_flap": bird_flap,
    "fish_swim": fish_swim,
    "snake_slither": snake_slither,
    "caterpillar_crawl": caterpillar_crawl,
    "waving_figure": waving_figure,
    "robot_arm": robot_arm,
    "spinning_top": spinning_top,
    "door_swing": door_swing,
    "chest_lid": chest_lid,
    "windmill": windmill,
    "bouncing_ball": bouncing_ball,
    "growing_plant": growing_plant,
    "jellyfish_pulse": jellyfish_pulse,
    "flag_wave": flag_wave,
}

#: Family names, in the order ``make_asset`` draws them from.
FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


@dataclass
class ProceduralAsset:
    uid: str
    family: str
    caption: str
    attributes: dict
    glb: bytes


def _rng(seed: int, index: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index])


def _draw_family(rng: np.random.Generator) -> str:
    return FAMILIES[int(rng.integers(len(FAMILIES)))]


def asset_uid(seed: int, index: int) -> str:
    """The uid ``make_asset(seed, index)`` will have, without building the asset."""
    return f"proc{seed}_{index:05d}_{_draw_family(_rng(seed, index))}"


def _plain(value):
    """JSON-ready copies of attribute values (numpy scalars → Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_asset(seed: int, index: int) -> ProceduralAsset:
    """Asset ``index`` of the procedural dataset with ``seed``: a pure function of the two numbers.

    Each asset draws from its own generator ``default_rng([seed, index])`` (first its family, then everything
    else), so asset i is the same however many assets are made, and in whatever order.
    """
    rng = _rng(seed, index)
    family = _draw_family(rng)
    built = _BUILDERS[family](rng)
    return ProceduralAsset(uid=f"proc{seed}_{index:05d}_{family}", family=family, caption=built.caption,
                           attributes=_plain(built.attributes), glb=built.glb)


def glb_is_complete(path: str | Path) -> bool:
    """True when ``path`` is a GLB whose header's total length matches the file size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(12)
    except OSError:
        return False
    return (len(header) == 12 and header[:4] == b"glTF" and int.from_bytes(header[4:8], "little") == 2
            and int.from_bytes(header[8:12], "little") == size)


def _read_caption_records(path: Path) -> dict[str, dict]:
    """Existing captions.jsonl records by uid; unreadable lines are ignored (they are regenerated)."""
    records = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["uid"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def write_procedural_dataset(out_dir: str | Path, count: int, seed: int = 0, progress: bool = True) -> list[Path]:
    """Write ``out_dir/<uid>.glb`` for assets 0 … count−1 and ``out_dir/captions.jsonl`` (one line per asset:
    uid, caption, family, attributes). Returns the GLB paths in index order.

    Resumable: a GLB already there and complete is not rewritten; its caption comes from the old captions.jsonl,
    or from regenerating the (deterministic) asset when that has no line for it. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    captions_path = out_dir / "captions.jsonl"
    old = _read_caption_records(captions_path)
    paths, lines = [], []
    for index in tqdm(range(count), desc="procedural assets", unit="asset", disable=not progress):
        uid = asset_uid(seed, index)
        path = out_dir / f"{uid}.glb"
        record = old.get(uid) if glb_is_complete(path) else None
        if record is None:
            asset = make_asset(seed, index)
            if not glb_is_complete(path):
                write_bytes_atomic(path, asset.glb)
            record = {"uid": uid, "caption": asset.caption, "family": asset.family, "attributes": asset.attributes}
        paths.append(path)
        lines.append(json.dumps(record, sort_keys=False))
    write_text_atomic(captions_path, "".join(line + "\n" for line in lines))
    return paths
