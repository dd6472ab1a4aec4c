"""Training and sampling end to end on tiny models (CPU): two stages, three conditions, resume, overfit, CLI."""

import itertools
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffusion4d.cli import main as cli_main
from diffusion4d.diffusion.train import TrainConfig, train
from diffusion4d.pipelines.orbit import OrbitPipeline, load_image_prompt, write_orbit
from orbit_fixtures import rendered_orbits
from process_group import run_group

T, S = 4, 64  # 64² images → 8×8 latents through the tiny VAE (×8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny rendered + curated procedural dataset and tiny CLIP encoders saved in their real formats."""
    from tiny_models import make_tiny_image_encoder, make_tiny_text_encoder

    root = tmp_path_factory.mktemp("world")
    rendered_orbits(root, count=3, seed=11, frames=T, size=S)
    make_tiny_text_encoder(root / "text_encoder")
    make_tiny_image_encoder(root / "image_encoder")
    return root


def _config(world, out, **kw) -> TrainConfig:
    base = dict(data=str(world / "orbits"), out=str(out), preset="tiny", max_steps=2, batch_size=2,
                checkpoint_every=1000, log_every=1, text_encoder=str(world / "text_encoder"),
                image_encoder=str(world / "image_encoder"), lr=1e-4)
    return TrainConfig(**{**base, **kw})


def test_two_stage_text_run_and_sampling_with_3d_aware_guidance(world, tmp_path):
    run3d = train(_config(world, tmp_path / "run3d", condition="text", stage="3d"), progress=False)
    run4d = train(_config(world, tmp_path / "run4d", condition="text", stage="4d", init=str(run3d)), progress=False)
    for run in (run3d, run4d):
        assert (run / "unet" / "config.json").exists()
        assert (run / "unet" / "diffusion_pytorch_model.safetensors").exists()
        assert (run / "vae" / "config.json").exists() and (run / "scheduler" / "scheduler_config.json").exists()
        logged = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
        assert [r["step"] for r in logged] == [1, 2] and all(np.isfinite(r["loss"]) for r in logged)
    assert json.loads((run3d / "loss.jsonl").read_text().splitlines()[0])["l_mr"] >= 0
    saved = json.loads((run4d / "train_config.json").read_text())
    assert saved["stage"] == "4d" and saved["init"] == str(run3d)
    pipe = OrbitPipeline.from_run(run4d, base=run3d)
    frames = pipe(prompt="a red bird flaps its wings", motion=0.02, steps=3, seed=1, progress=False)
    assert frames.shape == (T, S, S, 3) and frames.dtype == np.uint8
    again = pipe(prompt="a red bird flaps its wings", motion=0.02, steps=3, seed=1, progress=False)
    np.testing.assert_array_equal(frames, again)  # seeded
    out = write_orbit(frames, tmp_path / "sample")
    for name in ("multi_frame0.png", f"multi{T - 1}.json", "orbit.mp4", "orbit.gif"):
        assert (out / name).stat().st_size > 0
    with pytest.raises(ValueError, match="text prompt"):
        pipe(image=torch.zeros(3, S, S), steps=2, progress=False)
    with pytest.raises(ValueError, match="motion magnitude"):
        pipe(prompt="x", motion=float("nan"), steps=2, progress=False)


def test_changing_m_changes_the_sample(world, tmp_path):
    run = train(_config(world, tmp_path / "run", condition="text", max_steps=1), progress=False)
    pipe = OrbitPipeline.from_run(run)
    with torch.no_grad():  # stand in for a trained motion MLP: its last layer starts at zero by design
        for p in pipe.unet.motion_embedder.parameters():
            p.normal_(0, 0.5)
    a = pipe(prompt="a ball", motion=0.0, w1=1.0, w2=0.0, steps=3, seed=0, progress=False)
    b = pipe(prompt="a ball", motion=0.2, w1=1.0, w2=0.0, steps=3, seed=0, progress=False)
    assert np.abs(a.astype(int) - b).sum() > 0


@pytest.mark.parametrize("condition", ["image", "static"])
def test_image_and_static_conditions(world, tmp_path, condition):
    run = train(_config(world, tmp_path / condition, condition=condition), progress=False)
    pipe = OrbitPipeline.from_run(run)
    if condition == "image":
        rgba = np.zeros((40, 30, 4), np.uint8)  # any size, with alpha: composited and resized
        rgba[10:30, 5:25] = (200, 30, 30, 255)
        Image.fromarray(rgba).save(tmp_path / "prompt.png")
        frames = pipe(image=load_image_prompt(tmp_path / "prompt.png", S), steps=2, w2=0.0, progress=False)
    else:
        from diffusion4d.pipelines.orbit import load_static_prompt

        uid = json.loads((world / "orbits" / "manifest.jsonl").read_text().splitlines()[0])["uid"]
        static, _ = load_static_prompt(world / "orbits" / uid, S, T)
        frames = pipe(static=static, steps=2, w2=0.0, progress=False)
    assert frames.shape == (T, S, S, 3)


def test_resume_continues_exactly(world, tmp_path):
    straight = train(_config(world, tmp_path / "a", condition="text", max_steps=4, checkpoint_every=2), progress=False)
    half = _config(world, tmp_path / "b", condition="text", max_steps=2, checkpoint_every=2)
    train(half, progress=False)
    half.max_steps = 4
    resumed = train(half, resume=True, progress=False)
    a = load_file(str(straight / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert json.loads((tmp_path / "b" / "checkpoints" / "latest.json").read_text())["step"] == 4


def test_max_seconds_counts_the_set_up_and_stops_resumably(world, tmp_path, monkeypatch):
    """A budget already spent by the set-up stops the run at its first log step, checkpointed; a resume goes on.
    The clock jumps 100 s after train()'s first reading and then barely moves: only the set-up spends the budget."""
    from diffusion4d.diffusion import train as train_module

    readings = itertools.chain([0.0], itertools.count(100.0, 1e-3))
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    config = _config(world, tmp_path / "run", condition="text", max_steps=6, log_every=2, checkpoint_every=100,
                     max_seconds=50.0)
    run = train(config, progress=False)
    monkeypatch.undo()
    assert [r["step"] for r in map(json.loads, (run / "loss.jsonl").read_text().splitlines())] == [2]
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    train(replace(config, max_seconds=None), resume=True, progress=False)
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 6


def test_overfitting_one_sample_drops_the_loss_tenfold(world):
    """The training step's pieces (condition, L = L_ldm + ω·L_mr) on one sample at fixed (t, ε)."""
    from diffusion4d.data.dataset import OrbitDataset, collate
    from diffusion4d.diffusion.components import load_encoders, tiny_vae
    from diffusion4d.diffusion.latent_cache import encode_video
    from diffusion4d.diffusion.losses import diffusion4d_loss, noised_latents
    from diffusion4d.diffusion.train_step import build_condition, prompt_states
    from diffusion4d.models.presets import build_unet

    torch.manual_seed(0)
    batch = collate([OrbitDataset(world / "orbits")[0]] * 4)
    vae, encoders = tiny_vae(), load_encoders(str(world / "text_encoder"), None)
    z0, zs = encode_video(vae, batch["video"]), encode_video(vae, batch["static"])
    unet = build_unet("text", "tiny")
    alphas = torch.linspace(0.99, 0.05, 1000).cumprod(0).clamp(min=1e-4)
    t = torch.tensor([50, 200, 400, 700])
    noise = torch.randn(z0.shape)
    keep = torch.ones(4)
    inputs = {"keep": keep, "motion_keep": keep, "text": prompt_states(encoders["text"], batch["caption"], keep)}
    cond = build_condition("text", "text", batch, zs, z0, inputs, encoders, False)
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)

    def loss():
        return diffusion4d_loss(unet(noised_latents(z0, noise, t, alphas), t, cond), z0, zs, noise, t, alphas).loss

    with torch.no_grad():
        first = loss().item()
    for _ in range(150):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        last = loss().item()
    assert last < first / 10, (first, last)


def test_cli_train_config_file_flags_and_sample_usage(world, tmp_path, capsys):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"condition": "text", "preset": "tiny", "max_steps": 5,
                                  "text_encoder": str(world / "text_encoder"), "batch_size": 1}))
    run = tmp_path / "run"
    assert cli_main(["-q", "train", str(config), "--data", str(world / "orbits"), "--out", str(run),
                     "--max-steps", "1"]) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["max_steps"] == 1 and saved["batch_size"] == 1  # flags override the file
    assert cli_main(["-q", "sample", "--model", str(run), "--prompt", "a", "--image", "x.png", "--out",
                     str(tmp_path / "s")]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert cli_main(["-q", "sample", "--model", str(run), "--prompt", "a dog", "--steps", "2", "--w2", "0",
                     "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "orbit.gif").exists()
    timing = json.loads((tmp_path / "s" / "timing.json").read_text())  # read by `diffusion4d evaluate`
    assert timing["seconds"] > 0 and timing["device"] == "cpu"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 1}))
    assert cli_main(["-q", "train", str(bad), "--data", "x", "--out", "y"]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_out_of_memory_gets_a_usable_message(monkeypatch, capsys):
    import diffusion4d.cli as cli

    def boom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    monkeypatch.setattr(cli, "_train", boom)
    assert cli.main(["-q", "train", "--data", "x", "--out", "y"]) == 3
    err = capsys.readouterr().err
    assert "--batch-size" in err and "bf16" in err and "12.00 GiB" in err


def test_tensorboard_logs_are_written(world, tmp_path):
    run = train(_config(world, tmp_path / "run", condition="text", max_steps=1), progress=False)
    assert list((run / "logs").rglob("events.out.tfevents.*"))


def test_two_process_cpu_run_data_parallel(world, tmp_path):
    """The same training script data-parallel in two processes (torchrun + gloo on the CPU), as on several GPUs."""
    import os
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diffusion4d", "-q",
           "train", "--data", str(world / "orbits"), "--out", str(run), "--condition", "text", "--preset", "tiny",
           "--max-steps", "2", "--batch-size", "1", "--data-workers", "0",
           "--text-encoder", str(world / "text_encoder")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}  # accelerate's switch for multi-process CPU (gloo)
    # torchrun and its two workers in one process group, killed whole on failure or a hang (the default limit
    # is for hangs: three processes importing torch on a loaded 2-core machine can take many minutes)
    result = run_group(cmd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["num_processes"] == 2
    logged = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2]  # written once, by the main process
    assert (run / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_cuda_graph_option_is_refused_where_it_cannot_run(world, tmp_path):
    from diffusion4d.diffusion.train import TrainConfig, train

    base = dict(data=str(world / "orbits"), out=str(tmp_path / "run"), condition="text",
                text_encoder=str(world / "text_encoder"), cuda_graph=True)
    with pytest.raises(ValueError, match="--grad-accum 1"):
        TrainConfig(**base, grad_accum=2).validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="one process on a CUDA device"):
            train(TrainConfig(**base), progress=False)


def test_ema_decay_warms_up_and_resumes_its_count(tmp_path):
    from diffusion4d.diffusion.checkpoint import EMA, load_checkpoint, save_checkpoint
    from diffusion4d.models.presets import build_unet

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    expected = 0.0
    for n in range(3):  # decay_n = min(0.999, (1 + n) / (10 + n)): 0.1, 2/11, 0.25
        d = min(0.999, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * 1.0
        ema.update(model)
        assert ema.shadow["weight"].item() == pytest.approx(expected, rel=1e-6)
    # a checkpoint restores the count from its step, so the warm-up continues where it was
    unet = build_unet("text", "tiny")
    opt = torch.optim.AdamW(unet.parameters())
    ema = EMA(unet, 0.99)
    save_checkpoint(tmp_path, 7, unet, ema, opt, {})
    again = EMA(unet, 0.99)
    load_checkpoint(tmp_path / "checkpoints" / "step_00000007", unet, again, opt)
    assert again.updates.item() == 7.0




def test_one_process_trains_runs_of_different_precisions(world, tmp_path):
    """accelerate's process-wide state used to refuse the second run ("AcceleratorState has already been
    initialized"): the recipe and notebooks train several runs in one process."""
    for precision in ("bf16", "no"):
        run = train(_config(world, tmp_path / precision, condition="text", max_steps=1, mixed_precision=precision),
                    progress=False)
        losses = [json.loads(line)["loss"] for line in (run / "loss.jsonl").read_text().splitlines()]
        assert len(losses) == 1 and np.isfinite(losses[0])


def test_zero_terminal_snr_schedule_travels_with_the_run_and_starts_sampling_at_pure_noise(world, tmp_path):
    """The regression of issue 21: with Stable Diffusion's betas z_T keeps √ᾱ_T ≈ 0.07 of the data (the orbit's mean
    colour, which a small model learns to read and sampling cannot give), and "leading" spacing starts sampling at
    t = 900 of 1000. The recipe's schedule (zero terminal SNR, trailing) is saved in the run and read back."""
    from diffusion4d.diffusion.losses import noised_latents

    config = _config(world, tmp_path / "run", condition="static", prediction_type="v_prediction",
                     rescale_betas_zero_snr=True, timestep_spacing="trailing", max_steps=1)
    pipe = OrbitPipeline.from_run(train(config, progress=False))
    sched = pipe.scheduler
    assert sched.config.rescale_betas_zero_snr and sched.config.timestep_spacing == "trailing"
    z0, noise = torch.randn(2, 4, T, 8, 8), torch.randn(2, 4, T, 8, 8)
    last = torch.full((2,), sched.config.num_train_timesteps - 1)
    torch.testing.assert_close(noised_latents(z0, noise, last, sched.alphas_cumprod), noise, atol=1e-3, rtol=0)
    sched.set_timesteps(10)
    assert int(sched.timesteps[0]) == sched.config.num_train_timesteps - 1

    from diffusion4d.diffusion.train import noise_scheduler

    old = noise_scheduler(TrainConfig(prediction_type="v_prediction"))  # the schedule of the session-5 bundle
    assert float(old.alphas_cumprod[-1].sqrt()) > 0.05  # the leak the fix removes
    old.set_timesteps(10)
    assert int(old.timesteps[0]) == 900


def test_zero_snr_with_epsilon_prediction_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="needs --prediction-type v_prediction"):
        train(_config(world, tmp_path / "run", rescale_betas_zero_snr=True), progress=False)


def test_camera_embedding_is_added_to_an_init_without_it_and_sampling_passes_the_cameras(world, tmp_path):
    from diffusion4d import cameras

    run3d = train(_config(world, tmp_path / "run3d", condition="image", stage="3d", max_steps=1), progress=False)
    run4d = train(_config(world, tmp_path / "run4d", condition="image", init=str(run3d), camera_embedding=True,
                          max_steps=1), progress=False)
    pipe = OrbitPipeline.from_run(run4d, base=run3d)
    assert pipe.unet.config.camera_embedding and not pipe.base_unet.config.camera_embedding
    with torch.no_grad():  # stand in for a trained camera MLP: its last layer starts at zero by design
        for p in pipe.unet.camera_embedder.parameters():
            p.normal_(0, 0.5)
    image = torch.zeros(3, S, S)
    default = pipe(image=image, w1=1.0, steps=2, seed=0, progress=False)  # the official orbit's cameras
    official = pipe(image=image, w1=1.0, steps=2, seed=0, progress=False, c2w=cameras.orbit_camera_to_world(T))
    turned = pipe(image=image, w1=1.0, steps=2, seed=0, progress=False,
                  c2w=cameras.orbit_camera_to_world(T, start_deg=90.0))
    np.testing.assert_array_equal(default, official)
    assert np.abs(default.astype(int) - turned).sum() > 0
    with pytest.raises(ValueError, match=r"c2w must be \[4, 4, 4\]"):
        pipe(image=image, steps=2, progress=False, c2w=np.eye(4))
