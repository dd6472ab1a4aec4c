"""4D-aware video UNets (diffusers-based), their embeddings, condition encoders and size presets.

Names are imported lazily: ``from diffusion4d.models import Condition`` does not pay for importing diffusers and
transformers (several seconds); the first access to a model or encoder does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Condition": "conditions",
    "CameraEmbedding": "embeddings",
    "MotionEmbedding": "embeddings",
    "ImageEncoder": "encoders",
    "TextEncoder": "encoders",
    "load_image_encoder": "encoders",
    "load_text_encoder": "encoders",
    "LoadReport": "loading",
    "unet_from_base": "loading",
    "PRESETS": "presets",
    "build_unet": "presets",
    "Diffusion4DImageUNet": "unets",
    "Diffusion4DTextUNet": "unets",
    "first_view_image_latents": "unets",
    "unet_from_videomv": "videomv",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .conditions import Condition
    from .embeddings import CameraEmbedding, MotionEmbedding
    from .encoders import (
        ImageEncoder,
        TextEncoder,
        load_image_encoder,
        load_text_encoder,
    )
    from .loading import LoadReport, unet_from_base
    from .presets import PRESETS, build_unet
    from .unets import Diffusion4DImageUNet, Diffusion4DTextUNet, first_view_image_latents
    from .videomv import unet_from_videomv
