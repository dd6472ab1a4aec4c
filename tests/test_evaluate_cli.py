"""`diffusion4d evaluate` end to end on tiny orbit folders: pairing, skipped metrics, numbers with weights, errors."""

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion4d import cameras
from diffusion4d.cli import main
from diffusion4d.data import layout
from diffusion4d.evaluation.clip import ClipEmbedder
from diffusion4d.evaluation.evaluate import EvaluateConfig, evaluate, front_views, read_prompts
from diffusion4d.evaluation.i3d import InceptionI3d
from diffusion4d.evaluation.lpips import LPIPS
from diffusion4d.metrics import psnr
from tiny_models import make_tiny_clip

T, S = 6, 32
FOV = math.radians(39.6)
ROW = "Image-to-4D, Diffusion4D* (orbits)"


def rgba_orbit(seed: int, size: int = S, views: int = T) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (views, size, size, 4), dtype=np.uint8)
    images[..., 3] = 0
    images[:, size // 4 : -size // 4, size // 4 : -size // 4, 3] = 255  # an opaque object on a clear background
    return images


def write_orbit(folder, images: np.ndarray, start_deg: float = 0.0):
    c2w = cameras.orbit_camera_to_world(len(images), start_deg)
    for i, image in enumerate(images):
        layout.write_view(folder, layout.DYNAMIC, i, image, c2w[i], FOV, FOV)


def on_white(images: np.ndarray) -> np.ndarray:
    """What a generator writes: opaque RGB (no alpha channel)."""
    return (layout.composite(images).movedim(-3, -1).numpy() * 255).round().astype(np.uint8)


@pytest.fixture
def folders(tmp_path):
    """Ground truth for uids a, b, c; generated a, b, c (noisy, RGB) and zzz (no ground truth)."""
    ref, gen = tmp_path / "gt", tmp_path / "gen"
    rng = np.random.default_rng(9)
    for n, uid in enumerate("abc"):
        gt = rgba_orbit(n)
        write_orbit(ref / uid, gt)
        noisy = np.clip(on_white(gt).astype(int) + rng.integers(-20, 21, (T, S, S, 3)), 0, 255).astype(np.uint8)
        write_orbit(gen / uid, noisy)
        if uid != "c":
            (gen / uid / "timing.json").write_text(json.dumps({"seconds": 10.0 * (n + 1)}))
    write_orbit(gen / "zzz", on_white(rgba_orbit(7)))
    return gen, ref


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    state = LPIPS("alex").state_dict()
    save_file({k: v for k, v in state.items() if k.startswith("lin")}, str(root / "lin.safetensors"))
    torch.save({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}, root / "alexnet.pth")
    save_file(InceptionI3d().state_dict(), str(root / "i3d.safetensors"))
    return {"clip": make_tiny_clip(root / "clip"), "lin": root / "lin.safetensors", "backbone": root / "alexnet.pth",
            "i3d": root / "i3d.safetensors"}


def weight_flags(w) -> list[str]:
    return ["--clip", str(w["clip"]), "--lpips-weights", str(w["lin"]), "--lpips-backbone", str(w["backbone"]),
            "--i3d-weights", str(w["i3d"]), "--i3d-size", "16", "--device", "cpu"]


def run(gen, ref, out, *extra) -> int:
    return main(["-q", "evaluate", "--generated", str(gen), "--reference", str(ref), "--out", str(out), *extra])


def test_without_weights_pixel_metrics_are_computed_and_the_rest_skipped_with_notes(folders, tmp_path, capsys):
    gen, ref = folders
    assert run(gen, ref, tmp_path / "out", "--device", "cpu") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    row = report["rows"][ROW]
    assert row["clip_f"] is None and row["lpips"] is None and row["fvd"] is None
    assert row["generation_time_s"] is None  # c has no timing.json
    notes = " ".join(report["notes"].values())
    for flag in ("--clip", "--lpips-weights", "--i3d-weights", "timing.json"):
        assert flag in notes
    # PSNR/SSIM: the per-view mean per uid, then the mean over uids — recomputed here from the files
    per_uid = json.loads((tmp_path / "out" / "per_uid.json").read_text())
    assert [i["uid"] for i in per_uid["items"]] == ["a", "b", "c"]
    assert per_uid["skipped"][0]["uid"] == "zzz"
    expected = []
    for uid in "abc":
        x = layout.composite(layout.read_orbit(gen / uid).images)
        y = layout.composite(layout.read_orbit(ref / uid).images)
        expected.append(float(psnr(x, y).mean()))
    assert [i["psnr"] for i in per_uid["items"]] == pytest.approx(expected)
    assert row["psnr"] == pytest.approx(np.mean(expected))
    assert 0 < row["ssim"] < 1
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"{np.mean(expected):.1f}" in md and "zzz skipped" in md and "provide --lpips-weights PATH" in md
    assert "note:" in capsys.readouterr().out


def test_with_weights_every_metric_is_a_number(folders, weights, tmp_path):
    gen, ref = folders
    (gen / "c" / "timing.json").write_text(json.dumps({"seconds": 30.0}))
    assert run(gen, ref, tmp_path / "out", *weight_flags(weights)) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    row = report["rows"][ROW]
    assert all(isinstance(v, float) for v in row.values()), row
    assert -1 <= row["clip_f"] <= 1 and -1 <= row["clip_o"] <= 1
    assert row["lpips"] > 0 and row["fvd"] > 0 and row["generation_time_s"] == pytest.approx(20.0)
    # what the FVD rests on: 3 videos a side of 400-d logits, so covariances of rank 2 at most
    assert report["details"]["fvd"][ROW] == {"items": [3, 3], "dim": 400, "ranks": [2, 2]}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "FVD over 3 generated and 3 reference videos, 400-d features, covariance ranks 2 and 2" in md
    # CLIP-F of uid a: reference = ground-truth front view at τ0; targets = generated views 0 and T−1 (front)
    clip = ClipEmbedder.from_dir(weights["clip"])
    gt = layout.composite(layout.read_orbit(ref / "a").images)
    views = clip.images(layout.composite(layout.read_orbit(gen / "a").images))
    reference = clip.images(gt[:1])[0]
    cos = torch.nn.functional.cosine_similarity(reference[None], views).double()
    item = json.loads((tmp_path / "out" / "per_uid.json").read_text())["items"][0]
    assert item["clip_f"] == pytest.approx(float(cos[[0, T - 1]].mean()), abs=1e-5)
    assert item["clip_o"] == pytest.approx(float(cos.mean()), abs=1e-5)


def test_identical_orbits_score_perfectly(tmp_path, weights):
    gen, ref = tmp_path / "gen", tmp_path / "gt"
    for n, uid in enumerate("ab"):
        write_orbit(ref / uid, rgba_orbit(n))
        write_orbit(gen / uid, rgba_orbit(n))
    config = EvaluateConfig(gen, ref, tmp_path / "out", lpips_weights=weights["lin"],
                            lpips_backbone=weights["backbone"], i3d_weights=weights["i3d"], i3d_size=16)
    row = evaluate(config)["rows"][ROW]
    assert row["lpips"] == 0.0 and row["ssim"] == pytest.approx(1.0, abs=1e-6) and math.isinf(row["psnr"])
    assert row["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows"][ROW]["psnr"] == "inf"


def test_fvd_needs_two_videos_per_side(tmp_path, weights):
    gen, ref = tmp_path / "gen", tmp_path / "gt"
    write_orbit(ref / "a", rgba_orbit(0))
    write_orbit(gen / "a", rgba_orbit(1))
    result = evaluate(EvaluateConfig(gen, ref, tmp_path / "out", i3d_weights=weights["i3d"], i3d_size=16))
    assert result["rows"][ROW]["fvd"] is None
    assert "at least 2 videos" in result["notes"][f"{ROW}/fvd"]


@pytest.mark.parametrize("problem", ["views", "size", "camera"])
def test_mismatched_generated_and_ground_truth_is_an_error_naming_both(folders, tmp_path, capsys, problem):
    gen, ref = folders
    bad = gen / "b"
    for f in bad.glob("multi*"):
        f.unlink()
    if problem == "views":
        write_orbit(bad, rgba_orbit(1, views=T - 1))
        expected = f"{bad} has {T - 1} views but {ref / 'b'} has {T}"
    elif problem == "size":
        write_orbit(bad, rgba_orbit(1, size=24))
        expected = f"{bad / 'multi_frame0.png'} is 24x24 but {ref / 'b' / 'multi_frame0.png'} is 32x32"
    else:
        write_orbit(bad, rgba_orbit(1), start_deg=90.0)
        expected = f"{bad / 'multi0.json'} and {ref / 'b' / 'multi0.json'} are not the same camera"
    assert run(gen, ref, tmp_path / "out", "--device", "cpu") == 2
    assert expected in capsys.readouterr().err


def test_missing_folders_and_no_matches_are_errors(folders, tmp_path, capsys):
    gen, ref = folders
    assert run(tmp_path / "nowhere", ref, tmp_path / "out") == 2
    assert "generated folder not found" in capsys.readouterr().err
    other = tmp_path / "other"
    write_orbit(other / "q", rgba_orbit(3))
    assert run(other, ref, tmp_path / "out") == 2
    assert "q: no ground-truth orbit" in capsys.readouterr().err


def test_text_task_uses_captions_and_skips_pixel_metrics(folders, weights, tmp_path):
    gen, ref = folders
    (ref / "manifest.jsonl").write_text(
        json.dumps({"uid": "a", "caption": "a red fox"}) + "\n" + json.dumps({"uid": "b", "caption": "a cat"}) + "\n")
    (ref / "b" / "metadata.json").write_text(json.dumps({"caption": "a dog"}))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"uid": "b", "caption": "the bird"}) + "\n")
    assert read_prompts(ref, prompts) == {"a": "a red fox", "b": "the bird"}  # --prompts > manifest > metadata
    assert read_prompts(ref, None)["b"] == "a cat"
    assert run(gen, ref, tmp_path / "out", "--task", "text", "--prompts", str(prompts), "--clip",
               str(weights["clip"]), "--device", "cpu") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    row = report["rows"]["Text-to-4D, Diffusion4D* (orbits)"]
    assert isinstance(row["clip_f"], float) and row["ssim"] is None and row["fvd"] is None
    assert "not a paper metric" in report["notes"]["Text-to-4D, Diffusion4D* (orbits)/ssim"]
    assert any("no caption for c" in r for r in report["remarks"])
    items = {i["uid"]: i for i in json.loads((tmp_path / "out" / "per_uid.json").read_text())["items"]}
    clip = ClipEmbedder.from_dir(weights["clip"])
    views = clip.images(layout.composite(layout.read_orbit(gen / "b").images))
    cos = torch.nn.functional.cosine_similarity(clip.text(["the bird"]), views).double()
    assert items["b"]["clip_o"] == pytest.approx(float(cos.mean()), abs=1e-5) and items["c"]["clip_o"] is None


class _FakeAsset:
    """Stands in for reconstruction.asset.Asset4D: renders a flat grey and records its cameras and times."""

    calls: list = []

    @classmethod
    def load(cls, folder):
        if not (folder / "asset.json").is_file():
            raise FileNotFoundError(f"{folder}: no asset.json")
        return cls()

    def to(self, device):
        return self

    def render(self, c2w, x_fov, y_fov, width, height, t):
        _FakeAsset.calls.append((np.array(c2w), t, width, height))
        return np.full((height, width, 3), 128, np.uint8)


def test_4d_assets_are_rendered_at_ground_truth_cameras_and_36_orbit_views(folders, weights, tmp_path, monkeypatch):
    gen, ref = folders
    for uid in "ab":
        for f in (gen / uid).glob("multi*"):
            f.unlink()
        (gen / uid / "asset.json").write_text("{}")
    for f in (gen / "c").glob("multi*"):  # not an orbit and not an asset: skipped with the reason
        f.unlink()
    monkeypatch.setitem(sys.modules, "diffusion4d.reconstruction.asset", types.SimpleNamespace(Asset4D=_FakeAsset))
    _FakeAsset.calls = []
    result = evaluate(EvaluateConfig(gen, ref, tmp_path / "out", clip=weights["clip"]))
    row = result["rows"]["Image-to-4D, Diffusion4D (4D assets)"]
    assert isinstance(row["clip_o"], float) and 0 < row["ssim"] < 1
    assert [i["views"] for i in result["items"]] == [36, 36]
    assert {s["uid"] for s in result["skipped"]} == {"c", "zzz"}
    gt = layout.read_orbit(ref / "a")
    first = _FakeAsset.calls[:T]  # uid a: the ground-truth cameras at τ_i, then 36 orbit views at i/35
    assert all(np.allclose(c, gt.c2w[i]) and t == pytest.approx(i / (T - 1)) for i, (c, t, _, _) in enumerate(first))
    orbit = _FakeAsset.calls[T : T + 36]
    assert front_views(np.stack([c for c, _, _, _ in orbit])) == [0, 35] and orbit[-1][1] == pytest.approx(1.0)
    monkeypatch.setitem(sys.modules, "diffusion4d.reconstruction.asset", None)  # a version without assets
    with pytest.raises(ValueError, match="cannot read 4D assets"):
        evaluate(EvaluateConfig(gen, ref, tmp_path / "out2"))


def test_front_views_are_read_from_the_cameras():
    assert front_views(cameras.orbit_camera_to_world(24)) == [0, 23]
    quarter = cameras.orbit_camera_to_world(24, start_deg=90.0)  # views every 360/23°: the nearest is view 17
    assert front_views(quarter) == [int(np.argmin(np.abs((90 + 360 * np.arange(24) / 23 + 180) % 360 - 180)))]


def test_a_real_4d_asset_folder_is_evaluated(folders, tmp_path):
    asset_module = pytest.importorskip("diffusion4d.reconstruction.asset")
    from diffusion4d.reconstruction.deformation import HexPlaneField
    from diffusion4d.reconstruction.gaussians import Gaussians

    gen, ref = folders
    for f in (gen / "a").glob("multi*"):
        f.unlink()
    field = HexPlaneField(resolution=4, time_resolution=2, levels=1, features=4, width=8, depth=1)
    asset_module.Asset4D(Gaussians.init_random(16, seed=0), field, "4dgs", T).save(gen / "a")
    result = evaluate(EvaluateConfig(gen, ref, tmp_path / "out"))
    assert [(i["uid"], i["kind"], i["views"]) for i in result["items"]][0] == ("a", "asset", 36)
    row = result["rows"]["Image-to-4D, Diffusion4D (4D assets)"]
    assert 0 < row["ssim"] < 1 and math.isfinite(row["psnr"])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file: a checkpoint that executes code
        return (type(self.marker).touch, (self.marker,))


def test_weights_that_are_not_state_dicts_are_refused_by_the_cli(folders, tmp_path, capsys):
    gen, ref = folders
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    assert run(gen, ref, tmp_path / "out", "--i3d-weights", str(garbage), "--device", "cpu") == 2
    assert f"{garbage}: refused" in capsys.readouterr().err
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": _RunsCode(marker)}, evil)
    assert run(gen, ref, tmp_path / "out", "--i3d-weights", str(evil), "--device", "cpu") == 2
    assert f"{evil}: refused" in capsys.readouterr().err and not marker.exists()
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    assert run(gen, ref, tmp_path / "out", "--lpips-weights", str(tensor_only), "--lpips-backbone",
               str(tensor_only), "--device", "cpu") == 2
    assert "not a state dict" in capsys.readouterr().err


def test_composite_is_straight_alpha_over_the_background_and_takes_read_only_arrays():
    import warnings

    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 255, 0, 51]]], np.uint8)  # [1, 3, 4]
    rgba.setflags(write=False)  # as np.asarray(PIL image) gives
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on read-only arrays it would share memory with
        out = layout.composite(rgba)
    assert out.shape == (3, 1, 3) and out.dtype == torch.float32
    np.testing.assert_allclose(out[:, 0].T.numpy(), [[1, 0, 0], [1, 1, 1], [0.8, 1, 0.8]], atol=1e-6)
    np.testing.assert_allclose(layout.composite(torch.from_numpy(rgba.copy()), (0, 0, 0))[:, 0, 2].numpy(),
                               [0, 0.2, 0], atol=1e-6)
