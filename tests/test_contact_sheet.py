"""benchmarks/contact_sheet.py on a tiny fake bench_default_quality --out folder (2 uids, 4 views at 32², CPU):
the sheet's size and tile colours, the error for a folder without orbits, and a uid with a missing frame."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion4d import cameras
from diffusion4d.data import layout

ROOT = Path(__file__).resolve().parents[1]
S, T, SCALE = 32, 4, 2
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
UIDS = ("asset_a", "asset_b")


@pytest.fixture
def sheet_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import contact_sheet

    return contact_sheet


def write_orbit(folder: Path, kind: str, colour: tuple[int, int, int]) -> None:
    """T solid-colour views of size S² with the orbit's cameras."""
    c2w, (x_fov, y_fov) = cameras.orbit_camera_to_world(T), cameras.fov_xy(39.6, S, S)
    frame = np.full((S, S, 3), colour, dtype=np.uint8)
    for i in range(T):
        layout.write_view(folder, kind, i, frame, c2w[i], x_fov, y_fov)


@pytest.fixture
def bench_root(tmp_path) -> Path:
    """ROOT/orbits/<uid> (V red, V̄ green) and ROOT/image/<uid>/orbit (blue) for two uids."""
    root = tmp_path / "bench"
    for uid in UIDS:
        write_orbit(root / "orbits" / uid, layout.DYNAMIC, RED)
        write_orbit(root / "orbits" / uid, layout.STATIC, GREEN)
        write_orbit(root / "image" / uid / "orbit", layout.DYNAMIC, BLUE)
    return root


def expected_size(cs, blocks: int, rows: int) -> tuple[int, int]:
    tile = S * SCALE
    return cs.LABEL_W + T * (tile + cs.PAD) + cs.PAD, cs.PAD + blocks * (cs.HEADER_H + rows * (tile + cs.PAD))


def tile_centre(cs, block: int, row: int, column: int, rows: int = 3) -> tuple[int, int]:
    """(x, y) of the middle of a tile; rows per block: prompt, ground truth, sampled orbit."""
    tile = S * SCALE
    top = cs.PAD + block * (cs.HEADER_H + rows * (tile + cs.PAD)) + cs.HEADER_H + row * (tile + cs.PAD)
    return cs.LABEL_W + column * (tile + cs.PAD) + tile // 2, top + tile // 2


def test_sheet_size_and_tiles(sheet_module, bench_root, tmp_path):
    cs, out = sheet_module, tmp_path / "sheets" / "sheet.png"
    cs.main([str(bench_root), "--out", str(out), "--views", "0", "1", "2", "3", "--scale", str(SCALE)])
    with Image.open(out) as im:
        sheet = im.convert("RGB")
    assert sheet.size == expected_size(cs, blocks=2, rows=3)
    for block in range(2):
        assert sheet.getpixel(tile_centre(cs, block, 0, 0)) == RED  # the image prompt: GT view 0
        assert sheet.getpixel(tile_centre(cs, block, 0, 1)) == cs.BACKGROUND  # ...and only that one tile
        for column in range(T):
            assert sheet.getpixel(tile_centre(cs, block, 1, column)) == RED
            assert sheet.getpixel(tile_centre(cs, block, 2, column)) == BLUE
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp file left behind


def test_static_prompt_shows_the_static_views(sheet_module, bench_root, tmp_path):
    cs, out = sheet_module, tmp_path / "sheet.png"
    for uid in UIDS:
        write_orbit(bench_root / "static" / uid / "orbit", layout.DYNAMIC, BLUE)
    cs.main([str(bench_root), "--out", str(out), "--condition", "static", "--views", "0", "1", "2", "3",
             "--count", "1"])
    with Image.open(out) as im:
        sheet = im.convert("RGB")
    assert sheet.size == expected_size(cs, blocks=1, rows=3)
    assert [sheet.getpixel(tile_centre(cs, 0, 0, c)) for c in range(T)] == [GREEN] * T


def test_empty_root_names_the_folder(sheet_module, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=str(empty / "orbits")):
        sheet_module.main([str(empty), "--out", str(tmp_path / "sheet.png")])
    (empty / "orbits").mkdir()
    with pytest.raises(SystemExit, match=str(empty / "image")):
        sheet_module.main([str(empty), "--out", str(tmp_path / "sheet.png")])
    assert not (tmp_path / "sheet.png").exists()


def test_uid_with_missing_frame_is_skipped(sheet_module, bench_root, tmp_path, capsys):
    cs, out = sheet_module, tmp_path / "sheet.png"
    layout.frame_path(bench_root / "image" / UIDS[0] / "orbit", layout.DYNAMIC, 1).unlink()
    cs.main([str(bench_root), "--out", str(out), "--views", "0", "1", "2", "3"])
    assert f"skipping {UIDS[0]}" in capsys.readouterr().out
    with Image.open(out) as im:
        sheet = im.convert("RGB")
    assert sheet.size == expected_size(cs, blocks=1, rows=3)
    assert sheet.getpixel(tile_centre(cs, 0, 2, 3)) == BLUE  # the other uid's sampled orbit is drawn


def test_asset_row_and_scores_header(sheet_module, bench_root, tmp_path):
    from diffusion4d.reconstruction.asset import Asset4D
    from diffusion4d.reconstruction.deformation import HexPlaneField
    from diffusion4d.reconstruction.gaussians import Gaussians

    cs, out = sheet_module, tmp_path / "sheet.png"
    field = HexPlaneField(resolution=4, time_resolution=2, levels=1, features=4, width=8, depth=1)
    Asset4D(Gaussians.init_random(16, seed=0), field, "4dgs", T).save(bench_root / "image" / UIDS[1] / "asset4d")
    scores = tmp_path / "quality.json"
    scores.write_text(json.dumps({"rows": {"image": [{"uid": UIDS[1], "psnr": 20.5, "copy_psnr": 18.25,
                                                      "fit_psnr": 19.0}]}}))
    cs.main([str(bench_root), "--out", str(out), "--views", "0", "1", "2", "3", "--scores", str(scores)])
    with Image.open(out) as im:
        width, height = im.size
    tile = S * SCALE
    assert (width, height) == (expected_size(cs, 2, 3)[0], expected_size(cs, 2, 3)[1] + tile + cs.PAD)
    assert cs.header_text(UIDS[1], cs.read_scores(scores, "image")[UIDS[1]]) == \
        f"{UIDS[1]}   PSNR: orbit 20.50 dB, 4D asset 19.00 dB, copy-t0 18.25 dB"
