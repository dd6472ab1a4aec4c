"""CLIP-F / CLIP-O (paper Sec. 4.2): the CLIP score of two embeddings, and CLIP embeddings from a local model folder
only.

The folder is what ``CLIPModel.save_pretrained`` writes (config.json + model.safetensors) plus the tokenizer files
(vocab.json, merges.txt) and, if present, preprocessor_config.json — e.g. a local copy of openai/clip-vit-*.
Nothing is fetched from the hub (``local_files_only=True``), so it works with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion4d.evaluation.pretrained import MissingWeights
from diffusion4d.models.encoders import CLIP_MEAN, CLIP_STD, clip_preprocess

__all__ = ["ClipEmbedder", "OPENAI_MEAN", "OPENAI_STD", "clip_f_o", "clip_preprocess", "clip_score"]

# OpenAI CLIP's pixel statistics (used when the folder has no preprocessor_config.json) and CLIP's resize + crop +
# normalise: one definition, shared with the condition encoders.
OPENAI_MEAN, OPENAI_STD = CLIP_MEAN, CLIP_STD


def _embedding(output) -> torch.Tensor:
    # transformers < 5 returns the projected embedding; 5.x a ModelOutput whose pooler_output holds it
    return output if torch.is_tensor(output) else output.pooler_output


class ClipEmbedder:
    """Text and image embeddings of one CLIP model: ``text([...]) -> [N, D]``, ``images([N,3,H,W]) -> [N, D]``."""

    def __init__(self, model, tokenizer, mean=OPENAI_MEAN, std=OPENAI_STD, device: str | torch.device = "cpu"):
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer, self.mean, self.std, self.device = tokenizer, tuple(mean), tuple(std), torch.device(device)
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = min(int(getattr(tokenizer, "model_max_length", 77)),
                              int(model.config.text_config.max_position_embeddings))

    @classmethod
    def from_dir(cls, path: str | Path | None, device: str | torch.device = "cpu") -> ClipEmbedder:
        """Load from a local folder; MissingWeights (naming ``--clip``) when no folder is given or it is absent."""
        from transformers import CLIPModel, CLIPTokenizer

        if path is None:
            raise MissingWeights("CLIP-F/CLIP-O", "--clip", "no path given")
        path = Path(path)
        if not (path / "config.json").is_file():
            raise MissingWeights("CLIP-F/CLIP-O", "--clip", f"{path} has no config.json of a CLIP model")
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True)
            tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:  # transformers reports a broken or partial folder as OSError
            raise ValueError(f"{path}: cannot load a CLIP model and tokenizer from it ({exc})") from exc
        stats = {}
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            config = json.loads(pre.read_text())
            stats = {k: config[k] for k in ("image_mean", "image_std") if k in config}
        return cls(model, tokenizer, stats.get("image_mean", OPENAI_MEAN), stats.get("image_std", OPENAI_STD),
                   device)

    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts → text embeddings [N, D] (projected, not normalised); long prompts are truncated like CLIP's."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        out = self.model.get_text_features(input_ids=tokens.input_ids.to(self.device),
                                           attention_mask=tokens.attention_mask.to(self.device))
        return _embedding(out).float().cpu()

    @torch.no_grad()
    def images(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] → image embeddings [N, D] (projected, not normalised)."""
        chunks = []
        for start in range(0, len(images), batch_size):
            pixels = clip_preprocess(images[start : start + batch_size], self.image_size, self.mean, self.std)
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            chunks.append(_embedding(out).float().cpu())
        return torch.cat(chunks)


def clip_score(reference_embeddings: torch.Tensor, image_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of CLIP embeddings of the reference (prompt text or front image) and generated images.

    Args:
        reference_embeddings: [D] or [1, D] (one reference for all N images) or [N, D] (paired row by row).
        image_embeddings: [N, D].
    Returns:
        [N] in [−1, 1]; NOT scaled by 100 (unlike torchmetrics' CLIPScore). This matches the paper, whose
        Table 1 reports CLIP-F/CLIP-O as 0.78–0.91, i.e. raw cosine similarity. CLIP-F averages it over front
        views, CLIP-O over all orbit views.
    """
    ref, img = reference_embeddings, image_embeddings
    if ref.dim() == 1:
        ref = ref[None]
    if img.dim() != 2 or ref.dim() != 2 or ref.shape[1] != img.shape[1] or ref.shape[0] not in (1, img.shape[0]):
        raise ValueError(
            "clip_score needs reference [D], [1, D] or [N, D] and images [N, D], "
            f"got {tuple(reference_embeddings.shape)} and {tuple(image_embeddings.shape)}"
        )
    ref, img = F.normalize(ref.double(), dim=-1), F.normalize(img.double(), dim=-1)
    return (ref * img).sum(dim=-1).clamp(-1.0, 1.0)  # clamp: rounding can push |cos| a hair past 1


def clip_f_o(reference: torch.Tensor, targets: torch.Tensor, front: list[int]) -> tuple[float, float]:
    """CLIP-F and CLIP-O of one item.

    Args:
        reference: the reference embedding [D] (prompt text, or the front/conditioning image).
        targets: embeddings of the target views [V, D] (24 orbit views, or 36 renders of a 4D asset).
        front: indices of the front views among the targets.
    Returns:
        (mean clip_score over the front views, mean clip_score over all views).
    """
    if not front:
        raise ValueError("CLIP-F needs at least one front view")
    scores = clip_score(reference, targets)
    return float(scores[front].mean()), float(scores.mean())
