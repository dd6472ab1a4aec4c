"""Training (bf16 mixed precision) and sampling on CUDA with tiny models — run on the lent GPU."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffusion4d.data.curate import CurationConfig, curate
from test_curate_dataset import T, write_orbit

pytestmark = pytest.mark.gpu


def _tiny_text_world(tmp_path):
    from tiny_models import make_tiny_text_encoder

    orbits = tmp_path / "orbits"
    write_orbit(orbits / "mover", lambda i: 20 if i == 0 else 36)
    write_orbit(orbits / "slider", lambda i: 16 + 2 * i)
    curate(orbits, CurationConfig(s_low=-1.0, s_high=1.0, val_fraction=0.0), progress=False)
    make_tiny_text_encoder(tmp_path / "text")
    return orbits, tmp_path / "text"


def test_bf16_training_and_cuda_sampling(tmp_path):
    from diffusion4d.diffusion.train import TrainConfig, train
    from diffusion4d.pipelines.orbit import OrbitPipeline

    orbits, text = _tiny_text_world(tmp_path)
    config = TrainConfig(data=str(orbits), out=str(tmp_path / "run"), condition="text", preset="tiny", max_steps=3,
                         batch_size=2, log_every=1, text_encoder=str(text), mixed_precision="bf16", lr=1e-4)
    run = train(config, progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    for dtype in (torch.float32, torch.bfloat16):
        pipe = OrbitPipeline.from_run(run, device="cuda", dtype=dtype)
        frames = pipe(prompt="a square", steps=3, w2=0.0, seed=0, progress=False)
        assert frames.shape == (T, 64, 64, 3) and frames.dtype == np.uint8
    # With the 3D-aware base (w2 > 0) the pipeline's CUDA-graph path must match the plain sampler.
    from diffusion4d.diffusion.sampling import SamplerSettings, sample_latents

    pipe = OrbitPipeline.from_run(run, base=run, device="cuda")
    cond, uncond, base_cond = (c.to("cuda") for c in pipe.conditions("a square", None, None, 0.02))
    kwargs = dict(latent_shape=(4, T, 8, 8), seeds=[3], base_model=pipe.base_unet, base_cond=base_cond)
    settings = SamplerSettings(w1=7.0, w2=0.5, steps=4, device="cuda", progress=False)
    plain = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, settings=settings, **kwargs)
    fast = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, settings=replace(settings, speedups=True), **kwargs)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    frames = pipe(prompt="a square", steps=4, seed=3, progress=False)
    assert frames.shape == (T, 64, 64, 3)


def _syncs_during_training(config) -> int:
    """How many synchronising CUDA calls one `train` call makes (torch's sync debug mode, as warnings)."""
    import warnings

    from diffusion4d.diffusion.train import train

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(config, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_steady_state_training_steps_never_synchronise(tmp_path, cuda_graph):
    """8 more steps (no log, no checkpoint in between) must add no host synchronisation at all. The captions come
    from pre-computed text states, as in the recipe: with a live transformers text encoder the first H200 run of this
    test counted one sync per step (most likely the encoder's attention-mask checks; not traced)."""
    from diffusion4d.diffusion.text_states import dataset_captions, write_text_states
    from diffusion4d.diffusion.train import TrainConfig

    orbits, text = _tiny_text_world(tmp_path)
    states = tmp_path / "states.safetensors"
    write_text_states(dataset_captions(orbits), str(text), states)
    counts = []
    for steps in (8, 16):
        config = TrainConfig(data=str(orbits), out=str(tmp_path / f"run{steps}"), condition="text", stage="4d",
                             preset="tiny", max_steps=steps, batch_size=2, log_every=steps, checkpoint_every=steps,
                             text_states=str(states), mixed_precision="bf16", lr=1e-4, cuda_graph=cuda_graph,
                             data_workers=0)  # the recipe's GPU settings
        counts.append(_syncs_during_training(config))
    assert counts[1] == counts[0], f"syncs: {counts[0]} in 8 steps, {counts[1]} in 16"


#: the default recipe's options since session 12: cameras in every step, v-prediction at zero terminal SNR
RECIPE_OPTIONS = dict(camera_embedding=True, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                      timestep_spacing="trailing")


@pytest.mark.parametrize("options", [{}, RECIPE_OPTIONS], ids=["sd-schedule", "recipe-options"])
def test_cuda_graph_training_follows_the_eager_loop(tmp_path, monkeypatch, options):
    """The graphed step trains like the eager one: identical warm-up steps, then losses of the same size (dropout
    masks differ after capture), the graph is captured once, and a resumed graphed run continues."""
    from diffusion4d.diffusion import graphed_step
    from diffusion4d.diffusion.train import TrainConfig, train

    captures = []
    real_capture = graphed_step.GraphedStep._capture
    monkeypatch.setattr(graphed_step.GraphedStep, "_capture",
                        lambda self, inputs: (captures.append(1), real_capture(self, inputs))[1])
    orbits, text = _tiny_text_world(tmp_path)
    curves = {}
    for graph in (False, True):
        config = TrainConfig(data=str(orbits), out=str(tmp_path / f"run_{graph}"), condition="text", preset="tiny",
                             max_steps=12, batch_size=2, log_every=1, checkpoint_every=6, text_encoder=str(text),
                             lr=1e-4, cuda_graph=graph, data_workers=0, **options)
        run = train(config, progress=False)
        curves[graph] = [json.loads(line)["loss"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert captures == [1]
    eager, graphed = np.array(curves[False]), np.array(curves[True])
    assert len(graphed) == 12 and np.isfinite(graphed).all()
    np.testing.assert_allclose(graphed[:3], eager[:3], rtol=1e-4)  # the eager warm-up steps
    assert np.abs(graphed[3:] / eager[3:] - 1).max() < 0.5, (eager, graphed)
    config.max_steps = 16
    train(config, resume=True, progress=False)  # from the step-12 checkpoint: warm-up, capture, replays again
    assert captures == [1, 1]
    resumed = [json.loads(line)["loss"] for line in (tmp_path / "run_True" / "loss.jsonl").read_text().splitlines()]
    assert len(resumed) == 16 and np.isfinite(resumed).all()
