"""Random tiny encoders written in the released checkpoints' on-disk formats, so tests go through the real loading
path (``load_text_encoder``, ``load_image_encoder``, ``ClipEmbedder.from_dir``) without downloading anything.

The benchmarks' toy runs use them too (``benchmarks/train_default_model.py --toy``, ``bench_streaming.py --preset
tiny``, ``bench_tiny_two_stage.py``); they put tests/ on ``sys.path`` for it.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from diffusion4d.models.encoders import CLIP_MEAN, CLIP_STD


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


def make_tiny_clip(path: str | Path, *, dim: int = 32, image_size: int = 32, seed: int = 0) -> Path:
    """Write a random tiny CLIPModel + tokenizer + preprocessor_config.json to ``path`` in the released on-disk
    format (``save_pretrained``), the folder ``ClipEmbedder.from_dir`` (CLIP-F/CLIP-O) loads."""
    path = Path(path)
    make_tiny_text_encoder(path, hidden_size=dim, layout="flat", seed=seed)  # the tokenizer files (+ a text
    vocab_size = len(json.loads((path / "vocab.json").read_text()))  # model that CLIPModel replaces below)
    text = dict(vocab_size=vocab_size, hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(path)
    pre = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": image_size},
           "crop_size": {"height": image_size, "width": image_size},
           "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return path
