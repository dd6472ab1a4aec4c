"""The noise schedule a run trains with, and where it comes from: the scheduler travels with the model (issue 22).

A pretrained base learned one forward process and one output parameterisation: I2VGen-XL, for one, predicts v
under a cosine schedule rescaled to zero terminal SNR. Fine-tuning it under another schedule would silently ask it
to unlearn them. So a run whose ``--init`` base carries a scheduler config (a diffusers pipeline's
``scheduler/scheduler_config.json``, a bundle model's ``scheduler_config.json`` beside its UNet, one of our runs'
``scheduler/``) trains with the base's schedule; a field set explicitly to something else is an error naming both,
never a silent choice. A run without a base keeps our defaults (Stable Diffusion's scaled-linear ε-prediction DDIM).

The models know nothing of this: the schedule lives in a diffusers ``DDIMScheduler`` config, saved in the run
(``RUN/scheduler``), which sampling reads back.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusion4d.diffusion.losses import PREDICTION_TYPES

SCHEDULER_CONFIG = "scheduler_config.json"
#: the TrainConfig fields (and flags) that name the schedule, and their values when neither a base nor the user
#: gives one: Stable Diffusion's schedule, what our runs trained with before bases carried theirs
DEFAULT_SCHEDULE = {"prediction_type": "epsilon", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
                    "rescale_betas_zero_snr": False, "timestep_spacing": "leading"}
#: the betas: taken from a base, never set by a flag (Stable Diffusion's range otherwise)
DEFAULT_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "trained_betas": None}
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")  # what DDIMScheduler.set_timesteps knows
#: what a 4D-aware model and its 3D-aware base must share: Eq. 3 adds their outputs at one z_t and t (the timestep
#: spacing is not among them: sampling steps both models through one scheduler's timesteps)
SHARED_BY_EQ3 = ("prediction_type", "num_train_timesteps", "beta_schedule", "rescale_betas_zero_snr", "beta_start",
                 "beta_end", "trained_betas")


def flag(field: str) -> str:
    """The command-line flag of a schedule field, for messages (``prediction_type`` → ``--prediction-type``)."""
    return "--" + field.replace("_", "-")


def find_scheduler_config(model: str | Path | None) -> Path | None:
    """The scheduler config a base model folder carries, or None: ``scheduler/`` first (diffusers pipelines, our
    runs), then beside the model's own config (bundle models, a UNet folder saved with its scheduler)."""
    if model is None:
        return None
    for candidate in (Path(model) / "scheduler" / SCHEDULER_CONFIG, Path(model) / SCHEDULER_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def read_schedule(path: str | Path) -> dict:
    """The schedule a scheduler config file defines: the DEFAULT_SCHEDULE fields and the betas.

    Read as JSON (no code runs) and completed as diffusers completes it when loading that base (its class defaults
    for the keys it omits), so the run trains under exactly the schedule the base was trained under. Anything that
    does not make a schedule our training supports is a ValueError naming the file.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable scheduler config ({exc})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a scheduler config is a JSON object, this holds a {type(values).__name__}")
    return schedule_of(values, path)


def schedule_of(values: dict, source: str | Path) -> dict:
    """The schedule of the scheduler config ``values`` (from the file or checkpoint ``source``, named in errors)."""
    from diffusers import DDIMScheduler

    _check_values(Path(source), values)
    try:  # the betas it names must make a schedule (an unknown beta_schedule, say, does not)
        config = DDIMScheduler.from_config(values).config
    except (TypeError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"{source}: not a usable noise schedule ({exc})") from None
    return {key: config[key] for key in (*DEFAULT_SCHEDULE, *DEFAULT_BETAS)}


def _check_values(path: Path, values: dict) -> None:
    """What diffusers would accept here but training cannot use, or would only fail on later (at sampling)."""
    problems = []
    prediction = values.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        problems.append(f"prediction_type {prediction!r} (training supports {', '.join(PREDICTION_TYPES)})")
    spacing = values.get("timestep_spacing", "leading")
    if spacing not in TIMESTEP_SPACINGS:
        problems.append(f"timestep_spacing {spacing!r} (one of {', '.join(TIMESTEP_SPACINGS)})")
    steps = values.get("num_train_timesteps", 1000)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        problems.append(f"num_train_timesteps {steps!r} (an integer ≥ 2)")
    if not isinstance(values.get("rescale_betas_zero_snr", False), bool):
        problems.append(f"rescale_betas_zero_snr {values['rescale_betas_zero_snr']!r} (true or false)")
    betas = values.get("trained_betas")
    if betas is not None and (not isinstance(betas, list) or len(betas) != steps):
        problems.append(f"trained_betas must be a list of num_train_timesteps ({steps}) numbers")
    if problems:
        raise ValueError(f"{path}: not a usable noise schedule: " + "; ".join(problems))


def resolve_schedule(given: dict, base: dict | None = None, source: str | Path | None = None) -> dict:
    """The schedule to train with: ``base`` (from `read_schedule` of the file ``source``), else our defaults,
    under the ``given`` fields (None: not given). A given field that contradicts the base raises a ValueError
    naming the field, both values and the file: fine-tuning under another schedule than the base's would make it
    unlearn its parameterisation, which is never what an unset default should decide."""
    given = {key: value for key, value in given.items() if value is not None}
    if base is not None:
        conflicts = [f"{key} is {base[key]!r} there, {value!r} given ({flag(key)})"
                     for key, value in given.items() if value != base[key]]
        if conflicts:
            raise ValueError(f"the noise schedule given contradicts the one of {source}: " + "; ".join(conflicts)
                             + ". Leave these unset to train with it")
    schedule = {**DEFAULT_SCHEDULE, **DEFAULT_BETAS, **(base or {}), **given}
    check_zero_snr_prediction(schedule, source)
    return schedule


def check_zero_snr_prediction(schedule: dict, source: str | Path | None = None) -> None:
    """Zero terminal SNR needs v-prediction: at t = T the latent is pure noise, so an ε-prediction carries no
    information about the data there (and DDIM's x̂0 = (z − √(1−ᾱ) ε)/√ᾱ divides by zero)."""
    if schedule["rescale_betas_zero_snr"] and schedule["prediction_type"] != "v_prediction":
        where = f" (the schedule of {source})" if source else ""
        raise ValueError("--rescale-betas-zero-snr needs --prediction-type v_prediction" + where + ": at zero "
                         "terminal SNR an ε-prediction carries no information about the data at t = T")


def check_eq3_pair(model: dict, base: dict, model_name: str, base_name: str) -> None:
    """ValueError naming both unless the schedules (scheduler configs) of the 4D-aware ``model`` and its 3D-aware
    ``base`` agree on what Eq. 3 needs (`SHARED_BY_EQ3`): mixing an ε- with a v-prediction, or the outputs of two
    forward processes, gives a guided estimate of nothing."""
    if model["prediction_type"] != base["prediction_type"]:
        raise ValueError(f"{model_name} predicts {model['prediction_type']} but its 3D-aware base {base_name} "
                         f"predicts {base['prediction_type']}; Eq. 3 needs both to predict the same (retrain them "
                         "together)")
    differ = [f"{key} {model.get(key)!r} against {base.get(key)!r}" for key in SHARED_BY_EQ3
              if model.get(key) != base.get(key)]
    if differ:
        raise ValueError(f"{model_name} and its 3D-aware base {base_name} were trained under different noise "
                         f"schedules ({'; '.join(differ)}); Eq. 3 needs one")


def build_scheduler(schedule: dict):
    """The DDIMScheduler of a resolved schedule. What does not change what the model learns stays ours: no sample
    clipping (latents are not in [−1, 1]) and the last step to ᾱ_0, not to 1."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**schedule, clip_sample=False, set_alpha_to_one=False)
