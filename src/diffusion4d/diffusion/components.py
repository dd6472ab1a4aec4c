"""Loading the pieces a run needs — UNet, VAE, encoders — from our runs, diffusers folders or presets."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch


def is_run(path: str | Path) -> bool:
    """One of our training runs (it has train_config.json and unet/)."""
    return (Path(path) / "train_config.json").exists() and (Path(path) / "unet").is_dir()


def run_condition(run: str | Path) -> str:
    return json.loads((Path(run) / "train_config.json").read_text())["condition"]


def unet_class(kind: str):
    from diffusion4d.models.unets import Diffusion4DImageUNet, Diffusion4DTextUNet

    return Diffusion4DTextUNet if kind == "text" else Diffusion4DImageUNet


def load_or_build_unet(kind: str, preset: str, init: str | None):
    """A fresh preset model, our run's model (its EMA weights), or one initialised from a base model: a diffusers
    folder or a VideoMV checkpoint file (models/videomv.py)."""
    from diffusion4d.models.loading import unet_from_base
    from diffusion4d.models.presets import build_unet

    if init is None:
        return build_unet(kind, preset)
    init = Path(init)
    if not init.exists():
        raise FileNotFoundError(f"{init}: --init not found")
    if is_run(init):
        run_kind = "text" if run_condition(init) == "text" else "image"
        if run_kind != kind:
            raise ValueError(f"{init}: a {run_kind} model cannot initialise a {kind} model")
        return unet_class(kind).from_pretrained(init / "unet")
    model, _report = unet_from_base(kind, init)
    return model


def load_base_unet(kind: str, base: str | Path):
    """The frozen 3D-aware model ε̄ of Eq. 3: one of our runs (its ``unet/``), or a VideoMV checkpoint file, loaded
    with its camera embedding and without our motion embedding (ε̄ never sees m), so every parameter is VideoMV's."""
    base = Path(base)
    if base.is_file():
        from diffusion4d.models.videomv import unet_from_videomv

        model, _report = unet_from_videomv(kind, base, motion_embedding=False)
        return model
    return unet_class(kind).from_pretrained(base / "unet")


def tiny_vae():
    """A randomly initialised small AutoencoderKL — for tests and smoke runs only.

    It downsamples ×8 like the real VAEs (4 levels), so 64² images give the 8×8 latents of the tiny UNet preset.
    Unlike the tiny encoders (tests/tiny_models.py) it is package code: `train` and `encode` fall back to it when no
    VAE is given (`load_or_build_vae`).
    """
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                             up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 32, 32),
                             latent_channels=4, layers_per_block=1, norm_num_groups=8)


def load_or_build_vae(path: str | None, init: str | None):
    from diffusers import AutoencoderKL

    for candidate in (path, init and Path(init) / "vae"):
        if candidate and (Path(candidate) / "config.json").exists():
            return AutoencoderKL.from_pretrained(candidate)
    if path:
        raise FileNotFoundError(f"{path}: not a diffusers AutoencoderKL folder (config.json missing)")
    warnings.warn("no VAE given (--vae): using a randomly initialised tiny VAE — fine for tests, useless for "
                  "real training", stacklevel=2)
    return tiny_vae()


def load_encoders(text_encoder: str | None, image_encoder: str | None, device="cpu") -> dict:
    """The frozen condition encoders that are named, on ``device``: {"text": TextEncoder, "image": ImageEncoder}."""
    from diffusion4d.models.encoders import load_image_encoder, load_text_encoder

    encoders = {}
    if text_encoder:
        encoders["text"] = load_text_encoder(text_encoder).to(device)
    if image_encoder:
        encoders["image"] = load_image_encoder(image_encoder).to(device)
    return encoders


def load_run_encoders(run: str | Path, info: dict, device="cpu", dtype=torch.float32) -> dict:
    """The encoders a trained run (or bundle) names in its run.json ``info``; ``image_encoder: "learned"`` is the
    run's own ``image_encoder/`` folder (models/image_tokens.py)."""
    from diffusion4d.models.image_tokens import LEARNED, LearnedImageEncoder

    image_encoder = info.get("image_encoder")
    encoders = load_encoders(info.get("text_encoder"), None if image_encoder == LEARNED else image_encoder, device)
    if image_encoder == LEARNED:
        encoder = LearnedImageEncoder.from_pretrained(Path(run) / "image_encoder")
        encoders["image"] = encoder.requires_grad_(False).eval().to(device, dtype)
    return encoders
