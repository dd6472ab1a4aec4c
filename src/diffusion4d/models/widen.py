"""Net2WiderNet for the image UNet: double every ``block_out_channels`` entry while computing the same function.

Why: a trained ``Diffusion4DImageUNet`` can then keep training with twice the width instead of restarting from
scratch. The wider model is built from the old config (only ``block_out_channels`` doubled) and every parameter is
mapped from its old counterpart so that, in exact arithmetic, the new forward equals the old one; in float32 the two
agree to rounding (≈1e-6 relative).

The default rule is *channel duplication*: a dimension that doubles is expanded with ``repeat_interleave(2)``, old
channel c → new channels 2c and 2c+1. Where such a dimension is a layer's *input* (dim 1 of a Linear / Conv weight
[out, in, ...]) the copies are also halved, because both copies of an input channel carry the same value and their
sum must stay what one weight times that value was. Biases and norm affine parameters [C] are only duplicated.
Norms need nothing else: a GroupNorm with the same number of groups over twice the channels sees, in group j, exactly
the duplicates of old group j's channels (also across the up-blocks' concatenation [h, skip], where both parts are
interleaved), and a LayerNorm over a duplicated dim has the same mean and variance — so ``norm_num_groups`` stays.
The GEGLU feed-forward ``proj`` [dim → 2·ff, chunked into (hidden, gate)] needs no rule either: interleaving a
concatenation [a, b] gives [dup(a), dup(b)], so each half of the wider output is the duplicated old half.

Exceptions (``_dim_rules``), each where a doubled dim is not a plain list of channels:

* attention inner dims (``to_q/to_k/to_v`` output, ``to_out.0`` input) of diffusers ``Attention`` modules whose
  head count doubles (I2VGen-XL's blocks keep the head dim, its ``attention_head_dim`` config, and use C / head_dim
  heads): duplicated per *head* — new heads 2i and 2i+1 both copy old head i — so each head's q·k and softmax scale
  are unchanged (a channel-interleaved copy would mix two old heads into one new head);
* the inputs of ``time_embedding.linear_1`` and ``fps_embedding.0``, fed by ``time_proj``, the sinusoidal features
  of width ``block_out_channels[0]``: at twice the width these are a different set of sinusoids, of which the old
  frequencies are exactly the even-indexed ones (flip_sin_to_cos, no frequency shift), so old column i of each
  (cos, sin) half goes to new column 2i, and the new odd columns (new frequencies) get zero weight — they still
  learn. Checked numerically at widening time.

Dims that do not change (in/out channels, cross_attention_dim, I2VGen-XL's image-latent path, ``transformer_in``'s
fixed 8 × head_dim inner width, the motion embedding's 256 sinusoids, the camera's 16 inputs) are copied as they are.
Everything is exact; the one requirement is an even ``block_out_channels[0]`` (for an odd width the wider sinusoid
set does not contain the old one), which is checked.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from .unets import Diffusion4DImageUNet

#: Linear layers whose input is the UNet's own sinusoidal ``time_proj`` features (width block_out_channels[0])
SINUSOID_INPUTS = ("time_embedding.linear_1", "fps_embedding.0")

#: rules for a doubled dim: ("channel",) default; ("block", n): runs of n entries (an attention head) duplicated;
#: ("sinusoid",): old features to the even slots, zeros to the odd ones
CHANNEL = ("channel",)
SINUSOID = ("sinusoid",)

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.GroupNorm, nn.LayerNorm)


def widen_unet(
    model: Diffusion4DImageUNet, noise: float = 0.0, generator: torch.Generator | None = None
) -> Diffusion4DImageUNet:
    """Return a new model with every ``block_out_channels`` entry ×2 that computes what ``model`` computes.

    Args:
        model: the trained image UNet (left unchanged).
        noise: > 0 adds Gaussian noise of std ``noise × std(widened tensor)`` to the second copy of every duplicated
            entry, so that the copies can learn different things (the output then only approximately matches: the
            two halves of an input no longer sum to the old weight).
        generator: CPU generator for that noise (reproducibility).

    The new model has ``model``'s dtype, device, train/eval mode and requires_grad flags.
    """
    if not isinstance(model, Diffusion4DImageUNet):
        raise TypeError(f"widen_unet needs a Diffusion4DImageUNet; got {type(model).__name__}")
    if not (noise >= 0.0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number >= 0; got {noise}")
    if model.config.block_out_channels[0] % 2:
        raise ValueError(
            f"block_out_channels[0] must be even to widen exactly (its sinusoidal time features); "
            f"got {model.config.block_out_channels[0]}"
        )
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    config["block_out_channels"] = tuple(2 * c for c in config["block_out_channels"])
    ref = next(model.parameters())
    # nn.Module.to: diffusers' own .to warns about fp32-kept modules, of which this class has none
    wide = nn.Module.to(type(model).from_config(config), device=ref.device, dtype=ref.dtype)
    _check_sinusoids(model, wide)

    rules = _dim_rules(model, wide)
    old_state, new_state = model.state_dict(), wide.state_dict()
    if old_state.keys() != new_state.keys():
        diff = sorted(old_state.keys() ^ new_state.keys())
        raise ValueError(f"model's modules disagree with its config (keys {diff[:5]}…); cannot widen it")
    mapped = {}
    for name, old in old_state.items():
        module = model.get_submodule(name.rpartition(".")[0])
        mapped[name] = _widen_tensor(name, old, new_state[name].shape, module, rules, noise, generator)
    wide.load_state_dict(mapped, strict=True)

    wide.train(model.training)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in wide.named_parameters():
        p.requires_grad_(flags[name])
    return wide


def _dim_rules(old: nn.Module, new: nn.Module) -> dict[tuple[str, str], tuple]:
    """The exception table: (module name, "out" | "in") → rule for the doubled dims that are not plain channels.

    Attention inner dims are per head only where the head count doubles at a fixed head dim; a module whose head
    dim changed instead would need another mapping (its q·k sums over more terms), which this UNet never builds.
    """
    rules = {(name, "in"): SINUSOID for name in SINUSOID_INPUTS}
    new_modules = dict(new.named_modules())
    for name, module in old.named_modules():
        wide = new_modules[name]
        if not isinstance(module, Attention) or module.inner_dim == wide.inner_dim:
            continue
        head_dim = module.inner_dim // module.heads
        if wide.heads != 2 * module.heads or wide.inner_dim // wide.heads != head_dim:
            raise NotImplementedError(
                f"{name}: attention goes from {module.heads}×{head_dim} to {wide.heads}×"
                f"{wide.inner_dim // wide.heads} (heads × head dim); only doubling the heads is exact here"
            )
        for proj in ("to_q", "to_k", "to_v"):
            rules[(f"{name}.{proj}", "out")] = ("block", head_dim)
        rules[(f"{name}.to_out.0", "in")] = ("block", head_dim)
    return rules


def _dim_role(module: nn.Module, leaf: str, dim: int) -> str:
    """Whether dim ``dim`` of parameter ``leaf`` of ``module`` is an output ("out") or input ("in") dim.

    Only the layer types the UNet widens are known; anything else that changes shape is refused, rather than
    guessed at."""
    if isinstance(module, _WEIGHTED) and leaf in ("weight", "bias") and dim <= (1 if leaf == "weight" else 0):
        return "out" if dim == 0 else "in"
    if isinstance(module, _NORMS) and leaf in ("weight", "bias") and dim == 0:
        return "out"
    raise NotImplementedError(f"don't know how to widen dim {dim} of {type(module).__name__}.{leaf}")


def _widen_tensor(name, old, shape, module, rules, noise, generator) -> torch.Tensor:
    """old [..., n_d, ...] → [..., 2·n_d, ...] on each doubled dim d (by its rule), + noise on the copies."""
    x = old.detach().to(torch.promote_types(old.dtype, torch.float32))  # fp16/bf16 mapped in float32
    copies = torch.zeros((), dtype=torch.bool)  # where an entry is the second copy of a duplicate (broadcast)
    for dim, (n_old, n_new) in enumerate(zip(old.shape, shape)):
        if n_new == n_old:
            continue
        if n_new != 2 * n_old:
            raise ValueError(f"{name}: dim {dim} goes from {n_old} to {n_new}, not ×2")
        module_name, _, leaf = name.rpartition(".")
        role = _dim_role(module, leaf, dim)
        x, mask = _expand(x, dim, rules.get((module_name, role), CHANNEL), role == "in")
        view = [1] * x.dim()
        view[dim] = -1
        copies = copies | mask.view(view)
    if noise > 0 and bool(copies.any()):
        std = x.std(unbiased=False)  # of the widened values (input copies are halved), 0 for a single one
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) * (noise * std)
        x = x + eps * copies.to(x.device)
    return x.to(old.dtype)


def _expand(x: torch.Tensor, dim: int, rule: tuple, is_input: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Double ``dim`` of x by ``rule``; returns (x', copy mask [2·n]). Inputs of duplicated features are halved."""
    n = x.shape[dim]
    if rule[0] == "sinusoid":
        if not is_input:
            raise ValueError("the sinusoid rule applies to a layer's input dim only")
        # [.., (cos|sin) 2, freq h, ..] → [.., 2, h, (old, new) 2, ..]: old frequency k is new frequency 2k
        halves = x.unflatten(dim, (2, n // 2)).unsqueeze(dim + 2)
        wide = torch.cat([halves, torch.zeros_like(halves)], dim=dim + 2).flatten(dim, dim + 2)
        return wide, torch.zeros(2 * n, dtype=torch.bool)
    wide, mask = _duplicate(x, dim, rule[1] if rule[0] == "block" else 1)
    return (wide / 2 if is_input else wide), mask


def _duplicate(x: torch.Tensor, dim: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each run of ``block`` entries along ``dim`` twice: [a, b] → [a, a, b, b] (run by run); returns
    (x' [..., 2n, ...], mask [2n] of the second copies)."""
    n = x.shape[dim]
    wide = x.unflatten(dim, (n // block, block)).repeat_interleave(2, dim=dim).flatten(dim, dim + 1)
    mask = (torch.arange(2 * n) // block) % 2 == 1
    return wide, mask


def _check_sinusoids(old: Diffusion4DImageUNet, new: Diffusion4DImageUNet) -> None:
    """The sinusoid rule's premise: the old ``time_proj`` features are the new ones at even indices of each half."""
    t = torch.tensor([0.0, 1.0, 37.0, 999.0])
    a, b = old.time_proj(t), new.time_proj(t)  # [4, C0], [4, 2·C0]
    half = a.shape[1] // 2
    picked = b.unflatten(1, (2, half, 2))[..., 0].flatten(1)
    if not torch.equal(a, picked):
        raise ValueError("time_proj's old frequencies are not the even ones of the wider set; cannot widen exactly")
