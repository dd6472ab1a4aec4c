"""Curation and the Dataset on hand-made orbit folders in the authors' released layout (no metadata, no front
frames)."""

import json

import numpy as np
import pytest
import torch

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.data.curate import CurationConfig, curate, discover_assets, split_of
from diffusion4d.data.dataset import OrbitDataset

T, S = 8, 64


def _square(x: int, y: int = 28, size: int = 8, color=(0, 0, 0)) -> np.ndarray:
    img = np.zeros((S, S, 4), np.uint8)
    img[y : y + size, x : x + size, :3] = color
    img[y : y + size, x : x + size, 3] = 255
    return img


def write_orbit(folder, dynamic_x, static_x=20, start_turns=0.0, **square):
    """An orbit whose view i shows a black square at column dynamic_x(i); the static orbit keeps it at static_x."""
    x_fov, y_fov = cameras.fov_xy(39.6, S, S)
    for i, c2w in enumerate(cameras.orbit_camera_to_world(T, 360 * start_turns)):
        layout.write_view(folder, layout.DYNAMIC, i, _square(dynamic_x(i), **square), c2w, x_fov, y_fov)
        layout.write_view(folder, layout.STATIC, i, _square(static_x, **square), c2w, x_fov, y_fov)


@pytest.fixture
def orbits(tmp_path):
    root = tmp_path / "orbits"
    write_orbit(root / "mover", lambda i: 20 if i == 0 else 36)  # jumps 16 px right after τ0
    write_orbit(root / "mover_az0.37", lambda i: 20 if i == 0 else 36, start_turns=0.37)
    write_orbit(root / "still", lambda i: 20)
    write_orbit(root / "escapes", lambda i: 20 + 8 * i)  # runs off the right edge
    rng = np.random.default_rng(0)
    write_orbit(root / "noisy", lambda i: 20)
    for i in range(1, T):  # dynamic frames of pure noise: "drastic appearance change"
        noise = rng.integers(0, 256, (S, S, 4), dtype=np.uint8)
        noise[..., 3] = 255
        noise[0, :, 3] = noise[-1, :, 3] = noise[:, 0, 3] = noise[:, -1, 3] = 0  # keep it inside the frame
        layout.write_png_atomic(layout.frame_path(root / "noisy", layout.DYNAMIC, i), noise)
    write_orbit(root / "broken_files", lambda i: 20)
    layout.frame_path(root / "broken_files", layout.DYNAMIC, 3).unlink()
    (root / "captions.jsonl").write_text(json.dumps({"uid": "mover", "caption": "a black square jumps"}) + "\n")
    return root


def test_random_start_folders_group_under_their_uid(orbits):
    assets = discover_assets(orbits)
    assert assets["mover"] == ["mover", "mover_az0.37"]
    assert set(assets) == {"mover", "still", "escapes", "noisy", "broken_files"}
    assert layout.parse_orbit_dirname("abc_az0.05") == ("abc", 0.05)
    assert layout.parse_orbit_dirname("abc") == ("abc", None)
    assert layout.random_start_dirname("abc", 0.5) == "abc_az0.50"


def test_curation_decisions_scores_and_motion_magnitude(orbits):
    rows = {r["uid"]: r for r in curate(orbits, CurationConfig(val_fraction=0.0), progress=False)}
    mover = rows["mover"]
    assert mover["kept"] and mover["reason"] == "kept"
    assert mover["ssim_source"] == "orbit"  # the authors' layout has no front frames
    assert all(0.4 < s < 0.95 for s in mover["ssim"])
    # Eq. (1) by hand: views 1…T−1 differ on two 8×8 squares (black vs white in 3 channels) of a 64×64 image.
    expected_m = (T - 1) / T * (2 * 64) / (S * S)
    assert mover["m"] == pytest.approx(expected_m, rel=1e-6)
    assert [o["folder"] for o in mover["orbits"]] == ["mover", "mover_az0.37"]
    assert mover["orbits"][1]["m"] == pytest.approx(expected_m, rel=1e-6)
    assert mover["caption"] == "a black square jumps"
    assert mover["split"] == "train"

    assert rows["still"]["reason"].startswith("too_still") and rows["still"]["m"] == 0.0
    assert rows["still"]["ssim"] == [1.0, 1.0]
    assert rows["escapes"]["reason"] == "out_of_bounds" and rows["escapes"]["out_of_bounds"]
    assert rows["noisy"]["reason"].startswith("broken")
    broken = rows["broken_files"]
    assert not broken["kept"] and "multi_frame3.png" in broken["reason"] and "missing" in broken["reason"]

    manifest = [json.loads(line) for line in (orbits / "manifest.jsonl").read_text().splitlines()]
    assert {r["uid"] for r in manifest} == set(rows)


def test_thresholds_are_configurable(orbits):
    rows = {r["uid"]: r for r in curate(orbits, CurationConfig(s_high=0.0), progress=False)}
    assert rows["mover"]["reason"].startswith("too_still")


def test_split_is_stable_and_roughly_proportional():
    uids = [f"asset{i}" for i in range(2000)]
    val = [u for u in uids if split_of(u, 0.1) == "val"]
    assert 150 < len(val) < 250
    assert val == [u for u in uids if split_of(u, 0.1) == "val"]


def test_dataset_items(orbits):
    curate(orbits, CurationConfig(val_fraction=0.0), progress=False)
    ds = OrbitDataset(orbits, split="train")
    assert [it[1]["folder"] for it in ds.items] == ["mover", "mover_az0.37"]  # only kept assets, every orbit
    item = ds[1]
    assert item["video"].shape == (T, 3, S, S) and item["static"].shape == (T, 3, S, S)
    assert item["video"].min() == -1.0 and item["video"].max() == 1.0  # black square on white
    assert item["cameras"].shape == (T, 4, 4) and item["cameras"].dtype == torch.float32
    expected = cameras.orbit_camera_to_world(T, 360 * 0.37)
    np.testing.assert_allclose(item["cameras"].numpy(), expected, atol=1e-5)  # read from JSON, not recomputed
    np.testing.assert_allclose(item["timestamps"].numpy(), np.arange(T) / (T - 1), atol=1e-7)
    assert item["m"].item() == pytest.approx((T - 1) / T * 128 / (S * S), rel=1e-5)
    assert item["uid"] == "mover" and item["orbit"] == "mover_az0.37"
    # The background is configurable: on black, the black square vanishes into it.
    dark = OrbitDataset(orbits, split="train", background=(0, 0, 0), front_only=True, load_static=False)
    assert len(dark) == 1 and "static" not in dark[0]
    assert dark[0]["video"].max() == -1.0
    assert len(OrbitDataset(orbits, split="val")) == 0
    # mover ×2, still, escapes, noisy; the error row has none
    assert len(OrbitDataset(orbits, split=None, kept_only=False)) == 5
    with pytest.raises(ValueError, match="split"):
        OrbitDataset(orbits, split="test")


def test_dataset_without_manifest_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="diffusion4d curate"):
        OrbitDataset(tmp_path)


def test_orbit_reader_errors_name_the_file(tmp_path):
    write_orbit(tmp_path / "a", lambda i: 20)
    layout.write_png_atomic(layout.frame_path(tmp_path / "a", layout.DYNAMIC, 2), np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="multi_frame2.png.*differs"):
        layout.read_orbit(tmp_path / "a")
    rgb = np.zeros((S, S, 3), np.uint8)  # a non-RGBA image is read as opaque
    layout.write_png_atomic(layout.frame_path(tmp_path / "a", layout.DYNAMIC, 2), rgb)
    assert layout.read_orbit(tmp_path / "a").images[2, ..., 3].min() == 255
    layout.camera_path(tmp_path / "a", layout.DYNAMIC, 4).write_text("{}")
    with pytest.raises(ValueError, match="multi4.json"):
        layout.read_orbit(tmp_path / "a")
    layout.camera_path(tmp_path / "a", layout.DYNAMIC, 4).unlink()
    with pytest.raises(ValueError, match="multi4.json: cannot read camera JSON"):
        layout.read_orbit(tmp_path / "a")
    layout.frame_path(tmp_path / "a", layout.DYNAMIC, 3).unlink()  # a gap, not a shorter orbit
    with pytest.raises(FileNotFoundError, match=r"multi_frame3.png: missing frame \(1 missing in all\)"):
        layout.read_orbit(tmp_path / "a")
