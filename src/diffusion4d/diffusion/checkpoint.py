"""Training state on disk without pickle: weights, EMA, optimizer state and step as safetensors + JSON.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX/`` written under a temporary name and renamed when complete,
so a run killed while saving leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusion4d.io import write_json_atomic


class EMA:
    """Exponential moving average of a model's trainable parameters (the weights we ship and sample with).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as diffusers' EMAModel does): without it
    a short run's average keeps a visible share of the random initial weights (0.995^500 ≈ 8 % after 500 steps).
    The count n lives on the parameters' device, so an update never waits for the host (and a CUDA graph can replay
    it); a resumed run sets it from the checkpoint's step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.updates = torch.zeros(())  # n, as float32
        self._pairs = None  # (shadow tensors, the model's parameters), bound at the first update

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if self._pairs is None:  # once: the model has moved to its device (e.g. the GPU, by accelerate) by now
            params = dict(model.named_parameters())
            self.shadow = {n: s.to(params[n].device) for n, s in self.shadow.items()}
            self._pairs = ([self.shadow[n] for n in self.shadow], [params[n] for n in self.shadow])
            self.updates = self.updates.to(self._pairs[0][0].device)
        shadow, params = self._pairs
        decay = torch.clamp((1 + self.updates) / (10 + self.updates), max=self.decay)
        # one multi-tensor kernel instead of a Python loop of lerps (hundreds of launches per step); the parameters
        # are float32 masters under mixed precision as well
        torch._foreach_lerp_(shadow, [p.detach().float() for p in params], [1 - decay] * len(shadow))
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(p.device, p.dtype))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into flat tensors (for safetensors) and JSON-able metadata."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, step: int, model, ema: EMA, optimizer, trainer_state: dict) -> Path:
    """Write ``run_dir/checkpoints/step_<step>/`` atomically and point ``checkpoints/latest`` at it."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "unet")
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
    tensors, meta = optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json_atomic(root / "latest.json", {"step": step, "folder": final.name})
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    if not pointer.exists():
        return None
    folder = pointer.parent / json.loads(pointer.read_text())["folder"]
    return folder if folder.is_dir() else None


def load_checkpoint(folder: Path, model, ema: EMA, optimizer) -> dict:
    """Restore weights, EMA and optimizer in place (strictly: a missing or unexpected key is an error)."""
    folder = Path(folder)
    weights = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    shadow = load_file(str(folder / "ema.safetensors"))
    if set(shadow) != set(ema.shadow):
        raise ValueError(f"{folder}/ema.safetensors: EMA keys differ from the model's trainable parameters")
    ema.shadow = {k: v.float() for k, v in shadow.items()}
    ema._pairs = None  # rebind to the loaded tensors at the next update
    load_optimizer_tensors(optimizer, load_file(str(folder / "optimizer.safetensors")),
                           json.loads((folder / "optimizer.json").read_text()))
    state = json.loads((folder / "trainer_state.json").read_text())
    ema.updates = torch.tensor(float(state["step"]))  # one EMA update per optimizer step
    return state


def resumed_step(run_dir: Path, model, ema: EMA, optimizer, resume: bool, log=print) -> int | None:
    """With ``resume`` and a checkpoint in ``run_dir``: restore it (see `load_checkpoint`) and return its step.

    None means a fresh run (no ``resume``, or nothing saved yet): the caller writes its run files and starts at 0.
    """
    folder = latest_checkpoint(run_dir) if resume else None
    if folder is None:
        return None
    step = load_checkpoint(folder, model, ema, optimizer)["step"]
    log(f"resumed from {folder} at step {step}")
    return step
