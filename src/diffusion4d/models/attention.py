"""An attention processor for the UNets' many short sequences: plain matmul-softmax attention up to ``max_keys``
keys, PyTorch's fused SDPA beyond.

The temporal transformers attend over T = 24 frames at every pixel — tens of thousands of sequences of 24 tokens — and
the small models' heads are 8-20 wide. Flash attention gives each (sequence, head) its own tile of 64-128 query rows
and pads the head to 32: in the H200 profile of a small-UNet training step its backward was the largest kernel (54 ms
of 142). Two batched matrix products and a softmax over a [24, 24] score matrix do the same work without the padding.
Long spatial sequences keep SDPA, whose memory stays linear in the sequence length.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0


class ShortSequenceAttnProcessor:
    """diffusers attention processor: ``AttnProcessor`` (explicit scores) where the keys number at most
    ``max_keys``, ``AttnProcessor2_0`` (scaled_dot_product_attention) otherwise. Same outputs up to rounding."""

    def __init__(self, max_keys: int = 64):
        self.max_keys = max_keys
        self.short, self.long = AttnProcessor(), AttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        keys = source.shape[1] if source.ndim == 3 else source.shape[-1] * source.shape[-2]  # [B, C, H, W] inputs
        processor = self.short if keys <= self.max_keys else self.long
        return processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def use_short_sequence_attention(model: torch.nn.Module, max_keys: int = 64) -> int:
    """Install :class:`ShortSequenceAttnProcessor` on every diffusers ``Attention`` of ``model``; returns how many."""
    from diffusers.models.attention_processor import Attention

    modules = [m for m in model.modules() if isinstance(m, Attention)]
    processor = ShortSequenceAttnProcessor(max_keys)
    for module in modules:
        module.set_processor(processor)
    return len(modules)
