"""models/widen.py: doubling the image UNet's width keeps its function (tiny configs, CPU, float32)."""

from __future__ import annotations

import pytest
import torch
from diffusers import I2VGenXLUNet
from torch import nn

from diffusion4d.models import Condition, Diffusion4DImageUNet, first_view_image_latents
from diffusion4d.models.widen import widen_unet

B, C, T, H, W = 2, 4, 3, 8, 8
D = 32  # cross_attention_dim
TINY = dict(
    block_out_channels=(8, 16, 16),
    norm_num_groups=4,
    attention_head_dim=4,
    cross_attention_dim=D,
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    motion_embedding=True,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Give EVERY parameter a random value: several layers start at zero (temporal convs' last layer, transformer
    proj_out, motion/camera output layers), which would hide a wrong mapping of everything behind them. Weights are
    scaled by 1/sqrt(fan-in) and norm scales kept near 1 so activations stay O(1) through the whole UNet."""
    g = _gen(seed)
    for module in model.modules():
        for leaf, p in module.named_parameters(recurse=False):
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if isinstance(module, (nn.GroupNorm, nn.LayerNorm)) and leaf == "weight":
                p.copy_(1 + 0.2 * noise)
            elif leaf == "bias":
                p.copy_(0.2 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def _tiny(camera: bool, seed: int = 0) -> Diffusion4DImageUNet:
    model = Diffusion4DImageUNet(**TINY, camera_embedding=camera).eval()
    _randomise(model, seed)
    return model


def _inputs(camera: bool, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, Condition]:
    """sample [B, C, T, H, W], timestep [B], and a condition with every field the model takes."""
    g = _gen(seed)
    cond = Condition(
        image_latents=first_view_image_latents(torch.randn(B, C, H, W, generator=g), T),
        image_embeddings=torch.randn(B, D, generator=g),
        encoder_hidden_states=torch.randn(B, 5, D, generator=g),
        motion=torch.tensor([0.05, 0.3]),
        cameras=torch.randn(B, T, 4, 4, generator=g) if camera else None,
    )
    return torch.randn(B, C, T, H, W, generator=g), torch.tensor([17, 640]), cond


def _run(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


@pytest.fixture(scope="module", params=[False, True], ids=["no_camera", "camera"])
def pair(request):
    """(old, widened, inputs) for a randomised tiny model, with and without the camera embedding."""
    camera = request.param
    model = _tiny(camera)
    return model, widen_unet(model), _inputs(camera)


def test_widened_model_computes_the_same_function(pair):
    model, wide, inputs = pair
    old, new = _run(model, inputs), _run(wide, inputs)
    assert old.abs().max() > 0.1  # the comparison means something: the output is not ~0
    assert (old - new).abs().max() < 1e-5, (old - new).abs().max()


def test_exact_in_float64():
    """float32's 1e-5 is rounding, not an approximate mapping: in float64 the two agree to ~1e-14."""
    model = _tiny(camera=True).double()
    _randomise(model, seed=2)  # values that float32 cannot hold, so a float32 detour would show
    x, t, cond = _inputs(camera=True)
    inputs = (x.double(), t, cond.to(dtype=torch.float64))
    wide = widen_unet(model)
    assert next(wide.parameters()).dtype == torch.float64
    assert (_run(model, inputs) - _run(wide, inputs)).abs().max() < 1e-12


def test_every_condition_still_matters(pair):
    """The equality above covers each input's path: changing any one changes the output (of both models alike)."""
    model, wide, (x, t, cond) = pair
    base = _run(model, (x, t, cond))
    g = _gen(5)
    changes = {name: torch.randn(value.shape, generator=g) for name, value in cond.tensors().items()}
    changes["motion"] = torch.tensor([0.2, 0.01])
    for name, value in changes.items():
        inputs = (x, t, Condition(**{**cond.tensors(), name: value}))
        old, new = _run(model, inputs), _run(wide, inputs)
        assert (old - base).abs().max() > 1e-3, name
        assert (old - new).abs().max() < 1e-5, name


def test_config_doubles_only_the_block_widths(pair):
    model, wide, _ = pair
    assert type(wide) is Diffusion4DImageUNet
    assert tuple(wide.config.block_out_channels) == tuple(2 * c for c in model.config.block_out_channels)
    public = {k for k in model.config if not k.startswith("_")} - {"block_out_channels"}
    assert {k: wide.config[k] for k in public} == {k: model.config[k] for k in public}
    assert wide.config.norm_num_groups == 4 and wide.config.attention_head_dim == 4
    assert wide.training == model.training
    n_old, n_new = (sum(p.numel() for p in m.parameters()) for m in (model, wide))
    assert 2 * n_old < n_new < 4 * n_old  # [C, C, ...] weights ×4, [C, fixed] ×2, fixed-size parts ×1


def test_model_is_left_unchanged():
    model = _tiny(camera=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    widen_unet(model, noise=1e-2, generator=_gen(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_noise_breaks_the_symmetry_and_stays_close(pair):
    model, exact, inputs = pair
    noisy = widen_unet(model, noise=1e-3, generator=_gen(3))
    # without noise the two copies of a channel are identical; with it they are not
    w_exact, w_noisy = exact.conv_in.weight, noisy.conv_in.weight  # [2·C0, 2·C_in, 3, 3], C_in unchanged
    assert torch.equal(w_exact[0::2], w_exact[1::2])
    assert not torch.equal(w_noisy[0::2], w_noisy[1::2])
    assert torch.equal(w_noisy[0::2], w_exact[0::2])  # the first copies keep the trained value
    old, new = _run(model, inputs), _run(noisy, inputs)
    diff = (old - new).abs().max()
    assert 1e-5 < diff < 0.05 * old.abs().max(), diff
    again = widen_unet(model, noise=1e-3, generator=_gen(3))
    assert all(torch.equal(a, b) for a, b in zip(noisy.parameters(), again.parameters()))  # reproducible


def test_widened_parameters_get_finite_nonzero_gradients(pair):
    model, _, inputs = pair
    wide = widen_unet(model, noise=1e-3, generator=_gen(4))
    wide(*inputs).square().mean().backward()
    shapes = dict(model.named_parameters())
    widened = [(n, p) for n, p in wide.named_parameters() if p.shape != shapes[n].shape]
    assert len(widened) > 100
    for name, p in widened:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_save_pretrained_round_trip(pair, tmp_path):
    _, wide, inputs = pair
    wide.save_pretrained(tmp_path)
    loaded = Diffusion4DImageUNet.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.block_out_channels) == tuple(wide.config.block_out_channels)
    assert torch.equal(_run(wide, inputs), _run(loaded, inputs))


def test_keeps_dtype_mode_and_frozen_parameters():
    model = nn.Module.to(_tiny(camera=True), dtype=torch.bfloat16).train()
    model.transformer_in.requires_grad_(False)
    wide = widen_unet(model)
    assert wide.training and all(p.dtype == torch.bfloat16 for p in wide.parameters())
    frozen = {n for n, p in wide.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in model.named_parameters() if not p.requires_grad} and frozen
    # bf16 values map exactly: conv_in [2·C0, 8, 3, 3] duplicates its outputs, conv_out [4, 2·C0, 3, 3] halves inputs
    assert torch.equal(wide.conv_in.weight[0::2], model.conv_in.weight)
    assert torch.equal(wide.conv_out.weight[:, 1::2], model.conv_out.weight / 2)


def test_camera_embedding_added_after_construction_is_widened():
    """add_camera_embedding records camera_embedding=True in the config, so the wider model has it too."""
    model = _tiny(camera=False)
    model.add_camera_embedding()
    _randomise(model.camera_embedder, seed=7)
    inputs = _inputs(camera=True)
    wide = widen_unet(model)
    assert wide.camera_embedder is not None
    assert (_run(model, inputs) - _run(wide, inputs)).abs().max() < 1e-5


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="needs a Diffusion4DImageUNet; got Linear"):
        widen_unet(nn.Linear(4, 4))
    base = I2VGenXLUNet(**{k: v for k, v in TINY.items() if k != "motion_embedding"})
    with pytest.raises(TypeError, match="got I2VGenXLUNet"):
        widen_unet(base)
    model = _tiny(camera=False)
    for bad in (-1e-3, float("nan")):
        with pytest.raises(ValueError, match="noise must be"):
            widen_unet(model, noise=bad)
    odd = Diffusion4DImageUNet(**{**TINY, "block_out_channels": (9, 18, 18), "norm_num_groups": 3,
                                  "attention_head_dim": 3})
    with pytest.raises(ValueError, match=r"block_out_channels\[0\] must be even"):
        widen_unet(odd)
