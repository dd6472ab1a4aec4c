"""Pre-computed text states: every caption of a dataset (and the empty prompt) encoded once, in one file.

The text models of the embedded default train on a machine where the text encoder's package is not installed; they
read the states from this file instead of running the encoder. Sampling still runs the real encoder.

File: safetensors with one tensor ``states`` [N, L', D] (float16) and metadata ``captions`` (JSON list of the N
captions, "" among them), ``text_encoder`` (what made them) and ``max_length`` L. Positions that are zero for every
caption (a masked encoder's padding, e.g. MiniLM's) are cut off at L' ≤ L and put back as zeros when read, so the
model sees the same L tokens as from the encoder at sampling time, from a file a few times smaller.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion4d.data.dataset import read_manifest
from diffusion4d.diffusion.latent_cache import host_to_device


def dataset_captions(data: str | Path) -> list[str]:
    """The distinct captions of a curated orbit folder's kept assets (all splits), then "" (unconditional)."""
    captions = {row.get("caption", "") for row in read_manifest(Path(data)) if row.get("kept") and "orbits" in row}
    return sorted(captions - {""}) + [""]


def write_text_states(captions: list[str], text_encoder: str, out: str | Path, batch_size: int = 32) -> Path:
    """Encode ``captions`` with the text encoder ``text_encoder`` (a folder or a packaged name) into ``out``."""
    from diffusion4d.models.encoders import load_text_encoder

    encoder = load_text_encoder(text_encoder)
    captions = list(dict.fromkeys(captions))
    states = torch.cat([encoder(captions[i : i + batch_size]) for i in range(0, len(captions), batch_size)])
    used = states.abs().amax(dim=(0, 2)).nonzero()
    states = states[:, : int(used.max()) + 1 if len(used) else 1]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    metadata = {"captions": json.dumps(captions), "text_encoder": str(text_encoder),
                "max_length": str(encoder.max_length)}
    save_file({"states": states.to(torch.float16).contiguous()}, str(tmp), metadata=metadata)
    tmp.replace(out)
    return out


class TextStates:
    """Stands in for a TextEncoder: prompts (B strings, each a caption of the file) → states [B, L, D] float32."""

    def __init__(self, path: str | Path, device="cpu"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: text states file not found (make it with `diffusion4d encode-text`)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                states = f.get_tensor("states")
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise ValueError(f"{path}: not a text states file: {exc}") from None
        if "captions" not in meta or states.ndim != 3:
            raise ValueError(f"{path}: not a text states file (needs tensor states [N, L, D] + captions metadata)")
        captions = json.loads(meta["captions"])
        if len(captions) != states.shape[0]:
            raise ValueError(f"{path}: {len(captions)} captions but {states.shape[0]} states")
        self.path, self.text_encoder = path, meta.get("text_encoder")
        self.index = {c: i for i, c in enumerate(captions)}
        length = int(meta.get("max_length", states.shape[1]))
        if length < states.shape[1]:
            raise ValueError(f"{path}: states are {states.shape[1]} tokens long, more than max_length {length}")
        self.states = torch.nn.functional.pad(states.float(), (0, 0, 0, length - states.shape[1])).to(device)

    @property
    def hidden_size(self) -> int:
        return self.states.shape[-1]

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in prompts if p not in self.index]
        if missing:
            raise ValueError(f"{self.path}: no states for {len(missing)} prompt(s), e.g. {missing[0]!r}; re-run "
                             "`diffusion4d encode-text` on this dataset")
        # a pinned, asynchronous copy of the rows: indexing a device tensor with a list waits for the device
        return self.states.index_select(0, host_to_device(torch.tensor([self.index[p] for p in prompts]),
                                                          self.states.device))
