"""Checkpoints of the 4D fit: one safetensors file (tensors + the JSON state in its metadata, so the pair is written
in one atomic rename) and a human-readable ``checkpoint.json`` copy of that state beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open

from diffusion4d.io import write_bytes_atomic, write_json_atomic
from diffusion4d.reconstruction.densify import GradientStats
from diffusion4d.reconstruction.gaussians import Gaussians

CHECKPOINT = "checkpoint.safetensors"
_MOMENTS = ("step", "exp_avg", "exp_avg_sq")


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, p in zip(names, params):
        for key, value in optimizer.state.get(p, {}).items():
            if key in _MOMENTS:
                out[f"{prefix}.{name}.{key}"] = torch.as_tensor(value)
    return out


def _restore_optimizer(prefix: str, optimizer: torch.optim.Optimizer, names: list[str], tensors: dict) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, p in zip(names, params):
        if f"{prefix}.{name}.step" in tensors:
            optimizer.state[p] = {key: tensors[f"{prefix}.{name}.{key}"].clone() for key in _MOMENTS}


def _field_names(field) -> list[str]:
    return [f"{i}" for i, _ in enumerate(field.parameters())]


@dataclass(frozen=True)
class Snapshot:
    """The fit state as a checkpoint holds it, copied on its device: tensors and the JSON state (iteration, …)."""

    tensors: dict[str, torch.Tensor]
    meta: dict

    @property
    def iteration(self) -> int:
        return self.meta["iteration"]


def snapshot(state, method: str, config) -> Snapshot:
    """Copy the fit state (see fit._State) without leaving the device: cheap enough to keep a rolling last-good
    state, written only if the fit diverges or a checkpoint is due."""
    gauss_names = [g["name"] for g in state.opt_gauss.param_groups]
    tensors = {f"gauss.{k}": v.detach() for k, v in state.params.items()}
    tensors |= {f"field.{k}": v.detach() for k, v in state.field.state_dict().items()}
    tensors |= _optimizer_tensors("opt_gauss", state.opt_gauss, gauss_names)
    tensors |= _optimizer_tensors("opt_field", state.opt_field, _field_names(state.field))
    tensors |= {f"stats.{k}": v for k, v in state.stats.state().items()}
    tensors["rng"] = state.generator.get_state()
    meta = {"iteration": state.iteration, "method": method, "config": config.to_json(),
            "field_config": state.field.config}
    return Snapshot({k: v.detach().clone() for k, v in tensors.items()}, meta)


def write_snapshot(folder: Path, snap: Snapshot) -> Path:
    """Write a snapshot to ``folder/checkpoint.safetensors`` atomically (and its JSON state beside it)."""
    folder = Path(folder)
    data = safetensors.torch.save({k: v.cpu().contiguous() for k, v in snap.tensors.items()},
                                  metadata={"state": json.dumps(snap.meta)})
    write_bytes_atomic(folder / CHECKPOINT, data)
    write_json_atomic(folder / "checkpoint.json", snap.meta)
    return folder / CHECKPOINT


def save_checkpoint(folder: Path, state, method: str, config) -> Path:
    """Write the fit state (see fit._State) to ``folder/checkpoint.safetensors`` atomically."""
    return write_snapshot(folder, snapshot(state, method, config))


def load_checkpoint(folder: Path, method: str, config, field, state_cls, device):
    """Rebuild the fit state from a checkpoint written by :func:`save_checkpoint` with the same method and config."""
    path = Path(folder) / CHECKPOINT
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
        tensors = safetensors.torch.load_file(path, device=str(device))
    except (OSError, KeyError, json.JSONDecodeError, safetensors.SafetensorError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from None
    try:  # through from_json, so that a config saved with a removed experiment's field (ignored) still matches
        saved = type(config).from_json(meta["config"]).to_json()
    except (KeyError, TypeError):  # not a config this version can build: certainly not the same settings
        saved = meta["config"]
    if meta["method"] != method or saved != config.to_json():
        raise ValueError(f"{path}: written by a fit with another method or settings ({meta['method']}); "
                         f"use the same --method/--preset, or drop --resume to start over")
    gaussians = Gaussians(**{k[len("gauss."):]: v for k, v in tensors.items() if k.startswith("gauss.")})
    field.load_state_dict({k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")})
    state = state_cls(gaussians, field, config)
    _restore_optimizer("opt_gauss", state.opt_gauss, [g["name"] for g in state.opt_gauss.param_groups], tensors)
    _restore_optimizer("opt_field", state.opt_field, _field_names(field), tensors)
    state.stats = GradientStats.from_state({"grad": tensors["stats.grad"], "count": tensors["stats.count"]})
    state.generator.set_state(tensors["rng"].cpu())
    state.iteration = int(meta["iteration"])
    return state
