"""A learned image encoder: the image embedding of the image / static-3D UNets when no CLIP vision model is at hand.

The I2VGen-XL-style UNet takes one image embedding [B, D] (CLIP's, in the paper's base model) and turns it into
``in_channels`` cross-attention tokens itself. No pretrained CLIP vision tower can be installed offline here, so the
embedded default model learns its own: a few strided convolutions over the condition image, global-average-pooled
and projected to D. It is trained jointly with the UNet in the 3D-aware stage and carried, frozen, into the 4D-aware
stages, so the frozen 3D-aware model ε̄ of Eq. 3 and the 4D-aware model see the same embedding at sampling time.

On disk: ``config.json`` ({"kind": "learned_image_encoder", "embed_dim", "widths"}) + ``model.safetensors``.
Selected explicitly with ``image_encoder: "learned"`` in the training config — never a silent fallback.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffusion4d.io import write_json_atomic

#: the value of TrainConfig.image_encoder (and run.json's "image_encoder") that selects this encoder
LEARNED = "learned"
CONFIG_KIND = "learned_image_encoder"
WEIGHTS = "model.safetensors"


class LearnedImageEncoder(nn.Module):
    """Images [B, 3, H, W] in [−1, 1] (any H, W ≥ 2^len(widths)) → embeddings [B, embed_dim].

    Each width is one stride-2 3×3 convolution + SiLU (×2 downsampling); the last feature map is averaged over
    space, so the embedding says *what* is in the image (colour, shape) while the UNet's own first-view latent
    tokens and channel concatenation say *where*. The projection starts at zero: a fresh encoder gives the
    unconditional (zero) embedding, so the UNet starts from its image-less behaviour and learns to use it.
    """

    def __init__(self, embed_dim: int, widths: tuple[int, ...] = (32, 64, 96, 128)):
        super().__init__()
        if embed_dim < 1 or not widths:
            raise ValueError(f"embed_dim must be ≥ 1 and widths non-empty; got {embed_dim}, {widths}")
        self.embed_dim, self.widths = int(embed_dim), tuple(int(w) for w in widths)
        layers, c_in = [], 3
        for w in self.widths:
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.SiLU()]
            c_in = w
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(c_in)
        self.proj = nn.Linear(c_in, self.embed_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W]; got {list(images.shape)}")
        dtype = self.proj.weight.dtype
        x = self.features(images.to(self.proj.weight.device, dtype)).mean(dim=(2, 3))  # [B, widths[-1]]
        return self.proj(self.norm(x))

    def config(self) -> dict:
        return {"kind": CONFIG_KIND, "embed_dim": self.embed_dim, "widths": list(self.widths)}

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))
        write_json_atomic(folder / "config.json", self.config())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LearnedImageEncoder:
        """Load strictly: a missing or unexpected key is an error naming the file."""
        folder = Path(folder)
        config_file, weights_file = folder / "config.json", folder / WEIGHTS
        for f in (config_file, weights_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing (a learned image encoder folder has config.json + {WEIGHTS})")
        config = json.loads(config_file.read_text())
        if config.get("kind") != CONFIG_KIND:
            raise ValueError(f"{config_file}: not a learned image encoder (kind {config.get('kind')!r})")
        model = cls(config["embed_dim"], tuple(config["widths"]))
        weights = load_file(str(weights_file))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights_file}: keys do not match: missing {missing}, unexpected {unexpected}")
        return model


class UNetWithImageEncoder(nn.Module):
    """The UNet and the learned image encoder trained as one module (one optimizer, one EMA, one checkpoint).

    ``save_pretrained`` writes both in one safetensors file with ``unet.`` / ``image_encoder.`` prefixes — the
    training checkpoint's format, loaded back with ``load_state_dict``; the run's final models are saved apart
    (``unet.save_pretrained``, ``image_encoder.save_pretrained``).
    """

    def __init__(self, unet: nn.Module, image_encoder: LearnedImageEncoder):
        super().__init__()
        self.unet, self.image_encoder = unet, image_encoder

    @property
    def config(self):
        return self.unet.config

    def forward(self, *args, **kwargs):
        return self.unet(*args, **kwargs)

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "diffusion_pytorch_model.safetensors"))
        return folder
