"""Extra embeddings that Diffusion4D adds to a pretrained video UNet: motion magnitude and (optional) camera pose.

Both end in a zero-initialised linear layer, so a freshly built embedding outputs exactly zero and a pretrained base
model wrapped with it starts out computing exactly what it computed before: fine-tuning then learns how much the new
signal should move the time embedding.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import Timesteps
from torch import nn


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MotionEmbedding(nn.Module):
    """Motion magnitude m (Eq. 1) → an embedding added to the UNet's time embedding (the paper's "two-layer MLP").

    m is a small non-negative scalar; ``motion_scale`` stretches it to the range of diffusion timesteps (0 … 1000) so
    that the same sinusoidal features as the timestep's resolve it well.

    Args:
        embed_dim: output width, the UNet's time-embedding width (4 × its first block's channels).
        num_channels: number of sinusoidal features of m·motion_scale.
        motion_scale: factor applied to m before the sinusoidal features.
    """

    def __init__(self, embed_dim: int, num_channels: int = 256, motion_scale: float = 1000.0):
        super().__init__()
        self.motion_scale = float(motion_scale)
        # Same feature layout as the UNets' own time_proj (cos first, no frequency shift).
        self.proj = Timesteps(num_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.linear_1 = nn.Linear(num_channels, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = _zero_linear(embed_dim, embed_dim)

    def forward(self, motion: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """motion [B] (m ≥ 0), keep [B] (1 keeps, 0 drops; default all ones) → [B, embed_dim].

        Where keep is 0 the output is exactly zero whatever m holds (m is replaced by 0 first, so even a NaN there
        cannot leak through 0·NaN).
        """
        if keep is not None:
            motion = torch.where(keep != 0, motion, torch.zeros_like(motion))
        features = self.proj(motion.float() * self.motion_scale).to(self.linear_1.weight.dtype)
        emb = self.linear_2(self.act(self.linear_1(features)))
        if keep is not None:
            emb = emb * keep.to(emb.dtype)[:, None]
        return emb


class CameraEmbedding(nn.Module):
    """Per-frame camera-to-world matrix → an embedding added to that frame's time embedding (as in VideoMV).

    Args:
        embed_dim: output width, the UNet's time-embedding width.
        hidden_dim: width of the hidden layer.
    """

    def __init__(self, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(16, hidden_dim)
        self.act = nn.SiLU()
        self.linear_2 = _zero_linear(hidden_dim, embed_dim)

    def forward(self, cameras: torch.Tensor) -> torch.Tensor:
        """cameras [B, T, 4, 4] camera-to-world → [B·T, embed_dim], frames of one sample contiguous (b-major),
        the order in which the UNets repeat their time embedding over frames."""
        flat = cameras.reshape(-1, 16).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(flat)))
