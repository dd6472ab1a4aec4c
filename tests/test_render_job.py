"""The render job end to end: real assets → official layout → curation → Dataset; resume, kill -9, bad input."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffusion4d import cameras
from diffusion4d.cli import main as cli_main
from diffusion4d.data import layout
from diffusion4d.data.curate import CurationConfig, curate
from diffusion4d.data.dataset import OrbitDataset
from diffusion4d.data.limits import AssetLimits
from diffusion4d.data.render_job import RenderSettings, is_done, random_start_turns, run_render_job
from hazard_assets import write_exploding_asset, write_hanging_asset
from process_group import HANG_TIMEOUT_S, kill_group, popen_group, run_group
from single_sided import write_single_sided_quad

GLTF_DIR = Path(__file__).resolve().parents[2] / "shared" / "assets" / "gltf"
needs_samples = pytest.mark.skipif(not GLTF_DIR.is_dir(), reason=f"sample assets not found at {GLTF_DIR}")
SMALL = RenderSettings(frames=8, size=48, samples=0)


@pytest.fixture(scope="module")
def procedural_assets(tmp_path_factory):
    from diffusion4d.assets.procedural import write_procedural_dataset

    return write_procedural_dataset(tmp_path_factory.mktemp("assets"), count=3, seed=7, progress=False)


@needs_samples
def test_layout_metadata_and_cameras(tmp_path):
    out = tmp_path / "orbits"
    report = run_render_job([GLTF_DIR / "RiggedFigure.gltf"], out, SMALL, progress=False)
    assert report.done and not report.failed
    uid, T = "RiggedFigure", SMALL.frames
    (turns,) = random_start_turns(uid, SMALL.seed, 1)
    for folder in (out / uid, out / layout.random_start_dirname(uid, turns)):
        for kind in (layout.DYNAMIC, layout.STATIC):
            assert layout.count_views(folder, kind) == T
        orbit = layout.read_orbit(folder)
        assert orbit.images.shape == (T, 48, 48, 4)
        start = 0.0 if folder.name == uid else 360 * turns
        np.testing.assert_allclose(orbit.c2w, cameras.orbit_camera_to_world(T, start), atol=1e-9)
        assert orbit.x_fov == pytest.approx(np.radians(39.6))
        assert (orbit.images[:, 24, 24, 3] > 0).all()  # the asset is in the middle of every view
        assert (orbit.images[:, 0, :, 3] == 0).all()  # and inside the frame
    # The static orbit is τ0 seen from the dynamic orbit's cameras: view 0 is identical, later views differ.
    dyn, sta = layout.read_orbit(out / uid), layout.read_orbit(out / uid, layout.STATIC)
    np.testing.assert_array_equal(dyn.images[0], sta.images[0])
    assert np.abs(dyn.images[1:].astype(int) - sta.images[1:]).sum() > 0
    for k in (T // 4, T // 2):
        assert (out / uid / f"front_frame{k}.png").exists()
    meta = json.loads((out / uid / "metadata.json").read_text())
    assert meta["has_animation"] and meta["duration"] == pytest.approx(1.25)
    np.testing.assert_allclose(meta["times_seconds"], np.arange(T) / 24)  # official: frames 0…T−1 at 24 fps
    assert [o["folder"] for o in meta["orbits"]] == [uid, layout.random_start_dirname(uid, turns)]
    assert meta["settings"]["frames"] == T

    clip = run_render_job([GLTF_DIR / "RiggedFigure.gltf"], tmp_path / "clip",
                          RenderSettings(frames=8, size=32, samples=0, time_mode="clip"), progress=False)
    assert clip.done
    meta = json.loads((tmp_path / "clip" / uid / "metadata.json").read_text())
    np.testing.assert_allclose(meta["times_seconds"], np.linspace(0, 1.25, 8))


def test_procedural_end_to_end_with_curation_and_dataset(tmp_path, procedural_assets):
    out = tmp_path / "orbits"
    report = run_render_job([procedural_assets[0].parent], out, SMALL, workers=2, progress=False)
    assert len(report.done) == 3 and not report.failed
    rows = curate(out, CurationConfig(val_fraction=0.0), progress=False)
    assert len(rows) == 3
    for row in rows:
        assert row["ssim_source"] == "front"
        assert row["caption"]  # from captions.jsonl beside the assets, via metadata.json
        assert row["m"] > 0 and len(row["orbits"]) == 2
    kept = [r for r in rows if r["kept"]]
    if kept:
        item = OrbitDataset(out)[0]
        assert item["video"].shape == (8, 3, 48, 48) and item["static"].shape == (8, 3, 48, 48)
        assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0


@needs_samples
def test_resume_skips_done_and_redoes_half_written(tmp_path):
    assets = [GLTF_DIR / "SimpleSkin.gltf", GLTF_DIR / "BoxAnimated.gltf"]
    out = tmp_path / "orbits"
    run_render_job(assets, out, SMALL, progress=False)
    done_meta = out / "SimpleSkin" / "metadata.json"
    stamp = done_meta.stat().st_mtime_ns
    # Simulate a kill in the middle of BoxAnimated: no metadata, a missing frame, a stray temp file.
    (out / "BoxAnimated" / "metadata.json").unlink()
    (out / "BoxAnimated" / "multi_frame5.png").unlink()
    (out / "BoxAnimated" / ".multi_frame5.png.x.tmp").write_bytes(b"partial")
    report = run_render_job(assets, out, SMALL, progress=False)
    assert report.skipped == [str(assets[0])] and report.done == [str(assets[1])]
    assert done_meta.stat().st_mtime_ns == stamp
    assert (out / "BoxAnimated" / "multi_frame5.png").exists()
    assert not list((out / "BoxAnimated").glob("*.tmp"))
    # Other settings are another job: the asset is rendered again.
    report = run_render_job(assets[:1], out, RenderSettings(frames=6, size=32, samples=0), progress=False)
    assert report.done == [str(assets[0])]
    assert layout.count_views(out / "SimpleSkin") == 6


def test_cull_back_faces_reaches_the_renderer_and_is_a_setting(tmp_path):
    quad = write_single_sided_quad(tmp_path / "quad.glb")
    args = ["-q", "render", str(quad), "--frames", "4", "--size", "32", "--samples", "0", "--random-starts", "0"]
    assert cli_main([*args, "--out", str(tmp_path / "both")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "culled"), "--cull-back-faces"]) == 0
    both, culled = (layout.read_orbit(tmp_path / out / "quad").images for out in ("both", "culled"))
    # The orbit's azimuths are 0°, 120°, 240°, 360°: views 1 and 2 see the quad's back. By default both sides are
    # drawn; with the flag the back is culled, and the front is the same either way.
    assert [bool(v[..., 3].any()) for v in both] == [True, True, True, True]
    assert [bool(v[..., 3].any()) for v in culled] == [True, False, False, True]
    np.testing.assert_array_equal(culled[[0, 3]], both[[0, 3]])
    for out, cull in (("both", False), ("culled", True)):
        meta = json.loads((tmp_path / out / "quad" / layout.METADATA).read_text())
        assert meta["settings"]["cull_back_faces"] is cull

    # A different setting, so a different job: neither counts as done for the other.
    settings = RenderSettings(frames=4, size=32, samples=0, random_starts=0)
    culling = RenderSettings(frames=4, size=32, samples=0, random_starts=0, cull_back_faces=True)
    assert is_done(tmp_path / "both", "quad", settings) and not is_done(tmp_path / "both", "quad", culling)
    assert is_done(tmp_path / "culled", "quad", culling) and not is_done(tmp_path / "culled", "quad", settings)
    # Orbits rendered before the setting existed (no such key) drew both sides: still done, not rendered again.
    meta_path = tmp_path / "both" / "quad" / layout.METADATA
    meta = json.loads(meta_path.read_text())
    del meta["settings"]["cull_back_faces"]
    meta_path.write_text(json.dumps(meta))
    assert is_done(tmp_path / "both", "quad", settings) and not is_done(tmp_path / "both", "quad", culling)


def _write_bad_inputs(folder: Path) -> dict[str, str]:
    """Bad files and the words their error must contain."""
    folder.mkdir()
    (folder / "truncated.glb").write_bytes(b"glTF\x02\x00\x00\x00\xff\xff\x00\x00JSON")
    (folder / "notgltf.gltf").write_text(json.dumps({"hello": "world"}))
    (folder / "basisu.gltf").write_text(json.dumps({  # a required extension we do not decode
        "asset": {"version": "2.0"}, "extensionsUsed": ["KHR_texture_basisu"],
        "extensionsRequired": ["KHR_texture_basisu"]}))
    return {"truncated.glb": "truncated.glb", "notgltf.gltf": "notgltf.gltf",
            "basisu.gltf": "KHR_texture_basisu"}


@needs_samples
def test_batch_reports_bad_assets_and_finishes_the_rest(tmp_path, capsys):
    expected = _write_bad_inputs(tmp_path / "bad")
    out = tmp_path / "orbits"
    code = cli_main(["-q", "render", str(tmp_path / "bad"), str(GLTF_DIR / "AnimatedTriangle.gltf"),
                     str(tmp_path / "missing.glb"), "--out", str(out), "--frames", "6", "--size", "32",
                     "--workers", "1"])
    assert code == 1  # something failed; everything else was still done
    printed = capsys.readouterr().out
    report = json.loads((out / "render_report.json").read_text())
    assert report["done"] == [str(GLTF_DIR / "AnimatedTriangle.gltf")]
    errors = {Path(f["asset"]).name: f["error"] for f in report["failed"]}
    assert set(errors) == set(expected) | {"missing.glb"}
    for name, words in expected.items():
        assert words in errors[name] and name in errors[name]
        assert name in printed
    assert not (out / "truncated").exists()  # nothing half-written stays behind


@needs_samples
def test_triangle_limit_and_still_asset(tmp_path):
    report = run_render_job([GLTF_DIR / "RiggedFigure.gltf"], tmp_path / "a",
                            RenderSettings(frames=6, size=32, samples=0, max_triangles=10), progress=False)
    (path, error), = report.failed
    assert "RiggedFigure.gltf" in error and "10" in error
    # No animation selected → rendered, flagged, and dropped by curation as too still.
    still = run_render_job([GLTF_DIR / "RiggedFigure.gltf"], tmp_path / "b",
                           RenderSettings(frames=8, size=32, samples=0, animation=None), progress=False)
    assert still.done
    meta = json.loads((tmp_path / "b" / "RiggedFigure" / "metadata.json").read_text())
    assert meta["has_animation"] is False
    (row,) = curate(tmp_path / "b", progress=False)
    assert not row["kept"] and row["reason"].startswith("too_still") and row["m"] == 0.0


def test_kill_9_then_rerun_finishes_without_redoing(tmp_path, procedural_assets):
    out = tmp_path / "orbits"
    cmd = [sys.executable, "-m", "diffusion4d", "-q", "render", str(procedural_assets[0].parent), "--out", str(out),
           "--frames", "24", "--size", "96", "--workers", "1"]
    with popen_group(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        # Wait for the event (one asset finished), not for a time; the limit only catches a hung or dead render.
        deadline = time.monotonic() + HANG_TIMEOUT_S
        first_meta = None
        while first_meta is None and proc.poll() is None and time.monotonic() < deadline:
            done = list(out.glob("*/metadata.json"))
            first_meta = done[0] if done else None
            time.sleep(0.01)
        kill_group(proc.pid)  # kill -9 of the whole render, mid-way through the next asset
    assert first_meta is not None, f"no asset finished (render exit code {proc.returncode})"
    stamp = first_meta.stat().st_mtime_ns
    finished_before = {p.parent.name for p in out.glob("*/metadata.json")}
    result = run_group(cmd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert first_meta.stat().st_mtime_ns == stamp  # finished work was not redone
    assert f"{len(finished_before)} already done" in result.stdout
    for asset in procedural_assets:
        folder = out / asset.stem
        assert (folder / "metadata.json").exists()
        assert layout.count_views(folder) == 24 and layout.count_views(folder, layout.STATIC) == 24
        assert not list(folder.glob(".*.tmp"))


def test_limits_stop_a_hanging_and_an_exploding_asset_and_the_job_goes_on(tmp_path, procedural_assets):
    hanging, exploding = write_hanging_asset(tmp_path), write_exploding_asset(tmp_path)
    out = tmp_path / "orbits"
    # Generous limits for the real asset (it takes well under a second): only the hazards may hit them.
    limits = AssetLimits(seconds=5, memory_mb=1024)
    report = run_render_job([hanging, procedural_assets[0], exploding], out, SMALL, progress=False, limits=limits)
    assert report.done == [str(procedural_assets[0])]
    errors = dict(report.failed)
    assert errors[str(hanging)] == f"{hanging}: stopped: exceeded the per-asset time limit of 5 s"
    assert errors[str(exploding)] == f"{exploding}: stopped: exceeded the per-asset memory limit of 1024 MB"
    assert not list(out.glob("hangs*")) and not list(out.glob("explodes*"))  # nothing of theirs left behind


def test_a_render_worker_never_imports_torch(tmp_path, procedural_assets):
    # Every worker process (pool or Ray) imports the job's modules; torch would add over a second to each of them.
    script = (
        "import sys\n"
        "from diffusion4d.data.render_job import RenderSettings, run_render_job\n"
        "import diffusion4d.data.render_ray, diffusion4d.data.objaverse\n"
        f"report = run_render_job([{str(procedural_assets[0])!r}], {str(tmp_path / 'orbits')!r},\n"
        "                         RenderSettings(frames=4, size=32, samples=0), progress=False)\n"
        "assert report.done, report.summary()\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    result = run_group([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert layout.count_views(tmp_path / "orbits" / procedural_assets[0].stem) == 4
