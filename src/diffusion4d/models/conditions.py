"""What a denoiser is conditioned on: the one structure the models, the sampler and the trainer share.

Every model in ``models/`` is called as ``model(sample, timestep, cond)`` with
    sample   [B, C, T, h, w]  noisy latent video (diffusers' video layout)
    timestep [B]              integer diffusion timesteps
    cond     Condition        below; fields a model does not use must be None
and returns its prediction (ε or v, as its scheduler says) of shape [B, C, T, h, w].
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Condition:
    #: text tokens' hidden states [B, L, D] (text model; may be empty-prompt states for "unconditional")
    encoder_hidden_states: torch.Tensor | None = None
    #: CLIP image embedding of the condition image [B, D_img] (image and static-3D models)
    image_embeddings: torch.Tensor | None = None
    #: latents concatenated on channels [B, C, T, h, w]: the first view's latent (image) or V̄'s latents (static-3D)
    image_latents: torch.Tensor | None = None
    #: motion magnitude m [B] (Eq. 1 scale); ignored where motion_keep is 0
    motion: torch.Tensor | None = None
    #: 1 where m conditions the sample, 0 where it is dropped (CFG's unconditional branch, the 3D-aware model) [B]
    motion_keep: torch.Tensor | None = None
    #: per-frame camera-to-world matrices [B, T, 4, 4] (optional camera embedding)
    cameras: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def batch_size(self) -> int:
        sizes = {t.shape[0] for t in self.tensors().values()}
        if len(sizes) != 1:
            raise ValueError(f"condition tensors disagree on the batch size: {sorted(sizes)}")
        return sizes.pop()

    def to(self, device=None, dtype=None) -> Condition:
        """Move every tensor; floating-point ones also take ``dtype``."""
        out = {}
        for name, t in self.tensors().items():
            out[name] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)
        return replace(self, **out)

    @staticmethod
    def cat(conds: list[Condition]) -> Condition:
        """Concatenate along the batch (e.g. the conditional and unconditional CFG branches in one call)."""
        names = [set(c.tensors()) for c in conds]
        if any(n != names[0] for n in names):
            raise ValueError(f"cannot batch conditions with different fields: {[sorted(n) for n in names]}")
        return Condition(**{k: torch.cat([getattr(c, k) for c in conds]) for k in names[0]})
