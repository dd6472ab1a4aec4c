"""The latent cache of a training run: exact per-orbit values, reuse, invalidation, and a first step that matches
the uncached step (decode the PNGs, encode the batch) it replaces."""

import json
import warnings

import pytest
import torch
from PIL import Image

from diffusion4d.data.dataset import OrbitDataset, collate
from diffusion4d.diffusion.latent_cache import CACHE_NAME, encode_video, load_or_encode
from diffusion4d.diffusion.seeding import step_generator
from diffusion4d.diffusion.train import StepBatches, TrainConfig, train
from diffusion4d.diffusion.train_step import build_condition, prompt_states
from orbit_fixtures import rendered_orbits

T, S = 4, 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from diffusion4d.diffusion.train_vae import build_vae
    from tiny_models import make_tiny_text_encoder

    root = tmp_path_factory.mktemp("cache_world")
    rendered_orbits(root, count=2, seed=3, frames=T, size=S)
    torch.manual_seed(0)
    build_vae((8, 16, 16, 16)).save_pretrained(root / "vae")
    make_tiny_text_encoder(root / "text_encoder")
    return root


def _vae(world):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(world / "vae")


def test_cache_holds_each_orbit_exactly_and_is_reused(world, tmp_path):
    vae, dataset = _vae(world), OrbitDataset(world / "orbits")
    path = tmp_path / CACHE_NAME
    latents, reused = load_or_encode(path, vae, dataset, "cpu")
    assert not reused and path.is_file() and len(latents) == len(dataset) == 4  # 2 assets × (front + random start)
    assert latents.video.shape == (4, 4, T, S // 8, S // 8) and latents.front.shape == (4, 3, S, S)
    for i in range(len(dataset)):
        item = dataset[i]
        torch.testing.assert_close(latents.video[i], encode_video(vae, item["video"][None])[0], rtol=0, atol=0)
        torch.testing.assert_close(latents.static[i], encode_video(vae, item["static"][None])[0], rtol=0, atol=0)
        torch.testing.assert_close(latents.front[i], item["static"][0], rtol=0, atol=0)
        torch.testing.assert_close(latents.cameras[i], item["cameras"], rtol=0, atol=0)
        assert latents.m[i] == item["m"] and latents.captions[i] == item["caption"]
        assert latents.orbits[i] == item["orbit"]
    # the uncached loop encoded whole batches: the CPU's convolutions differ in the last bits across batch sizes
    picks = [3, 0, 3]
    batch = latents.batch(picks)
    together = encode_video(vae, collate([dataset[i] for i in picks])["static"])
    torch.testing.assert_close(batch["static"], together, rtol=0, atol=1e-5)
    assert batch["caption"] == [latents.captions[i] for i in picks] and batch["m"].shape == (3,)
    again, reused = load_or_encode(path, vae, dataset, "cpu")
    assert reused
    # a CPU process of a multi-process run names its device "cpu:0" (accelerate): the cache must still be read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_encode(path, vae, dataset, torch.device("cpu", 0))[1]
    for name in ("video", "static", "front", "cameras", "m"):
        torch.testing.assert_close(getattr(again, name), getattr(latents, name), rtol=0, atol=0)


def test_cache_is_encoded_again_when_the_vae_or_the_data_change(world, tmp_path):
    vae, dataset = _vae(world), OrbitDataset(world / "orbits")
    path = tmp_path / CACHE_NAME
    first, _ = load_or_encode(path, vae, dataset, "cpu")
    with torch.no_grad():
        vae.encoder.conv_in.bias.add_(0.5)
    other, reused = load_or_encode(path, vae, dataset, "cpu")
    assert not reused and (other.video - first.video).abs().max() > 0
    vae.register_to_config(scaling_factor=0.5)  # the scale lives in the config, not in the weights
    assert not load_or_encode(path, vae, dataset, "cpu")[1]
    assert load_or_encode(path, vae, dataset, "cpu")[1]
    data = tmp_path / "orbits"  # the same orbits, one m changed by a new curation
    data.mkdir()
    rows = [json.loads(line) for line in (world / "orbits" / "manifest.jsonl").read_text().splitlines()]
    rows[0]["orbits"][0]["m"] = 0.25
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for orbit in (o for row in rows for o in row["orbits"]):
        (data / orbit["folder"]).symlink_to(world / "orbits" / orbit["folder"])
    changed, reused = load_or_encode(path, vae, OrbitDataset(data), "cpu")
    assert not reused and changed.m[0] == 0.25
    assert not load_or_encode(path, vae, OrbitDataset(data, background=(0, 0, 0)), "cpu")[1]
    # one frame re-rendered under the same manifest: the key reads the files, so the orbit is encoded again
    frame = world / "orbits" / rows[0]["orbits"][0]["folder"] / "multi_frame1.png"
    original = frame.read_bytes()
    before, _ = load_or_encode(path, vae, dataset, "cpu")
    assert load_or_encode(path, vae, dataset, "cpu")[1]
    try:
        Image.open(frame).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(frame)
        redone, reused = load_or_encode(path, vae, dataset, "cpu")
        assert not reused and (redone.video[0] - before.video[0]).abs().max() > 0
    finally:
        frame.write_bytes(original)
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable latent cache"):
        assert not load_or_encode(path, vae, dataset, "cpu")[1]
    assert load_or_encode(path, vae, dataset, "cpu")[1]  # written again, whole


def _config(world, out, **kw) -> TrainConfig:
    base = dict(data=str(world / "orbits"), out=str(out), condition="text", stage="4d", preset="tiny",
                max_steps=1, batch_size=3, checkpoint_every=1000, log_every=1, vae=str(world / "vae"),
                text_encoder=str(world / "text_encoder"), data_workers=0, lr=1e-4)
    return TrainConfig(**{**base, **kw})


def test_first_step_loss_matches_the_uncached_step(world, tmp_path, capsys):
    """Step 1 of a cached run against the step it replaces, computed here from the decoded PNGs: the same samples,
    the same draws, the latents of the whole batch encoded at once."""
    from diffusers import DDIMScheduler

    from diffusion4d.diffusion.components import load_encoders, load_or_build_unet
    from diffusion4d.diffusion.losses import diffusion4d_loss, noised_latents

    config = _config(world, tmp_path / "run")
    run = train(config, progress=False)
    logged = json.loads((run / "loss.jsonl").read_text().splitlines()[0])
    assert "encoded into" in capsys.readouterr().out

    torch.manual_seed(config.seed)
    unet = load_or_build_unet("text", "tiny", None).train()
    vae, dataset = _vae(world), OrbitDataset(world / "orbits")
    encoders = load_encoders(config.text_encoder, None)
    alphas = DDIMScheduler.from_pretrained(run / "scheduler").alphas_cumprod
    picks = next(iter(StepBatches(len(dataset), config, 0, 0, 1)))
    batch = collate([dataset[i] for i in picks])
    batch["front"] = batch["static"][:, 0]
    z0_static, z0 = encode_video(vae, batch["static"]), encode_video(vae, batch["video"])
    g = step_generator(config.seed, 0, 0, 0)
    torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
    t = torch.randint(len(alphas), (3,), generator=g)  # the run's num_train_timesteps (its scheduler's)
    noise = torch.randn(z0.shape, generator=g)
    keep = (torch.rand(3, generator=g) >= config.cond_dropout).float()
    inputs = {"keep": keep, "motion_keep": keep,
              "text": prompt_states(encoders["text"], batch["caption"], keep)}
    cond = build_condition("text", "text", batch, z0_static, z0, inputs, encoders, bool(unet.config.camera_embedding))
    with torch.no_grad():
        expected = diffusion4d_loss(unet(noised_latents(z0, noise, t, alphas), t, cond).float(), z0, z0_static,
                                    noise, t, alphas, omega=config.omega)
    assert logged["loss"] == pytest.approx(expected.loss.item(), rel=1e-5)
    assert logged["l_ldm"] == pytest.approx(expected.ldm.item(), rel=1e-5)
    assert logged["l_mr"] == pytest.approx(expected.mr.item(), rel=1e-5) and logged["l_mr"] > 0

    config.max_steps = 2
    train(config, resume=True, progress=False)  # resumed: the cache is read, not encoded again
    assert "read from" in capsys.readouterr().out


def test_non_finite_loss_stops_before_the_next_checkpoint(world, tmp_path, monkeypatch):
    import diffusion4d.diffusion.train_step as train_step
    from diffusion4d.diffusion.checkpoint import latest_checkpoint

    real, calls = train_step.diffusion4d_loss, []

    def nan_at_step_2(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out if len(calls) < 2 else type(out)(*(v * float("nan") for v in out))

    monkeypatch.setattr(train_step, "diffusion4d_loss", nan_at_step_2)
    config = _config(world, tmp_path / "run", max_steps=3, checkpoint_every=1, log_every=2)
    with pytest.raises(FloatingPointError, match=r"steps 2\.\.2.*≤ step 1"):
        train(config, progress=False)
    assert latest_checkpoint(tmp_path / "run").name.endswith("1")
    assert json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"] == 1


@pytest.mark.gpu
def test_gpu_run_reads_the_cache_on_the_device(world, tmp_path):
    """On a GPU: the cache lives there, the loop's host tensors arrive pinned + non-blocking, the run finishes."""
    vae, dataset = _vae(world), OrbitDataset(world / "orbits")
    on_cpu, _ = load_or_encode(tmp_path / "cpu.safetensors", vae, dataset, "cpu")
    on_gpu, _ = load_or_encode(tmp_path / "gpu.safetensors", vae.to("cuda"), dataset, "cuda")
    assert on_gpu.video.is_cuda and on_gpu.batch([1, 0])["static"].is_cuda
    torch.testing.assert_close(on_gpu.video.cpu(), on_cpu.video, rtol=1e-3, atol=1e-3)  # TF32 / cuDNN kernels
    run = train(_config(world, tmp_path / "run", max_steps=3, mixed_precision="bf16"), progress=False)
    logged = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in logged)
