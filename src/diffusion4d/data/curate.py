"""Curation (paper Sec. 3.2): drop too-still, broken and out-of-frame assets; measure m (Eq. 1); write the manifest.

Works on our renders and, unchanged, on a folder in the authors' released layout (no metadata, no front frames).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffusion4d.data import layout
from diffusion4d.io import write_text_atomic
from diffusion4d.metrics import motion_magnitude, ssim


@dataclass
class CurationConfig:
    s_high: float = 0.95  # both SSIM scores above this: too still (paper's s_high)
    s_low: float = 0.4  # either SSIM score below this: broken / drastic change (paper's s_low)
    val_fraction: float = 0.05  # share of uids put in the "val" split, by a stable hash of the uid
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # composite for SSIM and m (the package convention)


def discover_assets(root: Path) -> dict[str, list[str]]:
    """uid → its orbit folders under ``root`` (front-start folder first, then random starts by name).

    A folder counts as an orbit if it holds ``multi_frame0.png``; ``<uid>_az0.xx`` is a random start of ``<uid>``
    when ``<uid>`` itself is there, and an asset of its own otherwise.
    """
    root = Path(root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and layout.frame_path(p, layout.DYNAMIC, 0).exists())
    present = set(names)
    assets: dict[str, list[str]] = {}
    for name in names:
        uid, turns = layout.parse_orbit_dirname(name)
        if turns is None or uid not in present:
            assets.setdefault(name, []).insert(0, name)
        else:
            assets.setdefault(uid, []).append(name)
    return assets


def split_of(uid: str, val_fraction: float) -> str:
    """A stable train/val split: the same uid lands in the same split on every machine and every run."""
    h = int.from_bytes(hashlib.sha1(uid.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def touches_border(rgba: np.ndarray) -> bool:
    """True when any alpha on the 1-pixel image border is non-zero, for RGBA images [..., H, W, 4]."""
    a = rgba[..., 3]
    return bool(a[..., 0, :].any() or a[..., -1, :].any() or a[..., :, 0].any() or a[..., :, -1].any())


def curation_ssims(folder: Path, num_views: int, background) -> tuple[list[float], str]:
    """The two SSIM scores of Sec. 3.2: SSIM(I(τ0), I(τ_{T/4})) and SSIM(I(τ0), I(τ_{T/2})).

    With our front frames, all three images come from the front camera (as in the paper). Without them (the
    authors' layout), each pair comes from one orbit camera instead: static view k (τ0) against dynamic view k (τ_k),
    k = T/4, T/2 — the same camera at the two times, so the score still measures motion alone.
    Returns (scores, source) with source "front" or "orbit".
    """
    quarter, half = num_views // 4, num_views // 2
    fronts = [folder / layout.FRONT_FRAME.format(i=k) for k in (quarter, half)]
    if all(p.exists() for p in fronts):
        ref = layout.read_rgba(layout.frame_path(folder, layout.DYNAMIC, 0))  # front camera at τ0
        pairs, source = [(ref, layout.read_rgba(p)) for p in fronts], "front"
    else:
        pairs = [
            (layout.read_rgba(layout.frame_path(folder, layout.STATIC, k)),
             layout.read_rgba(layout.frame_path(folder, layout.DYNAMIC, k)))
            for k in (quarter, half)
        ]
        source = "orbit"
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"{folder}: curation frames differ in size ({a.shape} vs {b.shape})")
    x = layout.composite(np.stack([a for a, _ in pairs]), background)
    y = layout.composite(np.stack([b for _, b in pairs]), background)
    return [round(float(s), 6) for s in ssim(x, y)], source


def decide(ssims: list[float], out_of_bounds: bool, config: CurationConfig) -> tuple[bool, str]:
    """Keep or drop, with the reason (Sec. 3.2). Order: out of frame, broken, too still."""
    if out_of_bounds:
        return False, "out_of_bounds"
    if min(ssims) < config.s_low:
        return False, f"broken: an SSIM score is below s_low={config.s_low}"
    if min(ssims) > config.s_high:
        return False, f"too_still: both SSIM scores are above s_high={config.s_high}"
    return True, "kept"


def _caption_of(folder: Path, captions: dict[str, str], uid: str) -> str:
    meta_file = folder / layout.METADATA
    if meta_file.exists():
        caption = json.loads(meta_file.read_text()).get("caption")
        if caption:
            return caption
    return captions.get(uid, "")


def curate_asset(root: Path, uid: str, folders: list[str], config: CurationConfig, captions: dict[str, str]) -> dict:
    """One manifest row. Raises with a message naming the file when the asset's folders are unusable."""
    root = Path(root)
    front = root / folders[0]
    T = layout.count_views(front, layout.DYNAMIC)
    scores, source = curation_ssims(front, T, config.background)
    orbits, out_of_bounds = [], False
    for name in folders:
        dynamic = layout.read_orbit(root / name, layout.DYNAMIC, T)
        static = layout.read_orbit(root / name, layout.STATIC, T)
        if dynamic.images.shape != static.images.shape:
            raise ValueError(f"{root / name}: static and dynamic frames differ in size")
        out_of_bounds |= touches_border(dynamic.images) | touches_border(static.images)
        m = motion_magnitude(layout.composite(dynamic.images, config.background),
                             layout.composite(static.images, config.background))
        orbits.append({"folder": name, "m": round(float(m), 8)})
    if source == "front":
        for k in (T // 4, T // 2):
            out_of_bounds |= touches_border(layout.read_rgba(front / layout.FRONT_FRAME.format(i=k)))
    kept, reason = decide(scores, out_of_bounds, config)
    return {
        "uid": uid,
        "caption": _caption_of(front, captions, uid),
        "m": orbits[0]["m"],
        "ssim": scores,
        "ssim_source": source,
        "out_of_bounds": out_of_bounds,
        "kept": kept,
        "reason": reason,
        "split": split_of(uid, config.val_fraction),
        "num_views": T,
        "orbits": orbits,
    }


def _curate_one(args):
    root, uid, folders, config, captions = args
    torch.set_num_threads(1)
    try:
        return curate_asset(root, uid, folders, config, captions)
    except (OSError, ValueError) as exc:
        return error_row(uid, str(exc))


def error_row(uid: str, error: str) -> dict:
    """The manifest row of an asset that could not be curated."""
    return {"uid": uid, "kept": False, "reason": f"error: {error}", "error": error}


def pool_executor(workers: int) -> Callable[[list[tuple]], Iterator[dict]]:
    """The default executor: the rows of ``jobs`` in their order, from ``workers`` spawned processes (or this one)."""

    def run(jobs: list[tuple]) -> Iterator[dict]:
        if workers <= 1:
            yield from map(_curate_one, jobs)
            return
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(_curate_one, jobs, chunksize=4)

    return run


def curate(root: Path, config: CurationConfig | None = None, workers: int = 1, progress: bool = True,
           executor: Callable[[list[tuple]], Iterator[dict]] | None = None) -> list[dict]:
    """Curate every asset under ``root`` and write ``root/manifest.jsonl`` (atomically). Returns the rows.

    An unusable asset becomes a row with ``kept: false`` and ``reason: "error: …"``; the rest go on.
    ``executor`` maps the jobs ``(root, uid, folders, config, captions)`` to their rows, in the jobs' order:
    by default ``pool_executor(workers)``; ``curate_ray.RayCurator`` runs each asset as a Ray task.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    config = config or CurationConfig()
    assets = discover_assets(root)
    if not assets:
        raise FileNotFoundError(f"{root}: no orbit folders (folders holding multi_frame0.png) found")
    captions = layout.read_captions(root)
    jobs = [(root, uid, folders, config, captions) for uid, folders in assets.items()]
    run = executor or pool_executor(workers)
    rows = list(tqdm(run(jobs), total=len(jobs), desc="curate", unit="asset", disable=not progress))
    write_text_atomic(root / layout.MANIFEST, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def summarize(rows: list[dict]) -> str:
    kept = sum(r["kept"] for r in rows)
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            key = r["reason"].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
    return f"{kept}/{len(rows)} kept; dropped: {dropped}"
