"""benchmarks/bench_streaming.py's full preset without training the 1.41 B model: its synthetic shards have the full
UNet's latent shape, its random text encoder has the full UNet's cross-attention width and loads through the package's
loader, and the UNet (on the meta device: nothing allocated) takes both."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_streaming

    return bench_streaming


def test_full_shards_and_text_encoder_fit_the_full_unet(bench, tmp_path):
    from safetensors import safe_open

    from diffusion4d.models.checks import condition_checks_skipped
    from diffusion4d.models.conditions import Condition
    from diffusion4d.models.encoders import load_text_encoder
    from diffusion4d.models.presets import build_unet

    data = bench.write_synthetic_shards(tmp_path / "data", 2, 2, "full")
    shard = next(data.glob("*.safetensors"))
    assert shard.stat().st_size / 2 == pytest.approx(1.57e6, rel=0.01)  # the docstring's bytes per sample
    with safe_open(str(shard), framework="pt") as f:
        video, front = f.get_tensor("video"), f.get_tensor("front")
    assert tuple(video.shape) == (2, 4, 24, 32, 32) and tuple(front.shape) == (2, 3, 256, 256)

    folder = bench.text_encoder_for("full", tmp_path)
    assert bench.text_encoder_for("full", tmp_path) == folder  # made once
    states = load_text_encoder(folder)(["a synthetic asset of kind 1"])
    assert tuple(states.shape) == (1, 77, bench.FULL_TEXT_WIDTH)

    with torch.device("meta"):
        unet = build_unet("text", "full")
    assert unet.config.cross_attention_dim == bench.FULL_TEXT_WIDTH and unet.config.sample_size == video.shape[-1]
    cond = Condition(encoder_hidden_states=states, motion=torch.rand(1), motion_keep=torch.ones(1))
    unet._check_condition(cond, 1, video.shape[2])  # the checks the first training step runs (they read values)
    with pytest.raises(ValueError):
        unet._check_condition(Condition(encoder_hidden_states=states[..., :384], motion=torch.rand(1),
                                        motion_keep=torch.ones(1)), 1, video.shape[2])
    with condition_checks_skipped(unet):
        out = unet(video[:1].to("meta"), torch.zeros(1, dtype=torch.long, device="meta"), cond.to("meta"))
    assert out.shape == video[:1].shape
