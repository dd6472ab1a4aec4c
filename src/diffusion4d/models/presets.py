"""Size presets of the 4D-aware UNets, all in one dict, and ``build_unet``.

    preset  text / image params   use
    tiny    ~1.3 M / ~1.3 M       CPU tests: 4-channel latents, h = w = 8, T = 4–8
    small   ~3.19 M / ~3.45 M     our embedded default: 128² images → 4×16×16 latents, T = 24; five of them (text
                                  3D + 4D, image 3D + 4D, static 4D) + the VAE fit 40 MB in fp16; trains on one
                                  GPU in minutes, samples on a 2-core CPU
    full    1.413 B / 1.422 B     diffusers' defaults = the paper's base models (ModelScope-T2V 1.41 B,
                                  I2VGen-XL 1.42 B) + the motion embedding (~2 M)

Counts include the motion embedding (on by default). Widths: the cross-attention width is 32 (tiny); 384 for the
small text model (all-MiniLM-L6-v2's width) and 256 for the small image model (the output of our learned image
encoder, ``image_tokens.py``); 1024 (full: OpenCLIP ViT-H's text width and image projection).

The small models have three levels (16² → 8² → 4²), one resnet per level and narrow widths: at T = 24 and 16²
latents most parameters sit in the resnets and the temporal convolutions of the two lower levels, and the
ModelScope-style four levels (down to 2²) would spend a quarter of the budget on a 2×2 grid.
"""

from __future__ import annotations

from typing import Any

from .unets import Diffusion4DImageUNet, Diffusion4DTextUNet

MODEL_CLASSES = {"text": Diffusion4DTextUNet, "image": Diffusion4DImageUNet}

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
_SMALL_TEXT = dict(
    sample_size=16,
    block_out_channels=(32, 64, 80),
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    layers_per_block=1,
    norm_num_groups=16,
    cross_attention_dim=384,
    attention_head_dim=4,
)
_SMALL_IMAGE = dict(_SMALL_TEXT, cross_attention_dim=256)
# diffusers' defaults are the base models' configs; sample_size as in their released unet/config.json.
_FULL = dict(sample_size=32)

#: PRESETS[kind][preset] → constructor arguments of MODEL_CLASSES[kind]
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "text": {"tiny": _TINY, "small": _SMALL_TEXT, "full": _FULL},
    "image": {"tiny": _TINY, "small": _SMALL_IMAGE, "full": _FULL},
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
