"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), ours.

    d(x, y) = Σ_l  mean_{h,w}  ‖ w_l ⊙ (f̂_l(x)_{hw} − f̂_l(y)_{hw}) ‖²₂

with f̂_l the backbone's l-th ReLU feature map unit-normalised over channels and w_l ≥ 0 the learned per-channel
weights (a 1×1 convolution to one channel). Inputs in [0, 1] are mapped to [−1, 1] and then through the release's
scaling layer before the backbone.

Parameter names follow the real files so released weights load unchanged from local paths:

* backbone — torchvision's layout: ``features.{0,3,6,8,10}.weight/bias`` (AlexNet) or ``features.{0,2,5,…,28}.*``
  (VGG16); a full torchvision checkpoint also holds ``classifier.*``, which is ignored;
* linear layers — the lpips release's layout (weights/v0.1/{alex,vgg}.pth): ``lin{l}.model.1.weight`` of shape
  [1, C_l, 1, 1] (index 1 because the release put a Dropout at index 0; ours is an Identity, so the metric is
  deterministic even inside a module switched to train mode).

Also usable as a training loss: differentiable in its inputs, parameters frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffusion4d.evaluation.pretrained import load_state_dict_safely, load_strict, require_weights

# The lpips release's ScalingLayer (v0.1): inputs in [−1, 1] are shifted and scaled to ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# Backbone as torchvision builds it: ("conv", in, out, kernel, stride, padding) | ("relu",) | ("pool", k, s).
# TAPS are the indices of the ReLUs whose outputs LPIPS compares (AlexNet relu1..5, VGG16 relu1_2..relu5_3).
_ALEX = (
    ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1), ("relu",),
    ("conv", 384, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",),
)
_ALEX_TAPS = (1, 4, 7, 9, 11)


def _vgg16_layers() -> tuple:
    layers, c_in = [], 3
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(("pool", 2, 2))
        for _ in range(convs):
            layers += [("conv", c_in, width, 3, 1, 1), ("relu",)]
            c_in = width
    return tuple(layers)


_VGG16 = _vgg16_layers()
_VGG16_TAPS = (3, 8, 15, 22, 29)
BACKBONES = {"alex": (_ALEX, _ALEX_TAPS), "vgg": (_VGG16, _VGG16_TAPS)}
# The smallest image side whose pooling chain leaves at least one pixel at the last tap.
MIN_SIDE = {"alex": 31, "vgg": 16}


def _build(spec) -> nn.Sequential:
    def make(layer):
        if layer[0] == "conv":
            _, c_in, c_out, k, s, p = layer
            return nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
        if layer[0] == "pool":
            return nn.MaxPool2d(layer[1], stride=layer[2])
        return nn.ReLU()  # not in-place: the tapped activations must survive for the backward pass

    return nn.Sequential(*(make(layer) for layer in spec))


class Backbone(nn.Module):
    """AlexNet or VGG16 convolutional trunk; ``forward`` returns the 5 tapped ReLU maps [B, C_l, H_l, W_l]."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS backbone must be one of {sorted(BACKBONES)}, got {net!r}")
        spec, self.taps = BACKBONES[net]
        self.features = _build(spec[: self.taps[-1] + 1])  # layers past the last tap are never used
        self.channels = tuple(self.features[i - 1].out_channels for i in self.taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, out = set(self.taps), []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out


class _Linear(nn.Module):
    """One per-layer weighting, named ``model.1.weight`` like the release (index 0 held its Dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """[B, C, H, W] → each spatial position's C-vector divided by its L2 norm (+eps, as the release)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_distance(
    feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], weights: list[torch.Tensor]
) -> torch.Tensor:
    """The LPIPS sum over layers (paper Eq. 1) from backbone features.

    Args:
        feats_x, feats_y: per layer [B, C_l, H_l, W_l]; weights: per layer [1, C_l, 1, 1], non-negative.
    Returns:
        [B]: Σ_l mean_{h,w} Σ_c w_lc (f̂_l(x) − f̂_l(y))²_c.
    """
    total = 0.0
    for fx, fy, w in zip(feats_x, feats_y, weights, strict=True):
        diff = (unit_normalize(fx) - unit_normalize(fy)).pow(2)
        total = total + (diff * w).sum(dim=1).mean(dim=(1, 2))
    return total


class LPIPS(nn.Module):
    """LPIPS distance: ``lpips(x, y)`` with x, y [B, 3, H, W] in [0, 1] → [B] (0 for identical images).

    Build with random weights (``LPIPS("alex")``, for tests) or load the released ones with `from_files`.
    AlexNet needs H, W ≥ 31 (its pooling leaves nothing of smaller images); VGG16 needs ≥ 16.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net, self.net_name = Backbone(net), net
        for l, c in enumerate(self.net.channels):
            self.add_module(f"lin{l}", _Linear(c))
        with torch.no_grad():  # a fresh instance must be a valid LPIPS too: the weights have to be >= 0
            for lin in self.lins:
                lin.weight.abs_()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)  # a metric and a fixed loss: gradients flow to the inputs only
        self.eval()

    @property
    def lins(self) -> list[nn.Conv2d]:
        return [getattr(self, f"lin{l}").model[1] for l in range(len(self.net.channels))]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two image batches [B, 3, H, W] of one shape, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE[self.net_name]:
            raise ValueError(f"LPIPS-{self.net_name} needs images of at least {MIN_SIDE[self.net_name]} pixels a "
                             f"side, got {x.shape[-1]}x{x.shape[-2]}")
        dtype = self.shift.dtype
        x, y = (self._scale(im.to(dtype)) for im in (x, y))
        feats = self.net(torch.cat([x, y]))  # one backbone pass for both inputs
        b = x.shape[0]
        return lpips_distance([f[:b] for f in feats], [f[b:] for f in feats], [lin.weight for lin in self.lins])

    def _scale(self, images01: torch.Tensor) -> torch.Tensor:
        return (2 * images01 - 1 - self.shift) / self.scale

    def load_linear(self, path: str | Path) -> None:
        """The lpips release's linear weights (``lin{l}.model.1.weight``), checked and required non-negative."""
        state = load_state_dict_safely(path)
        lins = nn.ModuleDict({f"lin{l}": getattr(self, f"lin{l}") for l in range(len(self.net.channels))})
        load_strict(lins, state, path, f"an LPIPS-{self.net_name} linear-layer")
        if any((lin.weight < 0).any() for lin in self.lins):
            raise ValueError(f"{path}: LPIPS linear weights must be non-negative (the release's are)")

    def load_backbone(self, path: str | Path) -> None:
        """A torchvision AlexNet/VGG16 state dict; its ``features.*`` are loaded strictly, ``classifier.*`` ignored.

        Layers past the last LPIPS tap (VGG16's final max-pool has no weights; nothing else is past it) are not
        part of the module, so a full torchvision file has no extra ``features.*`` keys.
        """
        state = load_state_dict_safely(path)
        features = {k: v for k, v in state.items() if k.startswith("features.")}
        if not features:
            raise ValueError(f"{path}: no 'features.*' keys; expected a torchvision AlexNet/VGG16 state dict "
                             f"(found e.g. {', '.join(list(state)[:3]) or 'nothing'})")
        load_strict(self.net, features, path, f"a torchvision {self.net_name} backbone")

    @classmethod
    def from_files(cls, lin_path: str | Path | None, backbone_path: str | Path | None, net: str = "alex") -> LPIPS:
        """LPIPS with released weights; a missing file raises MissingWeights naming its command-line flag."""
        lin_path = require_weights("LPIPS", "--lpips-weights", lin_path)
        backbone_path = require_weights("LPIPS", "--lpips-backbone", backbone_path)
        model = cls(net)
        model.load_linear(lin_path)
        model.load_backbone(backbone_path)
        return model
