"""`generate`: every prompt kind end to end (toy untrained bundle, 4 views at 32², a tiny fit), resume after an
interruption (between stages and inside the fit), and the bad inputs of the CLI."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion4d.data import layout
from diffusion4d.pipelines import generate as gen
from diffusion4d.reconstruction.densify import DensifyConfig
from diffusion4d.reconstruction.fit import PRESETS, FitConfig

T, S = 4, 32
TINY = FitConfig(coarse_iters=4, fine_iters=3, size=32, backend="torch", num_points=64, checkpoint_every=2,
                 densify=DensifyConfig(start=2, stop=3, every=2, max_gaussians=128),
                 field={"resolution": 8, "time_resolution": 4, "width": 16})
TINY_FOR = {"4dgs": TINY, "scgs": dataclasses.replace(TINY, field={"num_points": 16, "width": 16})}  # by method


@pytest.fixture(scope="module", autouse=True)
def tiny_cpu_preset():
    """The cpu preset shrunk to a few fit iterations and a 4-view render turn (the flow is tested, not quality)."""
    with pytest.MonkeyPatch.context() as mp:
        for method, config in TINY_FOR.items():
            mp.setitem(PRESETS["cpu"], method, config)
        mp.setitem(gen.RENDERS, "cpu", ((0.5,), 4))
        yield


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Untrained tiny models in the bundle format: the samples are noise; the files and the flow are tested."""
    from diffusers import DDIMScheduler

    from diffusion4d.diffusion.train_vae import build_vae
    from diffusion4d.models.image_tokens import LearnedImageEncoder
    from diffusion4d.models.presets import build_unet
    from diffusion4d.pipelines.default import MODELS, write_bundle
    from tiny_models import make_tiny_bert_text_encoder

    root = tmp_path_factory.mktemp("bundle")
    bert = make_tiny_bert_text_encoder(root / "bert")
    torch.manual_seed(0)
    build_vae((8, 16, 16, 16)).save_pretrained(root / "vae")
    runs = {}
    for name in sorted({p for pair in MODELS.values() for p in pair}):
        condition, run = name.split("_")[0], root / "runs" / name
        build_unet("text" if condition == "text" else "image", "tiny").save_pretrained(run / "unet")
        DDIMScheduler().save_pretrained(run / "scheduler")
        LearnedImageEncoder(32).save_pretrained(run / "image_encoder")
        (run / "run.json").write_text(json.dumps({"condition": condition, "num_frames": T, "image_size": S,
                                                  "text_encoder": str(bert), "image_encoder": "learned"}))
        runs[name] = run
    return write_bundle(root / "default", runs, root / "vae", {"note": "untrained, for tests"})


@pytest.fixture(scope="module")
def image_png(tmp_path_factory) -> Path:
    rgba = np.zeros((48, 48, 4), np.uint8)
    yy, xx = np.mgrid[:48, :48]
    rgba[(yy - 24) ** 2 + (xx - 24) ** 2 < 200] = (220, 40, 30, 255)  # a red disc on transparency
    path = tmp_path_factory.mktemp("prompt") / "disc.png"
    Image.fromarray(rgba).save(path)
    return path


def _settings(bundle, **options):
    """The tests' settings: 2 DDIM steps of the cpu preset on the CPU, quiet."""
    return gen.GenerateSettings(**{"bundle": bundle, "steps": 2, "preset": "cpu", "device": "cpu",
                                   "progress": False, **options})


def _run(bundle, out, **prompt):
    return gen.generate(gen.Prompt.one_of(**prompt), out, _settings(bundle))


@pytest.fixture(scope="module")
def image_run(bundle, image_png, tmp_path_factory):
    return _run(bundle, tmp_path_factory.mktemp("gen") / "image", image=image_png)


def _assert_complete(result):
    orbit = layout.read_orbit(result.orbit, layout.DYNAMIC)
    static = layout.read_orbit(result.static, layout.STATIC)
    assert orbit.images.shape == (T, S, S, 4) and static.images.shape[:3] == (T, S, S)
    np.testing.assert_allclose(orbit.c2w, static.c2w)  # V and V̄ share their cameras (the coarse stage needs it)
    for name in ("orbit.mp4", "orbit.gif"):
        assert (result.orbit / name).stat().st_size > 0
    assert sorted(p.name for p in (result.asset / "ply").iterdir()) == [f"time_{i:02d}.ply" for i in range(T)]
    for name in ("asset.json", "canonical.safetensors", "deformation.safetensors", "renders/orbit_t0.50.mp4",
                 "renders/orbit_t0.50.gif"):
        assert (result.asset / name).stat().st_size > 0, name
    from diffusion4d.reconstruction.viewer import read_viewer

    frames, times, _ = read_viewer(result.viewer)
    assert len(frames) == T and times == pytest.approx([i / (T - 1) for i in range(T)])
    timing = json.loads(result.timing.read_text())
    assert set(timing["stages"]) == set(gen.STAGES)
    assert timing["seconds"] == pytest.approx(sum(timing["stages"].values()), abs=1e-2)
    record = json.loads((result.out / "stages.json").read_text())
    assert list(record["done"]) == list(gen.STAGE_ORDER.get(record["inputs"]["kind"], gen.STAGES))
    assert "4D asset written to" in result.summary() and str(result.viewer) in result.summary()


def test_image_prompt_writes_every_output(image_run, bundle):
    _assert_complete(image_run)
    record = json.loads((image_run.out / "stages.json").read_text())["inputs"]
    assert record["kind"] == "image" and len(record["sha256"]) == 64 and record["steps"] == 2
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()[:16]
    assert record["bundle"] == f"{bundle.resolve()} (manifest sha256 {digest})"  # the model, not only its path
    # V̄′ comes from the 3D-aware model, not from V: the two orbits differ
    v = layout.read_orbit(image_run.orbit, layout.DYNAMIC).images[..., :3].astype(float)
    v_bar = layout.read_orbit(image_run.static, layout.STATIC).images[..., :3].astype(float)
    assert np.abs(v - v_bar).mean() > 1


def test_guidance_reuse_reaches_both_samplings_and_is_a_recorded_input(bundle, image_png, tmp_path, monkeypatch):
    from diffusion4d.pipelines import orbit

    seen = []
    real = orbit.sample_latents
    def recording(*args, **kwargs):
        seen.append(kwargs["settings"].guidance_every)
        return real(*args, **kwargs)

    monkeypatch.setattr(orbit, "sample_latents", recording)
    result = gen.generate(gen.Prompt.one_of(image=image_png), tmp_path / "k3",
                          _settings(bundle, steps=3, guidance_every=3))
    _assert_complete(result)
    assert seen == [3, 3]  # V̄′ (plain CFG) and V (Eq. 3)
    assert json.loads((result.out / "stages.json").read_text())["inputs"]["guidance_every"] == 3
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="guidance_every"):
            gen.generate(gen.Prompt.one_of(image=image_png), tmp_path / "bad",
                         gen.GenerateSettings(bundle=bundle, device="cpu", guidance_every=bad))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        _cli("--image", image_png, "--out", tmp_path / "bad", "--bundle", bundle, "--guidance-every", "0")
    assert not (tmp_path / "bad").exists()


def test_lpips_files_reach_the_fit_and_are_a_recorded_input(bundle, image_png, image_run, tmp_path):
    """--lpips-weights/--lpips-backbone: the fit's image term is L1 + LPIPS (issue 22, item 5). Same prompt, seed
    and sampling as ``image_run``: the orbits agree, the fitted assets differ; bad files fail before anything."""
    from safetensors.torch import load_file

    from test_evaluation_networks import random_files

    lin, backbone = random_files(tmp_path, "alex", ".pth")
    result = gen.generate(gen.Prompt.one_of(image=image_png), tmp_path / "lpips",
                          _settings(bundle, lpips_weights=lin, lpips_backbone=backbone))
    _assert_complete(result)
    inputs = json.loads((result.out / "stages.json").read_text())["inputs"]
    assert inputs["lpips"] == {"weights": str(lin.resolve()), "backbone": str(backbone.resolve()), "net": "alex"}
    assert "lpips" not in json.loads((image_run.out / "stages.json").read_text())["inputs"]
    frame = layout.frame_path(result.orbit, layout.DYNAMIC, 0)
    assert frame.read_bytes() == layout.frame_path(image_run.orbit, layout.DYNAMIC, 0).read_bytes()
    ours, plain = (load_file(str(r.asset / "canonical.safetensors")) for r in (result, image_run))
    assert any(not torch.equal(ours[k], plain[k]) for k in plain)

    missing = tmp_path / "alexnet.pth"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file"):
        gen.generate(gen.Prompt.one_of(image=image_png), tmp_path / "bad",
                     gen.GenerateSettings(bundle=bundle, device="cpu", lpips_weights=lin, lpips_backbone=missing))
    assert _cli("--image", image_png, "--out", tmp_path / "bad", "--bundle", bundle, "--lpips-weights", lin) == 2
    assert not (tmp_path / "bad").exists()


def test_asset_then_its_static_orbit(bundle, tmp_path):
    from diffusion4d.assets.procedural import write_procedural_dataset

    glb = write_procedural_dataset(tmp_path / "assets", count=1, seed=0, progress=False)[0]
    from_asset = _run(bundle, tmp_path / "asset", asset=glb)
    _assert_complete(from_asset)
    rendered = layout.read_orbit(from_asset.static, layout.STATIC)
    alpha = rendered.images[..., 3]
    assert alpha.max() == 255 and alpha.min() == 0  # the asset rendered with the project's renderer (RGBA)

    from_static = _run(bundle, tmp_path / "static", static=from_asset.static)
    _assert_complete(from_static)
    copied = layout.read_orbit(from_static.static, layout.STATIC)
    np.testing.assert_array_equal(copied.images, rendered.images)
    np.testing.assert_allclose(layout.read_orbit(from_static.orbit).c2w, rendered.c2w)


def test_sample_base_uses_the_3d_aware_model_alone(bundle, image_png):
    from diffusion4d.pipelines.default import load_default
    from diffusion4d.pipelines.orbit import load_image_prompt

    pipe = load_default("image", bundle=bundle)
    image = load_image_prompt(image_png, S)
    first = pipe.sample_base(image=image, steps=2, seed=3, progress=False)
    pipe.unet = None  # the 4D-aware model is not called
    again = pipe.sample_base(image=image, steps=2, seed=3, progress=False)
    assert first.shape == (T, S, S, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="exactly one of prompt"):
        pipe.sample_base(prompt="a", image=image)
    pipe.base_unet = None
    with pytest.raises(ValueError, match="base model"):
        pipe.sample_base(image=image)


def _raises(exc):
    def stage(*args):
        raise exc

    return stage


def test_rerun_resumes_after_the_fit_and_inside_it(bundle, image_png, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    import diffusion4d.reconstruction.fit as fit_module

    real_fit = fit_module.fit
    seen = []

    def killed_fit(*args, **kwargs):  # a run killed in the fit after iteration 4 (its checkpoint is at 4)
        real_fit(*args, **{**kwargs, "stop_after": 4})
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", killed_fit)
    with pytest.raises(KeyboardInterrupt):
        _run(bundle, out, image=image_png)
    assert list(json.loads((out / "stages.json").read_text())["done"]) == ["static", "orbit"]
    assert (out / "asset4d" / "checkpoint").is_dir()
    orbit_mtime = (out / "orbit" / "multi_frame0.png").stat().st_mtime_ns

    def spied_fit(*args, **kwargs):
        seen.append(kwargs["resume"])
        return real_fit(*args, **{**kwargs, "log": seen.append})

    monkeypatch.setattr(fit_module, "fit", spied_fit)
    real_export = gen.stage_export
    for name in ("static", "orbit"):
        monkeypatch.setattr(gen, f"stage_{name}", _raises(AssertionError(f"the finished {name} stage ran again")))
    monkeypatch.setattr(gen, "stage_export", _raises(RuntimeError("export killed")))
    with pytest.raises(RuntimeError, match="export killed"):
        _run(bundle, out, image=image_png)
    assert seen[0] is True and any("resuming from iteration 4" in str(m) for m in seen)
    assert list(json.loads((out / "stages.json").read_text())["done"]) == ["static", "orbit", "fit"]

    monkeypatch.setattr(gen, "stage_export", real_export)
    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: pytest.fail("the finished fit ran again"))
    result = _run(bundle, out, image=image_png)
    assert result.resumed == ["static", "orbit", "fit"]
    assert (out / "orbit" / "multi_frame0.png").stat().st_mtime_ns == orbit_mtime
    _assert_complete(result)


# -- bad input, through the CLI ----------------------------------------------------------------------------------


def _cli(*argv):
    from diffusion4d.cli import main

    return main(["-q", "generate", *map(str, argv)])


def test_cli_needs_exactly_one_prompt(bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli("--out", tmp_path / "x", "--bundle", bundle)
    assert exc.value.code == 2 and "one of the arguments --prompt --image --asset --static is required" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _cli("--prompt", "a bird", "--image", "a.png", "--out", tmp_path / "x")
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="give exactly one prompt"):
        gen.Prompt.one_of(text="a", image="b.png")
    assert not (tmp_path / "x").exists()


def test_cli_bad_image_and_asset_write_nothing(bundle, tmp_path, capsys):
    not_image = tmp_path / "photo.png"
    not_image.write_bytes(b"this is not a PNG")
    assert _cli("--image", not_image, "--out", tmp_path / "a", "--bundle", bundle) == 2
    assert f"{not_image}: not a readable image" in capsys.readouterr().err
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    assert _cli("--asset", broken, "--out", tmp_path / "b", "--bundle", bundle) == 2
    assert str(broken) in capsys.readouterr().err
    assert _cli("--asset", tmp_path / "missing.glb", "--out", tmp_path / "c", "--bundle", bundle) == 2
    assert "missing.glb: no such file" in capsys.readouterr().err
    assert _cli("--prompt", "a bird", "--out", tmp_path / "d", "--bundle", tmp_path) == 2
    assert "train_default_model.py" in capsys.readouterr().err  # no bundle: how to make one
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_cli_existing_folder_refused_resumed_or_overwritten(bundle, image_run, image_png, tmp_path, capsys):
    args = ("--image", image_png, "--bundle", bundle, "--steps", 2, "--device", "cpu", "--preset", "cpu")
    before = (image_run.out / "stages.json").read_text()
    assert _cli(*args, "--out", image_run.out, "--seed", 1) == 2
    assert "holds a generate run of other inputs (differing: seed)" in capsys.readouterr().err
    assert (image_run.out / "stages.json").read_text() == before  # refused: nothing touched
    other = tmp_path / "occupied"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _cli(*args, "--out", other) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    # the same inputs: a finished run, nothing left to do
    assert _cli(*args, "--out", image_run.out) == 0
    assert "4D asset written to" in capsys.readouterr().out
    assert json.loads((image_run.out / "timing.json").read_text())["resumed"] == list(gen.STAGES)
    # --overwrite replaces only generate's own outputs; a text prompt this time
    text = ("--prompt", "a red bird flaps its wings", *args[2:])
    assert _cli(*text, "--out", image_run.out) == 2
    assert "differing: kind, path, sha256, text" in capsys.readouterr().err
    assert _cli(*text, "--out", other, "--overwrite") == 0
    assert (other / "notes.txt").read_text() == "mine"
    assert json.loads((other / "stages.json").read_text())["inputs"]["text"] == "a red bird flaps its wings"
    _assert_complete(gen.GenerateResult(other, other / "orbit", other / "static", other / "asset4d",
                                        other / "viewer.html", other / "timing.json", {}))



@pytest.mark.slow
def test_bench_full_size_construction_at_toy_size(tmp_path, monkeypatch):
    """benchmarks/bench_generate.py's --full-size path (a given pipeline, the gpu preset) built at toy size on a CPU."""
    import sys

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_generate

    for method, config in TINY_FOR.items():
        monkeypatch.setitem(PRESETS["fast"], method, config)
    monkeypatch.setitem(gen.RENDERS, "gpu", ((0.5,), 2))
    pipe = bench_generate.full_size_pipeline(torch.float32, frames=T, size=S, preset="tiny", device="cpu")
    image = gen.procedural_image_prompt(tmp_path, S, T)
    result = gen.generate(gen.Prompt.one_of(image=image), tmp_path / "out",
                          gen.GenerateSettings(preset="gpu", steps=2, device="cpu", progress=False), pipeline=pipe)
    assert json.loads(result.timing.read_text())["steps"] == 2 and "bench_generate" in sys.modules
    _assert_complete(result)


def test_demo_is_image_to_4d_when_a_default_model_is_shipped(bundle, tmp_path, monkeypatch, capsys):
    """`make demo`'s command: with a bundle in the package, a procedural front view → 4D asset; without, the data
    job (said so)."""
    from diffusion4d import cli
    from diffusion4d.pipelines import default

    shipped = tmp_path / "shipped"
    shutil.copytree(bundle, shipped)
    monkeypatch.setattr(default, "default_bundle_dir", lambda: shipped)
    assert cli.main(["-q", "demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "demo" / "image_to_4d"
    assert "image → 4D" in out and (run / "viewer.html").is_file()
    assert (tmp_path / "demo" / "prompt" / "prompt.png").is_file()
    # a package update ships a retrained bundle at the same path: its manifest differs, so the old run is other
    # inputs; generate refuses to resume it, and the demo replaces it instead of showing the old model's results
    manifest = json.loads((shipped / "manifest.json").read_text())
    (shipped / "manifest.json").write_text(json.dumps({**manifest, "training": {"steps_reached": {"image_4d": 9}}}))
    image = tmp_path / "demo" / "prompt" / "prompt.png"
    with pytest.raises(gen.OtherRunError, match="differing: bundle"):
        gen.generate(gen.Prompt.one_of(image=image), run, gen.GenerateSettings(progress=False))
    before = json.loads((run / "stages.json").read_text())["inputs"]["bundle"]
    assert cli.main(["-q", "demo", "--out", str(tmp_path / "demo")]) == 0
    assert "holds a demo run of other inputs (bundle): replacing it" in capsys.readouterr().out
    record = json.loads((run / "stages.json").read_text())
    assert record["inputs"]["bundle"] != before and json.loads((run / "timing.json").read_text())["resumed"] == []
    monkeypatch.setattr(default, "default_bundle_dir", lambda: tmp_path / "none")
    monkeypatch.setattr(cli, "_demo_data", lambda args: print("data job ran") or 0)
    assert cli.main(["-q", "demo", "--out", str(tmp_path / "data")]) == 0
    assert "no default model" in capsys.readouterr().out


def test_text_prompt_samples_v_bar_from_the_first_view_of_v(bundle, tmp_path, monkeypatch):
    """Paper Sec. 3.4: V̄′ is the 3D-aware model's orbit given V's first view, so a text prompt's V comes first and
    V̄′ comes from the image model's base, prompted by V's frame 0."""
    from diffusion4d.pipelines.orbit import OrbitPipeline, load_image_prompt

    seen = []
    real = OrbitPipeline.sample_base

    def spy(self, **kwargs):
        seen.append((self.condition, kwargs))
        return real(self, **kwargs)

    monkeypatch.setattr(OrbitPipeline, "sample_base", spy)
    result = _run(bundle, tmp_path / "text", text="a red bird flaps its wings")
    _assert_complete(result)
    assert list(json.loads((result.out / "stages.json").read_text())["done"]) == ["orbit", "static", "fit", "export"]
    (condition, kwargs), = seen
    first_view = load_image_prompt(layout.frame_path(result.orbit, layout.DYNAMIC, 0), S)
    assert condition == "image" and "prompt" not in kwargs
    torch.testing.assert_close(kwargs["image"], first_view)


def test_motion_outside_the_training_range_is_warned_before_anything_runs(bundle, tmp_path):
    import shutil
    import warnings

    recorded = tmp_path / "recorded"
    shutil.copytree(bundle, recorded)
    manifest = json.loads((recorded / "manifest.json").read_text())
    manifest["training"] = {"data": {"motion": {"min": 0.005, "median": 0.015, "max": 0.04}}}
    (recorded / "manifest.json").write_text(json.dumps(manifest))
    source = gen.ModelSource.find("image", recorded, None)
    for inside in (0.005, 0.02, 0.04):
        assert source.motion_warning(inside) is None
    for outside in (0.0, 0.08):
        assert "outside the m of every orbit the model trained on (0.0050–0.0400" in source.motion_warning(outside)
    assert gen.ModelSource.find("image", bundle, None).motion_warning(0.5) is None  # nothing recorded: no opinion
    # through generate: warned first, then the bad prompt is refused as before
    not_image = tmp_path / "photo.png"
    not_image.write_bytes(b"not a PNG")
    with pytest.warns(UserWarning, match="motion 0.08 lies outside"), pytest.raises(ValueError, match="photo.png"):
        gen.generate(gen.Prompt.one_of(image=not_image), tmp_path / "a", _settings(recorded, motion=0.08))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="photo.png"):
            gen.generate(gen.Prompt.one_of(image=not_image), tmp_path / "b", _settings(recorded, motion=0.02))


def test_the_shipped_bundle_records_its_training_motion_and_the_default_lies_inside():
    source = gen.ModelSource.find("image", None, None)
    assert 0 < source.trained_motion["min"] < source.trained_motion["median"] < source.trained_motion["max"]
    assert source.motion_warning(gen.GenerateSettings().motion) is None  # `make demo` is not warned
