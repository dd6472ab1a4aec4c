"""Training (bf16 mixed precision) and sampling on CUDA with tiny models — run on the lent GPU."""

import json

import numpy as np
import pytest
import torch

from diffusion4d.data.curate import CurationConfig, curate
from test_curate_dataset import T, write_orbit

pytestmark = pytest.mark.gpu


def test_bf16_training_and_cuda_sampling(tmp_path):
    from diffusion4d.diffusion.train import TrainConfig, train
    from diffusion4d.models.encoders import make_tiny_text_encoder
    from diffusion4d.pipelines.orbit import OrbitPipeline

    orbits = tmp_path / "orbits"
    write_orbit(orbits / "mover", lambda i: 20 if i == 0 else 36)
    write_orbit(orbits / "slider", lambda i: 16 + 2 * i)
    curate(orbits, CurationConfig(s_low=-1.0, s_high=1.0, val_fraction=0.0), progress=False)
    make_tiny_text_encoder(tmp_path / "text")
    config = TrainConfig(data=str(orbits), out=str(tmp_path / "run"), condition="text", preset="tiny", max_steps=3,
                         batch_size=2, log_every=1, text_encoder=str(tmp_path / "text"), mixed_precision="bf16",
                         lr=1e-4)
    run = train(config, progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    for dtype in (torch.float32, torch.bfloat16):
        pipe = OrbitPipeline.from_run(run, device="cuda", dtype=dtype)
        frames = pipe(prompt="a square", steps=3, w2=0.0, seed=0, progress=False)
        assert frames.shape == (T, 64, 64, 3) and frames.dtype == np.uint8
    # With the 3D-aware base (w2 > 0) the pipeline's CUDA-graph path must match the plain sampler.
    from diffusion4d.diffusion.sampling import sample_latents

    pipe = OrbitPipeline.from_run(run, base=run, device="cuda")
    cond, uncond, base_cond = (c.to("cuda") for c in pipe.conditions("a square", None, None, 0.02))
    kwargs = dict(latent_shape=(4, T, 8, 8), seeds=[3], base_model=pipe.base_unet, base_cond=base_cond, w1=7.0,
                  w2=0.5, steps=4, device="cuda", progress=False)
    plain = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, **kwargs)
    fast = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, speedups=True, **kwargs)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    frames = pipe(prompt="a square", steps=4, seed=3, progress=False)
    assert frames.shape == (T, 64, 64, 3)
