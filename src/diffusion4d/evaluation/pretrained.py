"""Pretrained weights of the metric networks (LPIPS, I3D, CLIP), from paths the user gives and nothing else.

Without a path a metric is skipped with a `MissingWeights` message, never replaced by a made-up number; a file is
read without running pickle code (`load_state_dict_safely`) and must fit its network exactly (`load_strict`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

__all__ = ["MissingWeights", "load_state_dict_safely", "load_strict", "require_weights"]


class MissingWeights(Exception):
    """A metric that needs pretrained weights was not given them; the metric is skipped, not faked.

    ``str(exc)`` reads e.g. "LPIPS skipped: provide --lpips-weights PATH (no path given)".
    """

    def __init__(self, metric: str, flag: str, reason: str):
        self.metric, self.flag, self.reason = metric, flag, reason
        super().__init__(f"{metric} skipped: provide {flag} PATH ({reason})")


def require_weights(metric: str, flag: str, path: str | Path | None) -> Path:
    """The weights file for ``metric``, or MissingWeights naming the command-line ``flag`` that supplies it.

    Example: ``require_weights("LPIPS", "--lpips-weights", args.lpips_weights)``; callers catch
    MissingWeights, record ``str(exc)`` as the note for that metric and report the value as None.
    """
    if path is None:
        raise MissingWeights(metric, flag, "no path given")
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(metric, flag, f"{path} is not a file")
    return path


def load_state_dict_safely(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict without executing pickle code.

    ``.safetensors`` goes through `safetensors.torch.load_file`; ``.pt``/``.pth``/``.bin`` through
    ``torch.load(..., map_location="cpu", weights_only=True)``, whose unpickler admits only tensors and plain
    containers. Any other suffix, and any pickle that needs other objects, raises ValueError: downloaded
    checkpoints are untrusted and an arbitrary pickle can run code when loaded.
    Returns the loaded mapping (CPU tensors; a .pt may hold nested plain containers).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types; callers should see one kind
            raise ValueError(f"{path}: refused, not a readable safetensors file ({exc})") from exc
    if suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
            raise ValueError(f"{path}: refused, it is not loadable with weights_only=True ({exc})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: refused, it holds a {type(obj).__name__}, not a state dict")
        return obj
    raise ValueError(f"{path}: refused, unknown weights format {suffix!r} (use .safetensors, .pt, .pth or .bin)")


def load_strict(
    module: torch.nn.Module, state: dict, source: str | Path, what: str, optional: tuple[str, ...] = ()
) -> None:
    """``module.load_state_dict(state)``, but every problem becomes one ValueError naming ``source``.

    ``what`` names the expected file in the message ("an LPIPS-alex linear-layer"). Missing keys, unexpected keys
    and shape mismatches are all listed (the first few of each), so a wrong file (an AlexNet file given for VGG,
    a checkpoint of another layout) is recognisable from the message.
    Keys ending in one of ``optional`` (e.g. BatchNorm's ``num_batches_tracked``, absent from older files)
    may be missing; the module keeps its own value for them.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if keys:
            more = f" … ({len(keys)} in all)" if len(keys) > 5 else ""
            problems.append(f"{kind}: {', '.join(keys[:5])}{more}")
    if problems:
        raise ValueError(f"{source}: not {what} state dict; " + "; ".join(problems))
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
