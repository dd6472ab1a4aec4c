"""The scheduler travels with the model (issue 22, item 2): `train --init BASE` takes the base's noise schedule, an
explicit field that contradicts it is refused naming both, the resolved schedule is saved in the run and sampling
reads it back; without a base the defaults are unchanged. Tiny models on the CPU."""

import json
from dataclasses import replace

import pytest
import torch
from diffusers import DDIMScheduler, UNet3DConditionModel

from diffusion4d.cli import main as cli_main
from diffusion4d.diffusion.schedule import (
    DEFAULT_BETAS,
    DEFAULT_SCHEDULE,
    build_scheduler,
    find_scheduler_config,
    read_schedule,
    resolve_schedule,
)
from diffusion4d.diffusion.train import TrainConfig, noise_scheduler, run_schedule, train
from diffusion4d.models import PRESETS
from diffusion4d.pipelines.orbit import OrbitPipeline
from orbit_fixtures import rendered_orbits

SCHEDULE_KEYS = (*DEFAULT_SCHEDULE, *DEFAULT_BETAS)
#: I2VGen-XL's kind of schedule: v-prediction, a cosine schedule rescaled to zero terminal SNR, trailing steps
I2VGEN_LIKE = {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.00085,
               "beta_end": 0.012, "clip_sample": False, "num_train_timesteps": 1000,
               "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
#: ModelScope-T2V's kind: Stable Diffusion's scaled-linear ε-prediction
SD_LIKE = {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
           "prediction_type": "epsilon", "timestep_spacing": "leading"}
#: another class and betas, keys left out (diffusers' defaults fill them): linear 1e-4 … 0.02 over 500 steps
LINEAR_PNDM = {"_class_name": "PNDMScheduler", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
               "num_train_timesteps": 500, "skip_prk_steps": True}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tiny_models import make_tiny_text_encoder

    root = tmp_path_factory.mktemp("world")
    rendered_orbits(root, count=2, seed=5, frames=4, size=64)
    make_tiny_text_encoder(root / "text_encoder")
    torch.manual_seed(0)
    UNet3DConditionModel(**PRESETS["text"]["tiny"]).save_pretrained(root / "unet")  # a tiny ModelScope-T2V base
    return root


def _pipeline_base(world, folder, scheduler: dict | str):
    """A diffusers pipeline folder: unet/ and scheduler/scheduler_config.json (``scheduler`` a dict or raw text)."""
    import shutil

    shutil.copytree(world / "unet", folder / "unet")
    (folder / "scheduler").mkdir()
    text = scheduler if isinstance(scheduler, str) else json.dumps(scheduler)
    (folder / "scheduler" / "scheduler_config.json").write_text(text)
    return folder


def _unet_folder_base(world, folder, scheduler: dict):
    """A UNet folder with its scheduler config beside config.json (how our bundles store each model)."""
    import shutil

    shutil.copytree(world / "unet", folder)
    (folder / "scheduler_config.json").write_text(json.dumps(scheduler))
    return folder


def _config(world, out, **kw) -> TrainConfig:
    base = dict(data=str(world / "orbits"), out=str(out), condition="text", preset="tiny", max_steps=1,
                batch_size=1, checkpoint_every=1, log_every=1, text_encoder=str(world / "text_encoder"),
                data_workers=0)
    return TrainConfig(**{**base, **kw})


def _saved(run) -> dict:
    return json.loads((run / "scheduler" / "scheduler_config.json").read_text())


def _public(scheduler) -> dict:
    """A scheduler's config without diffusers' bookkeeping (``_use_default_values`` and the like)."""
    return {key: value for key, value in scheduler.config.items() if not key.startswith("_")}


def _expected(config: dict) -> dict:
    """The schedule diffusers gives that config (its class defaults where it is silent)."""
    full = DDIMScheduler.from_config(config).config
    return {key: full[key] for key in SCHEDULE_KEYS}


@pytest.mark.parametrize("layout", ["pipeline", "unet_folder"])
def test_run_from_a_base_trains_and_saves_the_bases_schedule_and_sampling_reads_it(world, tmp_path, layout):
    make = _pipeline_base if layout == "pipeline" else _unet_folder_base
    base = make(world, tmp_path / "base", I2VGEN_LIKE)
    run = train(_config(world, tmp_path / "run", init=str(base)), progress=False)
    saved = _saved(run)
    assert {key: saved[key] for key in SCHEDULE_KEYS} == _expected(I2VGEN_LIKE)
    recorded = json.loads((run / "train_config.json").read_text())  # the resolved fields, not the unset ones
    assert {key: recorded[key] for key in DEFAULT_SCHEDULE} == {key: saved[key] for key in DEFAULT_SCHEDULE}
    pipe = OrbitPipeline.from_run(run)
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.config.rescale_betas_zero_snr
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, DDIMScheduler.from_config(I2VGEN_LIKE).alphas_cumprod)

    # stage 4d from this run: the run is the base now, and the same values given explicitly agree with it
    run4d = train(_config(world, tmp_path / "run4d", init=str(run), prediction_type="v_prediction",
                          timestep_spacing="trailing"), progress=False)
    assert _saved(run4d) == saved


@pytest.mark.parametrize("config", [SD_LIKE, LINEAR_PNDM], ids=["sd", "linear_pndm"])
def test_each_kind_of_base_schedule_is_read_as_diffusers_reads_it(tmp_path, config):
    base = _pipeline_base_files_only(tmp_path, config)
    source = find_scheduler_config(base)
    assert source == base / "scheduler" / "scheduler_config.json"
    schedule = resolve_schedule({key: None for key in DEFAULT_SCHEDULE}, read_schedule(source), source)
    assert schedule == _expected(config)
    built = build_scheduler(schedule)
    torch.testing.assert_close(built.alphas_cumprod, DDIMScheduler.from_config(config).alphas_cumprod)
    assert not built.config.clip_sample  # latents are not in [−1, 1], whatever the base's class default


def _pipeline_base_files_only(tmp_path, scheduler: dict):
    (tmp_path / "base" / "scheduler").mkdir(parents=True)
    (tmp_path / "base" / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return tmp_path / "base"


def test_a_contradicting_explicit_field_is_refused_naming_both(world, tmp_path, capsys):
    base = _pipeline_base(world, tmp_path / "base", I2VGEN_LIKE)
    file = base / "scheduler" / "scheduler_config.json"
    with pytest.raises(ValueError) as exc:
        train(_config(world, tmp_path / "run", init=str(base), prediction_type="epsilon",
                      beta_schedule="squaredcos_cap_v2"), progress=False)
    message = str(exc.value)
    assert str(file) in message and "prediction_type is 'v_prediction' there, 'epsilon' given (--prediction-type)" \
        in message
    assert "beta_schedule" not in message  # the field that agrees is not a conflict
    assert not (tmp_path / "run").exists()  # refused before anything is written

    assert cli_main(["-q", "train", "--data", str(world / "orbits"), "--out", str(tmp_path / "cli"), "--condition",
                     "text", "--text-encoder", str(world / "text_encoder"), "--init", str(base),
                     "--timestep-spacing", "leading"]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and "timestep_spacing is 'trailing' there, 'leading' given (--timestep-spacing)" in err


def test_without_a_base_the_defaults_are_unchanged(world, tmp_path):
    config = _config(world, tmp_path / "run")
    schedule = run_schedule(config, resume=False)
    assert schedule == {**DEFAULT_SCHEDULE, **DEFAULT_BETAS}
    before = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                           prediction_type="epsilon", rescale_betas_zero_snr=False, timestep_spacing="leading",
                           clip_sample=False, set_alpha_to_one=False)  # what train built before bases had a say
    assert _public(build_scheduler(schedule)) == _public(before)
    assert _public(noise_scheduler(config)) == _public(before)
    # an --init folder without a scheduler config (e.g. a bare UNet folder): the defaults and the given fields
    given = replace(config, init=str(world / "unet"), prediction_type="v_prediction")
    assert run_schedule(given, resume=False) == {**DEFAULT_SCHEDULE, **DEFAULT_BETAS, "prediction_type": "v_prediction"}
    with pytest.raises(ValueError, match="needs --prediction-type v_prediction"):
        run_schedule(replace(config, rescale_betas_zero_snr=True), resume=False)


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not a readable scheduler config"),
    ("[1, 2]", "a scheduler config is a JSON object"),
    (json.dumps({**SD_LIKE, "beta_schedule": "sigmoid_like"}), "not a usable noise schedule"),
    (json.dumps({**SD_LIKE, "prediction_type": "sample"}), "prediction_type 'sample'"),
    (json.dumps({**SD_LIKE, "num_train_timesteps": "1000"}), "num_train_timesteps '1000'"),
    (json.dumps({**SD_LIKE, "rescale_betas_zero_snr": True}), "needs --prediction-type v_prediction"),
], ids=["json", "not_object", "beta_schedule", "prediction", "timesteps", "zero_snr_epsilon"])
def test_a_malformed_base_scheduler_config_is_an_error_naming_the_file(world, tmp_path, text, problem):
    base = _pipeline_base(world, tmp_path / "base", text)
    with pytest.raises(ValueError, match=problem) as exc:
        train(_config(world, tmp_path / "run", init=str(base)), progress=False)
    assert str(base / "scheduler" / "scheduler_config.json") in str(exc.value)
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_keeps_the_schedule_it_saved(world, tmp_path):
    base = _unet_folder_base(world, tmp_path / "base", I2VGEN_LIKE)
    config = _config(world, tmp_path / "run", init=str(base))
    run = train(config, progress=False)  # one step, checkpointed
    other = _unet_folder_base(world, tmp_path / "other", SD_LIKE)
    # the base changed since (or another was named): the checkpoint was trained under the run's own schedule
    resumed = run_schedule(replace(config, init=str(other)), resume=True)
    assert {key: resumed[key] for key in SCHEDULE_KEYS} == _expected(I2VGEN_LIKE)
    with pytest.raises(ValueError, match="prediction_type is 'v_prediction' there, 'epsilon' given") as exc:
        train(replace(config, max_steps=2, prediction_type="epsilon"), resume=True, progress=False)
    assert str(run / "scheduler" / "scheduler_config.json") in str(exc.value)
    before = _saved(run)
    train(replace(config, max_steps=2), resume=True, progress=False)
    assert _saved(run) == before
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    # without resume the run starts afresh from its base: the base's schedule again
    assert run_schedule(replace(config, init=str(other)), resume=False)["prediction_type"] == "epsilon"


def test_sampling_refuses_a_3d_aware_base_of_another_schedule_naming_both(world, tmp_path):
    """Eq. 3 adds the outputs of the 4D-aware model and its base at one z_t and t: `from_run(base=…)` refuses a base
    that predicts otherwise or was trained under another forward process, naming both; an agreeing one loads."""
    import shutil

    run = train(_config(world, tmp_path / "run"), progress=False)  # our default: ε, scaled-linear
    same = shutil.copytree(run, tmp_path / "same")
    assert OrbitPipeline.from_run(run, base=same).base_unet is not None
    v_base = _pipeline_base(world, tmp_path / "v", I2VGEN_LIKE)
    with pytest.raises(ValueError, match=rf"{run} predicts epsilon but its 3D-aware base {v_base} predicts v_pred"):
        OrbitPipeline.from_run(run, base=v_base)
    linear = _pipeline_base(world, tmp_path / "linear", {**SD_LIKE, "beta_schedule": "linear", "beta_end": 0.02})
    with pytest.raises(ValueError, match=r"different noise schedules \(beta_schedule 'scaled_linear' against "
                                         r"'linear'; beta_end 0.012 against 0.02\)"):
        OrbitPipeline.from_run(run, base=linear)
