"""Initialise a 4D-aware UNet from a pretrained base UNet saved in the diffusers format.

The base is a UNet folder (config.json + diffusion_pytorch_model[.fp16].safetensors, possibly sharded; .bin read
with ``weights_only=True``) or a pipeline folder with such a folder in ``unet/`` (the layout of ali-vilab's
text-to-video-ms-1.7b and i2vgen-xl). Loading is strict: the only parameters allowed to be absent from the base are
the layers Diffusion4D adds; anything else absent, any key the model does not have and any shape mismatch is an
error listing them. Our own saved models load with ``Diffusion4DTextUNet.from_pretrained`` instead. A single
checkpoint *file* is read as one of VideoMV's releases (``videomv.py``), with the same strictness.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .presets import MODEL_CLASSES
from .unets import NEW_LAYER_PREFIXES

logger = logging.getLogger(__name__)

#: class names a base config of each kind may carry (the diffusers parent, or ours when re-initialising from one)
BASE_CLASS_NAMES = {
    "text": {"UNet3DConditionModel", "Diffusion4DTextUNet"},
    "image": {"I2VGenXLUNet", "Diffusion4DImageUNet"},
}
WEIGHTS_NAME = "diffusion_pytorch_model"
# Preference order: full precision before the fp16 variant, safetensors before .bin.
_WEIGHT_CANDIDATES = [
    f"{WEIGHTS_NAME}.safetensors",
    f"{WEIGHTS_NAME}.fp16.safetensors",
    f"{WEIGHTS_NAME}.bin",
    f"{WEIGHTS_NAME}.fp16.bin",
]
_MAX_LISTED = 30


@dataclass
class LoadReport:
    """What ``unet_from_base`` did."""

    kind: str
    unet_dir: Path  # the UNet folder, or the checkpoint file (VideoMV)
    weight_files: list[Path]
    #: state-dict keys not in the base, initialised fresh (our added layers; zero output at start)
    new_layers: list[str] = field(default_factory=list)
    #: config keys of the base that the model does not take (ignored)
    ignored_config_keys: list[str] = field(default_factory=list)
    #: parts of the checkpoint deliberately not loaded, and why (e.g. VideoMV's LGM reconstructor)
    skipped: list[str] = field(default_factory=list)
    #: conversions applied and facts read on the way (e.g. VideoMV's camera axes folded into the weights)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        files = ", ".join(p.name for p in self.weight_files)
        lines = [f"loaded {self.kind} UNet from {self.unet_dir} ({files})"]
        if self.new_layers:
            lines.append(f"new layers ({len(self.new_layers)} tensors, not in the base): " + ", ".join(self.new_layers))
        else:
            lines.append("no new layers: every parameter came from the base")
        if self.ignored_config_keys:
            lines.append("ignored base config keys: " + ", ".join(self.ignored_config_keys))
        if self.skipped:
            lines.append("not loaded: " + "; ".join(self.skipped))
        lines += self.notes
        return "\n".join(lines)


def find_unet_dir(base_dir: str | Path) -> Path:
    """``base_dir/unet`` in a pipeline folder, else ``base_dir`` itself; must contain config.json."""
    base_dir = Path(base_dir)
    for candidate in (base_dir / "unet", base_dir):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no UNet in {base_dir}: expected config.json + {WEIGHTS_NAME}.safetensors there or in its unet/ subfolder"
    )


def find_weight_files(unet_dir: Path) -> list[Path]:
    """The weight file(s) of a diffusers model folder: a single file or the shards named by its index."""
    for name in _WEIGHT_CANDIDATES:
        index = unet_dir / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [unet_dir / s for s in shards]
        if (unet_dir / name).is_file():
            return [unet_dir / name]
    raise FileNotFoundError(f"no weights in {unet_dir}: looked for {', '.join(_WEIGHT_CANDIDATES)} (and .index.json)")


def load_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Tensors from safetensors files, or .bin files read with ``weights_only=True`` (never unpickling objects)."""
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            state.update(load_file(f, device="cpu"))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def _model_kwargs(cls: type, config: dict[str, Any], extras: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    bad = sorted(set(extras) - params)
    if bad:
        raise TypeError(f"{cls.__name__} has no config argument(s) {bad}")
    kwargs = {k: v for k, v in config.items() if k in params}
    ignored = sorted(k for k in config if k not in params and not k.startswith("_"))
    return {**kwargs, **extras}, ignored


def format_problems(kinds: tuple[tuple[str, list[str]], ...]) -> list[str]:
    """One line per non-empty (what, keys): the count and the first keys."""
    problems = []
    for what, keys in kinds:
        if keys:
            more = f" … and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
            problems.append(f"{len(keys)} {what}: " + ", ".join(keys[:_MAX_LISTED]) + more)
    return problems


def split_absent(model_keys, base_keys) -> tuple[list[str], list[str]]:
    """The model's keys the base lacks → (new: our added layers, wholly absent from the base; missing: the rest).
    A layer of ours that the base holds in part is missing, not new: that would be a partial load."""
    base_keys = set(base_keys)
    held = tuple(p for p in NEW_LAYER_PREFIXES if any(k.startswith(p) for k in base_keys))
    absent = [k for k in model_keys if k not in base_keys]
    new = [k for k in absent if k.startswith(NEW_LAYER_PREFIXES) and not k.startswith(held)]
    return new, [k for k in absent if k not in new]


def _check_keys(model_state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> list[str]:
    """Raise ValueError on any mismatch but our new layers missing from the base; return those new-layer keys."""
    new, missing = split_absent(model_state, base)
    unexpected = [k for k in base if k not in model_state]
    shapes = [
        f"{k}: base {list(base[k].shape)} vs model {list(v.shape)}"
        for k, v in model_state.items()
        if k in base and base[k].shape != v.shape
    ]
    problems = format_problems(
        (("missing from the base", missing), ("unexpected in the base", unexpected), ("shape mismatch", shapes))
    )
    if problems:
        raise ValueError("base weights do not match the model:\n  " + "\n  ".join(problems))
    return new


def _all_state_in_state_dict(model: torch.nn.Module) -> bool:
    saved = set(model.state_dict())
    return all(name in saved for name, _ in model.named_buffers())


def build_with_weights(cls: type, kwargs: dict[str, Any], weights: dict[str, torch.Tensor], new: list[str]):
    """``cls(**kwargs)`` holding ``weights`` (every key but the ``new`` ones, checked beforehand), in eval mode;
    built on the meta device and materialised once, so a 1.4 B base is not randomly initialised first. The new
    layers get their normal (zero-output) initialisation."""
    with torch.device("meta"):
        model = cls(**kwargs)
    if _all_state_in_state_dict(model):
        model.to_empty(device="cpu")
        # Re-create the new layers on the CPU with their real initialisation (to_empty left them uninitialised).
        model._init_extra_embeddings(
            model.config.motion_embedding, model.config.camera_embedding, model.config.motion_scale
        )
    else:  # a non-persistent buffer would stay uninitialised after to_empty: build normally instead
        model = cls(**kwargs)
    fresh = {k: v for k, v in model.state_dict().items() if k in new}
    # Every key is now accounted for, so strict loading is a real check, not a formality.
    model.load_state_dict({**weights, **fresh}, strict=True)
    return model.eval()  # as diffusers' from_pretrained leaves it


def unet_from_base(kind: str, base_dir: str | Path, **extras: Any):
    """A Diffusion4D UNet of ``kind`` ("text" | "image") with the base UNet's config and weights, plus ``extras``
    (our config arguments: ``motion_embedding``, ``camera_embedding``, ``motion_scale``, ``fps`` (image)) →
    ``(model, LoadReport)``. The report (also printed) lists the layers the base lacked: exactly our new ones.
    ``base_dir`` may also be a VideoMV checkpoint file (``videomv.unet_from_videomv``).

    The model is built on the meta device and materialised once, so a 1.4 B base is not randomly initialised
    first; the new layers get their normal (zero-output) initialisation.
    """
    if Path(base_dir).is_file():
        # A single checkpoint file: VideoMV's release format (diffusers bases are folders with config.json).
        from .videomv import unet_from_videomv

        return unet_from_videomv(kind, base_dir, **extras)
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[kind]
    unet_dir = find_unet_dir(base_dir)
    config = json.loads((unet_dir / "config.json").read_text())
    class_name = config.get("_class_name")
    if class_name is not None and class_name not in BASE_CLASS_NAMES[kind]:
        raise ValueError(
            f"{unet_dir} holds a {class_name}, not a {kind} base (expected one of {sorted(BASE_CLASS_NAMES[kind])})"
        )
    kwargs, ignored = _model_kwargs(cls, config, extras)
    files = find_weight_files(unet_dir)
    base = load_weights(files)

    with torch.device("meta"):
        model = cls(**kwargs)
    new = _check_keys(model.state_dict(), base)
    model = build_with_weights(cls, kwargs, base, new)

    report = LoadReport(kind=kind, unet_dir=unet_dir, weight_files=files, new_layers=new, ignored_config_keys=ignored)
    if ignored:
        logger.warning("ignored base config keys: %s", ignored)
    print(report)
    return model, report
