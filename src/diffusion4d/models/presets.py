"""Size presets of the 4D-aware UNets, all in one dict, and ``build_unet``.

    preset  text / image params   use
    tiny    ~1.3 M / ~1.3 M       CPU tests: 4-channel latents, h = w = 8, T = 4–8
    small   ~38.4 M / ~39.2 M     our embedded default: 256² images → 4×32×32 latents, T = 24; trains on one GPU,
                                  samples on a CPU
    full    1.413 B / 1.422 B     diffusers' defaults = the paper's base models (ModelScope-T2V 1.41 B,
                                  I2VGen-XL 1.42 B) + the motion embedding (~2 M)

Counts include the motion embedding (on by default). Widths: text/image cross-attention width is 32 (tiny),
384 (small: all-MiniLM-L6-v2's width) and 1024 (full: OpenCLIP ViT-H's text width and image projection).
"""

from __future__ import annotations

from typing import Any

from .unets import Diffusion4DImageUNet, Diffusion4DTextUNet

MODEL_CLASSES = {"text": Diffusion4DTextUNet, "image": Diffusion4DImageUNet}

# Four levels, cross-attention everywhere but the lowest — ModelScope-T2V's and I2VGen-XL's shape.
_DOWN4 = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
_UP4 = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")

_TINY = dict(
    sample_size=8,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    # diffusers' UNet3D/I2VGen-XL read attention_head_dim as the number of heads (a legacy naming, diffusers #2011)
    attention_head_dim=4,
)
_SMALL = dict(
    sample_size=32,
    block_out_channels=(64, 128, 256, 256),
    down_block_types=_DOWN4,
    up_block_types=_UP4,
    layers_per_block=1,
    norm_num_groups=32,
    cross_attention_dim=384,
    attention_head_dim=8,
)
# diffusers' defaults are the base models' configs; sample_size as in their released unet/config.json.
_FULL = dict(sample_size=32)

#: PRESETS[kind][preset] → constructor arguments of MODEL_CLASSES[kind]
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "text": {"tiny": _TINY, "small": _SMALL, "full": _FULL},
    "image": {"tiny": _TINY, "small": _SMALL, "full": _FULL},
}


def build_unet(kind: str, preset: str, **overrides: Any) -> Diffusion4DTextUNet | Diffusion4DImageUNet:
    """A freshly initialised UNet of ``kind`` ("text" | "image") and size ``preset`` ("tiny" | "small" | "full");
    ``overrides`` replace preset entries (e.g. ``camera_embedding=True``, ``cross_attention_dim=512``).

    Build a full model on the meta device (``with torch.device("meta"): ...``) to inspect it without allocating.
    """
    if kind not in PRESETS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(PRESETS)}")
    if preset not in PRESETS[kind]:
        raise ValueError(f"unknown preset {preset!r} for {kind!r}; expected one of {sorted(PRESETS[kind])}")
    return MODEL_CLASSES[kind](**{**PRESETS[kind][preset], **overrides})
