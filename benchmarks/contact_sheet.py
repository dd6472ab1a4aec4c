"""One PNG contact sheet from the ``--out ROOT`` folder of ``benchmarks/bench_default_quality.py``.

    python benchmarks/contact_sheet.py ROOT --out SHEET.png [--condition image|static|text] [--count 6]
        [--views 0 6 12 18] [--scores QUALITY.json] [--scale 2] [--run-bench [--bundle DIR]]

The repository's sheet (docs/contact_sheet.png, shown in the README) is regenerated from scratch by

    python benchmarks/contact_sheet.py outputs/sheet --run-bench --out docs/contact_sheet.png --scale 1

which first runs ``bench_default_quality.py --count 6 --steps 10 --conditions image --reconstruct --fit-preset cpu
--out ROOT --json ROOT/quality.json`` (the shipped bundle, or ``--bundle``; `make demo`'s path on held-out assets:
about 1 minute per asset on 2 CPU cores), then draws the sheet with those scores.

For each of the first ``--count`` uids (sorted) with a sampled orbit ``ROOT/<condition>/<uid>/orbit``, a block of
rows, labelled on the left:
  prompt         image: the ground truth's view 0; static: V̄ at the chosen views; text: the caption, if known,
  ground truth   V at the chosen views (view i is camera i at time τ_i),
  sampled orbit  the sampled V at the same views,
  4D asset       only where ``ROOT/<condition>/<uid>/asset4d`` exists: its renders at the same cameras and times,
under a header with the uid and, from ``--scores`` (the bench's ``--json``), the orbit's, the asset's and the
copy-τ0 baseline's PSNR. A uid whose orbits cannot be read is skipped with a note; the rest go on.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from diffusion4d.data import layout
from diffusion4d.io import write_png_atomic

CONDITIONS = ("image", "static", "text")
#: sheet geometry in output pixels (tiles are the frames' size times --scale)
LABEL_W = 96  # the left column with the row labels
PAD = 4  # gap around tiles and blocks
HEADER_H = 16  # one line of the default font above each block
TEXT_H = 11  # the default font's line height, to centre labels on their row
BACKGROUND = (224, 224, 224)  # light grey, so tiles on white stand out
INK = (0, 0, 0)


@dataclass
class Row:
    """One labelled row: tiles (uint8 [H, W, 3] each) or, for a text prompt, a line of text."""
    label: str
    tiles: list[np.ndarray] = field(default_factory=list)
    text: str = ""


@dataclass
class Block:
    header: str
    rows: list[Row]


def to_tiles(frames: torch.Tensor, views: list[int]) -> list[np.ndarray]:
    """RGB float [T, 3, H, W] in [0, 1] → the chosen views as uint8 [H, W, 3] each."""
    picked = frames[views].clamp(0, 1).mul(255).round().to(torch.uint8)
    return list(picked.permute(0, 2, 3, 1).numpy())


def uids_with_orbits(root: Path, condition: str) -> list[str]:
    """Sorted uids that have ``root/<condition>/<uid>/orbit``; ValueError naming the folder when there are none."""
    if not (root / "orbits").is_dir():
        raise ValueError(f"{root / 'orbits'}: no ground-truth orbits (is {root} a bench_default_quality --out?)")
    folder = root / condition
    uids = sorted(p.name for p in folder.iterdir() if (p / "orbit").is_dir()) if folder.is_dir() else []
    if not uids:
        raise ValueError(f"{folder}: no sampled orbits (<uid>/orbit) for condition {condition!r}")
    return uids


def read_scores(path: Path | None, condition: str) -> dict[str, dict]:
    """uid → the bench's row for ``condition`` from its ``--json`` record (empty without one)."""
    if path is None:
        return {}
    try:
        rows = json.loads(Path(path).read_text())["rows"].get(condition, [])
        return {row["uid"]: row for row in rows}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a bench_default_quality --json record ({exc})") from None


def header_text(uid: str, scores: dict) -> str:
    """The uid and whichever PSNRs the bench recorded for it."""
    parts = [f"{name} {scores[key]:.2f} dB" for key, name in
             (("psnr", "orbit"), ("fit_psnr", "4D asset"), ("copy_psnr", "copy-t0")) if key in scores]
    return uid + ("   PSNR: " + ", ".join(parts) if parts else "")


def caption_of(gt_dir: Path) -> str:
    """The caption the render job stored in ``metadata.json`` ('' when there is none)."""
    try:
        return str(json.loads((gt_dir / layout.METADATA).read_text()).get("caption", ""))
    except (OSError, json.JSONDecodeError, AttributeError):
        return ""


def prompt_row(condition: str, gt_dir: Path, gt: torch.Tensor, views: list[int]) -> Row | None:
    """What the model was given, as bench_default_quality gives it; gt is V [T, 3, H, W] in [0, 1]."""
    if condition == "image":  # the τ0 front view: one tile, however many views are shown
        return Row("prompt", to_tiles(gt, [0]))
    if condition == "static":
        static = layout.composite(layout.read_orbit(gt_dir, layout.STATIC).images)
        return Row("prompt", to_tiles(static, views))
    caption = caption_of(gt_dir)
    return Row("prompt", text=f'"{caption}"') if caption else None


def asset_row(asset_dir: Path, orbit: layout.Orbit, views: list[int]) -> Row:
    """Renders [H, W, 3] of the fitted asset at the ground truth's cameras and times of ``views``."""
    from diffusion4d.reconstruction.asset import Asset4D

    # "auto" picks gsplat for CUDA tensors and the torch rasterizer on the CPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    asset = Asset4D.load(asset_dir, device=device)
    H, W = orbit.images.shape[1:3]
    renders = torch.stack([asset.render(orbit.c2w[i], orbit.x_fov, orbit.y_fov, W, H, float(orbit.timestamps[i]))
                           for i in views])
    return Row("4D asset", to_tiles(renders.permute(0, 3, 1, 2).float().cpu(), list(range(len(views)))))


def load_block(root: Path, condition: str, uid: str, views: list[int], scores: dict) -> Block:
    """One uid's rows; FileNotFoundError / ValueError when its orbits are incomplete or the views out of range."""
    gt_dir, gen_dir = root / "orbits" / uid, root / condition / uid
    orbit = layout.read_orbit(gt_dir, layout.DYNAMIC)
    gt = layout.composite(orbit.images)
    sampled = layout.composite(layout.read_orbit(gen_dir / "orbit", layout.DYNAMIC).images)
    if max(views) >= min(len(gt), len(sampled)):
        raise ValueError(f"views {views} out of range: {len(gt)} ground-truth, {len(sampled)} sampled views")
    rows = [prompt_row(condition, gt_dir, gt, views), Row("ground truth", to_tiles(gt, views)),
            Row("sampled orbit", to_tiles(sampled, views))]
    if (gen_dir / "asset4d").is_dir():
        rows.append(asset_row(gen_dir / "asset4d", orbit, views))
    return Block(header_text(uid, scores.get(uid, {})), [row for row in rows if row is not None])


def collect_blocks(root: Path, condition: str, views: list[int], count: int, scores: dict) -> list[Block]:
    """Blocks of the first ``count`` readable uids; unreadable ones are skipped with a note."""
    blocks = []
    for uid in uids_with_orbits(root, condition):
        if len(blocks) == count:
            break
        try:
            blocks.append(load_block(root, condition, uid, views, scores))
        except (FileNotFoundError, ValueError) as exc:
            print(f"skipping {uid}: {exc}", flush=True)
    if not blocks:
        raise ValueError(f"{root / condition}: no uid could be drawn (see the notes above)")
    return blocks


def row_height(row: Row, tile_h: int) -> int:
    """A tile row is a tile high; a text-only row (a caption) needs just one line."""
    return (tile_h if row.tiles else HEADER_H) + PAD


def sheet_size(blocks: list[Block], tile_w: int, tile_h: int) -> tuple[int, int]:
    """(width, height) of the sheet: a label column, then the widest row's tiles; blocks stacked with headers."""
    columns = max(max(len(row.tiles) for row in block.rows) for block in blocks)
    width = LABEL_W + max(columns, 1) * (tile_w + PAD) + PAD
    height = PAD + sum(HEADER_H + sum(row_height(row, tile_h) for row in block.rows) for block in blocks)
    return width, height


def draw_sheet(blocks: list[Block], scale: int) -> Image.Image:
    """The sheet as an RGB image; every tile is scaled (nearest) to the first tile's size times ``scale``."""
    first = next(row.tiles[0] for block in blocks for row in block.rows if row.tiles)
    tile_w, tile_h = first.shape[1] * scale, first.shape[0] * scale
    sheet = Image.new("RGB", sheet_size(blocks, tile_w, tile_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for block in blocks:
        draw.text((PAD, y), block.header, fill=INK)
        y += HEADER_H
        for row in block.rows:
            # no anchor: the bitmap fallback font (Pillow without FreeType) does not support one
            mid = y + (row_height(row, tile_h) - PAD - TEXT_H) // 2
            draw.text((PAD, mid), row.label, fill=INK)
            if row.text:
                draw.text((LABEL_W, mid), row.text, fill=INK)
            for k, tile in enumerate(row.tiles):
                image = Image.fromarray(tile).resize((tile_w, tile_h), Image.Resampling.NEAREST)
                sheet.paste(image, (LABEL_W + k * (tile_w + PAD), y))
            y += row_height(row, tile_h)
    return sheet


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="the --out folder of bench_default_quality.py")
    p.add_argument("--out", type=Path, required=True, help="the sheet, a PNG")
    p.add_argument("--condition", choices=CONDITIONS, default="image")
    p.add_argument("--count", type=int, default=6, help="at most this many uids (sorted)")
    p.add_argument("--views", type=int, nargs="+", default=[0, 6, 12, 18], help="view i = camera i at time τ_i")
    p.add_argument("--scores", type=Path, help="the bench's --json record, for the PSNRs in each header")
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of every tile")
    p.add_argument("--run-bench", action="store_true",
                   help="first sample and fit --count held-out assets into ROOT (bench_default_quality.py)")
    p.add_argument("--bundle", type=Path, help="with --run-bench: the bundle (default: the shipped one)")
    args = p.parse_args(argv)
    if args.count < 1 or args.scale < 1 or min(args.views) < 0:
        p.error("--count and --scale must be ≥ 1 and --views ≥ 0")
    if args.run_bench and args.condition == "text":
        p.error("--run-bench samples image or static prompts (bench_default_quality.py has no text condition)")
    return args


def run_bench(args) -> None:
    """bench_default_quality on ``--count`` held-out assets into ROOT, through `generate` (the 4D asset too)."""
    from bench_default_quality import main as bench

    argv = ["--count", str(args.count), "--steps", "10", "--conditions", args.condition, "--reconstruct",
            "--fit-preset", "cpu", "--out", str(args.root), "--json", str(args.root / "quality.json")]
    bench(argv + (["--bundle", str(args.bundle)] if args.bundle else []))
    args.scores = args.root / "quality.json"


def main(argv=None) -> Path:
    args = parse_args(argv)
    if args.run_bench:
        run_bench(args)
    try:
        scores = read_scores(args.scores, args.condition)
        blocks = collect_blocks(args.root, args.condition, args.views, args.count, scores)
    except ValueError as exc:
        raise SystemExit(f"contact_sheet: {exc}") from None
    sheet = draw_sheet(blocks, args.scale)
    write_png_atomic(args.out, np.asarray(sheet))
    print(f"{args.out}: {len(blocks)} uids, {sheet.width}x{sheet.height}")
    return args.out


if __name__ == "__main__":
    main()
