"""Input checks shared by the UNets: fail early, with the name of the offending input, instead of deep inside a conv."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def expect_shape(name: str, tensor: torch.Tensor, shape: tuple[int | None, ...], meaning: str) -> None:
    """Raise ValueError unless ``tensor`` has ``shape`` (None entries match any size); ``meaning`` names the axes."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {meaning}; got {type(tensor).__name__}")
    ok = tensor.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, tensor.shape))
    if not ok:
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape {meaning} = [{want}]; got {list(tensor.shape)}")


def check_sample(sample: torch.Tensor, in_channels: int) -> tuple[int, int]:
    """sample [B, C, T, h, w] → (B, T)."""
    expect_shape("sample", sample, (None, in_channels, None, None, None), "[B, C, T, h, w]")
    if not sample.is_floating_point():
        raise ValueError(f"sample must be a floating-point tensor; got {sample.dtype}")
    return sample.shape[0], sample.shape[2]


def check_timestep(timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
    """A scalar, a [1] or a [B] timestep → [B] on ``device`` (a scalar applies to the whole batch)."""
    t = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(timestep, device=device)
    if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):
        t = t.reshape(1).expand(batch)
    expect_shape("timestep", t, (batch,), "[B] (or a scalar)")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"timestep must be finite; got {t.tolist()}")
    return t.to(device)


def check_unit_flags(name: str, flags: torch.Tensor, batch: int) -> None:
    """keep-style flags [B] with values in [0, 1]."""
    expect_shape(name, flags, (batch,), "[B]")
    f = flags.float()
    if not (torch.isfinite(f).all() and (f >= 0).all() and (f <= 1).all()):
        raise ValueError(f"{name} must hold values in [0, 1] (1 keeps, 0 drops); got {flags.tolist()}")


def check_motion(motion: torch.Tensor, keep: torch.Tensor | None, batch: int) -> None:
    """m [B] must be finite and ≥ 0 wherever it is kept (keep ≠ 0); dropped entries are never read."""
    expect_shape("cond.motion", motion, (batch,), "[B]")
    m = motion.float()
    used = torch.ones_like(m, dtype=torch.bool) if keep is None else keep.to(m.device) != 0
    problems = []
    for what, bad in (("NaN", torch.isnan(m)), ("infinite", torch.isinf(m)), ("negative", m < 0)):
        idx = torch.nonzero(bad & used).flatten().tolist()
        if idx:
            problems.append(f"{what} at batch indices {idx}")
    if problems:
        raise ValueError(f"cond.motion (motion magnitude m) must be finite and >= 0: {'; '.join(problems)}")


def check_cameras(cameras: torch.Tensor, batch: int, frames: int) -> None:
    expect_shape("cond.cameras", cameras, (batch, frames, 4, 4), "[B, T, 4, 4] camera-to-world")
    if not torch.isfinite(cameras).all():
        raise ValueError("cond.cameras holds NaN or infinite values")


@contextlib.contextmanager
def condition_checks_skipped(*models: object) -> Iterator[None]:
    """Skip the host-synchronising input checks of our UNets (``_check_condition``) inside the block.

    For callers that already ran them on inputs of the same kind and build the rest themselves: the CUDA-graph
    capture (same static tensors as its eager warm-up) and the training loop (checked at its first step; later
    conditions come from the same code and the validated latent cache). Each value check costs a device sync, which
    stops the host from queueing the next kernels while the GPU works. The skip is an instance attribute, removed
    afterwards."""
    patched = []
    for m in models:
        if m is not None and hasattr(type(m), "_check_condition") and "_check_condition" not in vars(m):
            object.__setattr__(m, "_check_condition", lambda *args, **kwargs: None)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            object.__delattr__(m, "_check_condition")
