"""Our VAE training (diffusion4d train-vae): overfitting a few frames, save/load, exact resume, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from diffusion4d.cli import main as cli_main
from diffusion4d.diffusion.train_vae import (
    FrameDataset,
    VAEConfig,
    build_vae,
    read_losses,
    reconstruction_error,
    train_vae,
    vae_loss,
)
from orbit_fixtures import rendered_orbits

S, T = 32, 4
WIDTHS = (8, 16, 16, 16)


@pytest.fixture(scope="module")
def orbits(tmp_path_factory):
    return rendered_orbits(tmp_path_factory.mktemp("vae_world"), count=1, seed=3, frames=T, size=S)


def _config(orbits, out, **kw) -> VAEConfig:
    base = dict(data=str(orbits), out=str(out), size=S, max_steps=4, batch_size=4, lr=2e-3, widths=WIDTHS,
                checkpoint_every=1000, log_every=1, data_workers=0, ema_decay=0.9)
    return VAEConfig(**{**base, **kw})


def test_frames_are_every_view_of_every_kept_orbit_on_white(orbits):
    frames = FrameDataset(orbits, S)
    assert len(frames) == 2 * 2 * T  # 2 orbits (front + one random start) × (dynamic + static) × T views
    image = frames[0]["image"]
    assert image.shape == (3, S, S) and image.min() >= -1 and image.max() <= 1
    assert (image[:, 0, 0] == 1).all()  # a corner is background: white
    assert FrameDataset(orbits, 16)[0]["image"].shape == (3, 16, 16)  # resized to --size


def test_vae_loss_terms_by_hand():
    recon, target = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    mean, logvar = torch.ones(1, 4, 1, 1), torch.zeros(1, 4, 1, 1)
    config = VAEConfig(l1_weight=1.0, mse_weight=2.0, kl_weight=0.5)
    loss, terms = vae_loss(recon, target, mean, logvar, config)
    # l1 = 1, mse = 1, KL per element = ½(1 + 1 − 1 − 0) = ½
    assert terms["l1"] == pytest.approx(1.0) and terms["mse"] == pytest.approx(1.0)
    assert terms["kl"] == pytest.approx(0.5) and loss.item() == pytest.approx(1 + 2 + 0.25)


def test_overfitting_a_few_frames_lowers_the_reconstruction_error_a_lot(orbits, tmp_path):
    torch.manual_seed(0)
    fresh = tmp_path / "fresh"
    build_vae(WIDTHS).save_pretrained(fresh)
    before = reconstruction_error(fresh, orbits, S)
    out = train_vae(_config(orbits, tmp_path / "vae", max_steps=150, ema_decay=0.0), progress=False)
    after = reconstruction_error(out, orbits, S)
    assert after < 0.25 * before, (before, after)
    losses = read_losses(out)
    assert losses[-1]["loss"] < 0.2 * losses[0]["loss"]


def test_save_load_round_trip_and_latent_scale(orbits, tmp_path):
    from diffusers import AutoencoderKL

    out = train_vae(_config(orbits, tmp_path / "vae", max_steps=2), progress=False)
    vae = AutoencoderKL.from_pretrained(out)
    assert tuple(vae.config.block_out_channels) == WIDTHS and vae.config.latent_channels == 4
    weights = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    for name, value in vae.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)
    report = json.loads((out / "vae_report.json").read_text())
    assert vae.config.scaling_factor == pytest.approx(1 / report["latent_std"])
    images = torch.stack([FrameDataset(orbits, S)[i]["image"] for i in range(8)])
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    assert z.shape == (8, 4, S // 8, S // 8) and 0.3 < z.std().item() < 3  # about unit scale for diffusion


def test_resume_continues_exactly(orbits, tmp_path):
    straight = train_vae(_config(orbits, tmp_path / "a", max_steps=4, checkpoint_every=2), progress=False)
    train_vae(_config(orbits, tmp_path / "b", max_steps=2, checkpoint_every=2), progress=False)
    resumed = train_vae(_config(orbits, tmp_path / "b", max_steps=4, checkpoint_every=2), resume=True,
                        progress=False)
    a = load_file(str(straight / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert [r["step"] for r in read_losses(resumed)] == [1, 2, 3, 4]


def test_cli_and_bad_input(orbits, tmp_path, capsys):
    assert cli_main(["-q", "train-vae", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "v")]) == 2
    assert "manifest" in capsys.readouterr().err
    assert cli_main(["-q", "train-vae", "--data", str(orbits), "--out", str(tmp_path / "v"), "--size", "30"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="widths"):
        _config(orbits, tmp_path / "w", widths=(8, 16, 32)).validate()
