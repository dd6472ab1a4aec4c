"""benchmarks/bench_default_quality.py end to end on the CPU with a toy untrained bundle (4 views at 32²): the
table rows per condition, the copy-τ0 baseline, the motion magnitudes, the fit's scores and the JSON."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from test_default_model import S, T, _fake_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_bundle(tmp_path) -> Path:
    from diffusion4d.diffusion.train_vae import build_vae
    from diffusion4d.pipelines.default import write_bundle

    torch.manual_seed(0)
    build_vae((8, 16, 16, 16)).save_pretrained(tmp_path / "vae")
    # the text models are in every bundle but unused here: their encoder is never loaded
    runs = _fake_runs(tmp_path / "runs", "unused-text-encoder")
    return write_bundle(tmp_path / "default", runs, tmp_path / "vae", {"note": "untrained, for tests"})


@pytest.mark.slow
def test_quality_table_and_json_at_toy_size(toy_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_default_quality import CONDITIONS, main

    out, record_path = tmp_path / "out", tmp_path / "quality.json"
    record = main(["--bundle", str(toy_bundle), "--count", "2", "--steps", "2", "--device", "cpu", "--reconstruct",
                   "--fit-preset", "cpu", "--json", str(record_path), "--out", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(record_path.read_text())
    assert saved == json.loads(json.dumps(record))
    assert (saved["size"], saved["frames"], saved["count"], saved["steps"]) == (S, T, 2, 2)
    assert saved["fit_preset"] == "cpu"
    uids = sorted(p.name for p in (out / "orbits").iterdir() if p.is_dir())
    assert len(uids) == 2
    for condition in CONDITIONS:
        rows = saved["rows"][condition]
        assert [r["uid"] for r in rows] == uids and [r["seed"] for r in rows] == [0, 1]
        for r in rows:  # SSIM lies in [−1, 1]: an untrained model's noise can score below 0
            assert all(math.isfinite(r[k]) for k in r if k != "uid"), r
            assert -1 <= r["ssim"] <= 1 and -1 <= r["fit_ssim"] <= 1 and r["m"] > 0 and r["m_gt"] >= 0
            assert (out / condition / r["uid"] / "orbit" / "multi_frame0.png").is_file()
            assert (out / condition / r["uid"] / "asset4d").is_dir()
        assert (out / "image" / uids[0] / "static" / "multi_static_frame0.png").is_file()  # V̄′ for the coarse stage
        mean = saved["means"][condition]
        assert mean["psnr"] == pytest.approx(sum(r["psnr"] for r in rows) / 2)
        # the table: header, rule, one row per asset, the mean — the same figures as the JSON
        table = printed.split(f"**{condition} condition**")[1].strip().split("\n\n")[0].splitlines()
        assert table[0].startswith("| asset | sample s | PSNR | copy PSNR |") and "4D PSNR" in table[0]
        assert [line.split("|")[1].strip() for line in table[2:]] == [*uids, "**mean**"]
        cells = [c.strip() for c in table[-1].split("|")[2:-1]]
        assert float(cells[1]) == pytest.approx(mean["psnr"], abs=0.006)
    # static's copy-τ0 baseline is V̄ itself, so its motion magnitude against V̄ is the ground truth's m
    import bench_default_quality as bench

    gt_dir = out / "orbits" / uids[0]
    _, target, static = bench.ground_truth(gt_dir)
    copy = bench.copy_baseline("static", target, static)
    assert torch.equal(copy, static)
    from diffusion4d.metrics import motion_magnitude

    assert float(motion_magnitude(target, copy)) == pytest.approx(saved["rows"]["static"][0]["m_gt"])
    assert re.search(r"conditioned on each ground truth's m", printed)


def test_refit_scores_the_fit_of_sampled_orbits_beside_generates(tmp_path, monkeypatch, capsys):
    """bench_refit.py on a folder laid out as bench_default_quality --reconstruct --out writes it (here the "sampled"
    orbit is the ground truth itself): the fit with the given overrides, scored at the ground truth's cameras and
    times, beside the saved score of generate's fit and copy-τ0; a folder without sampled orbits is named."""
    import shutil

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_default_quality import copy_baseline, ground_truth, render_held_out
    from bench_reconstruct import _scores
    from bench_refit import main as refit

    with pytest.raises(SystemExit, match=f"{tmp_path / 'image'}: no sampled orbits there"):
        refit([str(tmp_path)])
    (tmp_path / "image" / "x" / "orbit").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no uid has orbit/, static/ and a ground truth"):
        refit([str(tmp_path)])
    shutil.rmtree(tmp_path / "image")

    [uid] = render_held_out(tmp_path, 1, 32, 4)
    for part in ("orbit", "static"):  # the orbit folder holds V and V̄ in the official layout
        shutil.copytree(tmp_path / "orbits" / uid, tmp_path / "image" / uid / part)
    scores = tmp_path / "q.json"
    scores.write_text(json.dumps({"rows": {"image": [{"uid": uid, "fit_psnr": 12.5}]}}))
    record = refit([str(tmp_path), "--iters", "3", "2", "--config", "views_per_step=1", "--scores", str(scores),
                    "--device", "cpu", "--json", str(tmp_path / "refit.json")])
    assert json.loads((tmp_path / "refit.json").read_text()) == json.loads(json.dumps(record))
    [row] = record["rows"]
    _, target, static = ground_truth(tmp_path / "orbits" / uid)
    assert row["uid"] == uid and row["saved_psnr"] == 12.5
    assert row["copy_psnr"] == _scores(copy_baseline("image", target, static), target)[0]
    assert math.isfinite(row["psnr"]) and -1 <= row["ssim"] <= 1
    assert record["config"]["coarse_iters"] == 3 and record["config"]["views_per_step"] == 1
    assert record["means"]["saved_psnr"] == 12.5 and "refit of 1 sampled orbits" in capsys.readouterr().out


def test_missing_bundle_is_refused_before_rendering(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_default_quality import main

    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        main(["--bundle", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_conditions_and_guidance_options(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_default_quality import parse_args

    args = parse_args(["--conditions", "static", "--w1", "2.5"])
    assert args.conditions == ("static",) and args.w1 == 2.5 and args.w2 is None  # None: the bundle's own
    with pytest.raises(SystemExit):
        parse_args(["--conditions", "image,video"])
    assert parse_args(["--conditions", "image,text"]).conditions == ("image", "text")


def test_guidance_reuse_benchmark_side_by_side_at_toy_size(toy_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_guidance_reuse import main

    record_path = tmp_path / "reuse.json"
    record = main(["--bundle", str(toy_bundle), "--count", "1", "--steps", "3", "--every", "2", "--device", "cpu",
                   "--conditions", "image", "--json", str(record_path)])
    saved = json.loads(record_path.read_text())
    assert saved == json.loads(json.dumps(record)) and set(saved["results"]["image"]) == {"1", "2"}
    exact, reused = saved["results"]["image"]["1"], saved["results"]["image"]["2"]
    assert exact["psnr_vs_k1"] == math.inf and math.isfinite(reused["psnr_vs_k1"])  # reuse moved the sample
    assert all(math.isfinite(r[k]) for r in (exact, reused) for k in ("seconds", "psnr", "ssim"))
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if re.match(r"\| [12] \|", line)]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "1.00"


def test_paper_claims_benchmark_at_toy_size(toy_bundle, tmp_path, monkeypatch):
    """(a) ρ over the m sweep, (b) two bundles side by side, (c) w2 = 0.5 vs 0, on the same held-out assets."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_paper_claims import main

    record_path = tmp_path / "claims.json"
    record = main(["--bundle", str(toy_bundle), "--omega-bundles", f"1={toy_bundle}", f"0={toy_bundle}", "--count", "2",
                   "--sweep-count", "1", "--sweep", "0.0", "0.05", "0.2", "--steps", "2", "--claims", "a,b,c",
                   "--device", "cpu", "--json", str(record_path)])
    saved = json.loads(record_path.read_text())
    assert saved == json.loads(json.dumps(record))
    for condition in ("image", "static"):  # (a) swept on both conditions by default
        a = saved[f"a_{condition}"]
        assert a["condition"] == condition and a["sweep"] == [0.0, 0.05, 0.2]
        assert len(a["rows"]) == 1 and len(a["rows"][0]["measured"]) == 3
        assert -1 <= a["rho_mean"] <= 1 or math.isnan(a["rho_mean"])
    # image samples are measured a second time, against the 3D-aware base's V̄′ of the same prompt
    row = saved["a_image"]["rows"][0]
    assert len(row["measured_own"]) == 3 and all(m >= 0 for m in row["measured_own"])
    assert row["measured_own"] != row["measured"] and "rho_own_mean" in saved["a_image"]
    assert "measured_own" not in saved["a_static"]["rows"][0]
    for claim, arms in (("b", ("omega_1", "omega_0")), ("c", ("w2_0.5", "w2_0"))):
        assert set(saved[claim]["rows"]) == set(arms)
        assert all(len(saved[claim]["rows"][arm]) == 2 for arm in arms)
    # the same bundle, seeds and m on both arms of (b): the same samples
    assert saved["b"]["means"]["omega_1"] == saved["b"]["means"]["omega_0"]


def test_paper_claims_needs_an_omega0_bundle_and_another_for_b(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_paper_claims import parse_args

    for bad in ([], ["1=x"], ["0=x"], ["zero=x", "1=y"], ["0x"]):
        with pytest.raises(SystemExit):
            parse_args(["--claims", "b", "--omega-bundles", *bad])
    assert parse_args(["--claims", "b", "--omega-bundles", "0=a", "1000=b"]).omega_bundles == {0.0: Path("a"),
                                                                                                 1000.0: Path("b")}
    assert parse_args(["--claims", "a,c"]).claims == ("a", "c")
    assert parse_args(["--claims", "a", "--sweep-conditions", "static"]).sweep_conditions == ("static",)
    with pytest.raises(SystemExit):
        parse_args(["--claims", "a", "--sweep-conditions", "text"])


def test_capacity_bench_widens_the_image_unet_and_times_it(toy_bundle, monkeypatch, capsys):
    """bench_capacity.py at toy size: ×2 doubles every channel count (kept a multiple of the norm groups), the wider
    model has about 4× the parameters and still samples an orbit; one table row per width."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_capacity import main

    rows = main(["--bundle", str(toy_bundle), "--widths", "1", "2", "--steps", "1", "--calls", "1", "--threads", "1"])
    one, two = rows
    groups = json.loads((toy_bundle / "image_4d" / "config.json").read_text())["norm_num_groups"]
    assert two["channels"] == [2 * c for c in one["channels"]] and all(c % groups == 0 for c in two["channels"])
    assert 3 < two["params_m"] / one["params_m"] < 4.5 and two["fp16_mb"] == pytest.approx(2 * two["params_m"])
    assert one["s"] > 0 and two["s"] > 0
    table = capsys.readouterr().out.split("| width |")[1].splitlines()
    assert [line.split("|")[1].strip() for line in table[2:4]] == ["×1", "×2"]
