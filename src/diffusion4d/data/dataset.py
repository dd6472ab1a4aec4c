"""A torch Dataset over curated orbits (the official layout + ``manifest.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from diffusion4d.data import layout


def read_manifest(root: Path) -> list[dict]:
    path = Path(root) / layout.MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; run `diffusion4d curate {root}` first")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
    return rows


class OrbitDataset(Dataset):
    """One item per orbit (the front-start one and each random start) of the selected assets.

    Args:
        root: folder with the orbit folders and ``manifest.jsonl``.
        split: "train", "val" or None for both.
        kept_only: use only assets that curation kept.
        background: RGB in [0, 1] the RGBA frames are composited on.
        front_only: only the front-start orbit of each asset (e.g. for evaluation).
        load_static: also load the static orbit V̄ (needed for the static-3D condition and L_mr).

    An item is a dict:
        video [T, 3, H, W] float in [−1, 1] (view i at τ_i); static [T, 3, H, W] (if load_static);
        cameras [T, 4, 4] float32 camera-to-world (glTF axes, OpenGL camera); fov [2] (x, y, radians);
        timestamps [T]; m [] (Eq. 1 on this orbit, pixels in [0, 1]); caption str; uid str; orbit str (folder).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        kept_only: bool = True,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        front_only: bool = False,
        load_static: bool = True,
    ):
        if split not in ("train", "val", None):
            raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
        self.root = Path(root)
        self.background = background
        self.load_static = load_static
        self.items: list[tuple[dict, dict]] = []
        for row in read_manifest(self.root):
            if "orbits" not in row or (kept_only and not row.get("kept")):
                continue  # error rows carry no orbits
            if split is not None and row.get("split") != split:
                continue
            for orbit in row["orbits"][:1] if front_only else row["orbits"]:
                self.items.append((row, orbit))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        row, orbit = self.items[index]
        folder = self.root / orbit["folder"]
        dynamic = layout.read_orbit(folder, layout.DYNAMIC, row.get("num_views"))
        item = {
            "video": layout.composite(dynamic.images, self.background) * 2 - 1,
            "cameras": torch.as_tensor(dynamic.c2w, dtype=torch.float32),
            "fov": torch.tensor([dynamic.x_fov, dynamic.y_fov], dtype=torch.float32),
            "timestamps": torch.as_tensor(dynamic.timestamps, dtype=torch.float32),
            "m": torch.tensor(float(orbit["m"]), dtype=torch.float32),
            "caption": row.get("caption", ""),
            "uid": row["uid"],
            "orbit": orbit["folder"],
        }
        if self.load_static:
            static = layout.read_orbit(folder, layout.STATIC, len(dynamic.images))
            item["static"] = layout.composite(static.images, self.background) * 2 - 1
        return item


def collate(items: list[dict]) -> dict:
    """Items → a batch: tensors stacked on a new first axis, everything else as lists."""
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if torch.is_tensor(items[0][k])}
    batch.update({k: [it[k] for it in items] for k in items[0] if not torch.is_tensor(items[0][k])})
    return batch
