"""The embedded default model: a bundle of fp16 weights shipped inside the package, and its loader.

    pipe = load_default("image")                       # an OrbitPipeline with the 4D-aware model + its ε̄
    frames = pipe(image=load_image_prompt("cat.png", pipe.image_size), steps=25)

A bundle folder (``diffusion4d/weights/default/`` in the package; written by ``benchmarks/train_default_model.py``)::

    manifest.json            what is where, the orbit size, the encoders; how it was trained (steps, losses, times)
    vae/                     diffusers AutoencoderKL (config.json + fp16 safetensors)
    scheduler/               DDIMScheduler config (of image_3d; what bundles without per-model schedulers use)
    image_encoder/           the learned image encoder of the image and static models (models/image_tokens.py)
    text_3d/ text_4d/        UNets (diffusers format, fp16): 3D-aware base ε̄ and 4D-aware ε for text prompts
    image_3d/ image_4d/      … for image prompts (image_3d is also the static model's ε̄)
    static_4d/               … for static-3D prompts

Each UNet folder also holds the scheduler config its run trained with (``scheduler_config.json``): the runs may
differ in ``prediction_type`` (ε or v), and a 4D-aware model and its base ε̄ must agree on it (Eq. 3 mixes their
outputs linearly).
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from diffusion4d.diffusion.components import load_run_encoders, unet_class
from diffusion4d.diffusion.schedule import check_eq3_pair
from diffusion4d.io import write_json_atomic
from diffusion4d.models.image_tokens import LEARNED, LearnedImageEncoder
from diffusion4d.pipelines.orbit import PAPER_GUIDANCE, OrbitPipeline

#: condition → (the 4D-aware model's folder, its 3D-aware base's folder) in a bundle
MODELS = {"text": ("text_4d", "text_3d"), "image": ("image_4d", "image_3d"), "static": ("static_4d", "image_3d")}
RECIPE = "python benchmarks/train_default_model.py --out DIR (then copy DIR/default/ to src/diffusion4d/weights/)"
#: the bundle layout this code writes; it reads every format in READ_FORMATS. 2: a model may take cameras (its
#: config's camera_embedding) and carries its own noise schedule; format 1 bundles load unchanged.
BUNDLE_FORMAT = 2
#: the largest weight file write_bundle writes: a call to the lent GPU brings back files of ≤ 16 MiB
MAX_FILE_BYTES = 15 * 2**20
READ_FORMATS = (1, 2)


def default_bundle_dir() -> Path:
    """Where the shipped bundle lives: ``diffusion4d/weights/default/`` inside the installed package."""
    return Path(str(resources.files("diffusion4d"))) / "weights" / "default"


def read_manifest(bundle: str | Path) -> dict:
    """The bundle's manifest.json, after checking its format and that every file it lists is there at its size."""
    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle}: no default model bundle here (manifest.json missing). The weights are "
                                f"made by the training recipe: {RECIPE}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found not in READ_FORMATS:
        raise ValueError(f"{path}: bundle format {found!r}; this version of diffusion4d reads formats "
                         f"{', '.join(map(str, READ_FORMATS))} (it writes {BUNDLE_FORMAT}). Retrain or update")
    for name, size in manifest.get("files", {}).items():
        file = bundle / name
        if not file.is_file():
            raise FileNotFoundError(f"{file}: listed in {path} but missing (an incomplete copy of the bundle?)")
        if file.stat().st_size != size:
            raise ValueError(f"{file}: {file.stat().st_size} bytes, but {path} lists {size} (a partial or "
                             "replaced file)")
    return manifest


def load_default(condition: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 bundle: str | Path | None = None, compile: bool = False) -> OrbitPipeline:
    """The default model for ``condition`` ("text" | "image" | "static") as an OrbitPipeline, with its 3D-aware
    base ε̄ for Eq. 3; ``bundle`` defaults to the one shipped in the package."""
    from diffusers import AutoencoderKL, DDIMScheduler

    if condition not in MODELS:
        raise ValueError(f"condition must be one of {sorted(MODELS)}; got {condition!r}")
    bundle = Path(bundle) if bundle is not None else default_bundle_dir()
    manifest = read_manifest(bundle)
    name, base = MODELS[condition]
    missing = [p for p in (name, base, "vae", "scheduler") if not (bundle / p / _config_name(p)).is_file()]
    if missing:
        raise FileNotFoundError(f"{bundle}: incomplete default model bundle, missing {missing}; re-run {RECIPE}")
    kind = "text" if condition == "text" else "image"
    w1, w2 = bundle_guidance(manifest, condition)
    # stored in fp16; loaded straight into ``dtype`` (float32 on a CPU)
    unet = unet_class(kind).from_pretrained(bundle / name, torch_dtype=dtype).to(device).eval()
    base_unet = unet_class(kind).from_pretrained(bundle / base, torch_dtype=dtype).to(device).eval()
    info = {"text_encoder": manifest["text_encoder"]} if kind == "text" else {"image_encoder": LEARNED}
    scheduler, base_scheduler = (DDIMScheduler.from_pretrained(scheduler_dir(bundle, p)) for p in (name, base))
    check_eq3_pair(scheduler.config, base_scheduler.config, f"{bundle}: {name}", base)
    return OrbitPipeline(
        unet=unet, vae=AutoencoderKL.from_pretrained(bundle / "vae", torch_dtype=dtype).to(device).eval(),
        scheduler=scheduler,
        encoders=load_run_encoders(bundle, info, device, dtype), condition=condition,
        num_frames=manifest["num_frames"], image_size=manifest["image_size"], base_unet=base_unet, device=device,
        dtype=dtype, compile=compile, w1=w1, w2=w2,
    )


def bundle_guidance(manifest: dict, condition: str | None = None) -> tuple[float, float]:
    """(w1, w2) of Eq. 3 that a bundle's ``condition`` model samples with by default: its manifest's ``guidance``
    (chosen by measuring, e.g. `bench_default_quality.py --w1`), else the paper's 7.0 and 0.5; a condition's own
    ``models[condition]["guidance"]`` overrides either weight (each condition's model is trained apart, so the
    weight that scores best differs between them)."""
    guidance = dict(manifest.get("guidance", {}))
    if condition is not None:
        guidance.update(manifest.get("models", {}).get(condition, {}).get("guidance", {}))
    w1, w2 = float(guidance.get("w1", PAPER_GUIDANCE[0])), float(guidance.get("w2", PAPER_GUIDANCE[1]))
    if not (np.isfinite(w1) and np.isfinite(w2)):
        raise ValueError(f"manifest guidance must be finite numbers; got w1={w1}, w2={w2}")
    return w1, w2


def scheduler_dir(bundle: Path, name: str) -> Path:
    """The folder with the scheduler config model ``name`` trained with: its own folder, or in bundles written
    before the models carried one, the shared ``scheduler/``."""
    own = bundle / name
    return own if (own / "scheduler_config.json").is_file() else bundle / "scheduler"


def _config_name(folder: str) -> str:
    return "scheduler_config.json" if folder == "scheduler" else "config.json"


def write_bundle(out: str | Path, runs: dict[str, str | Path], vae_dir: str | Path, training: dict,
                 guidance: tuple[float, float] = PAPER_GUIDANCE,
                 condition_guidance: dict[str, dict[str, float]] | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> Path:
    """Write a bundle from trained runs: ``runs`` maps each folder name of ``MODELS`` to its training run (the
    image_3d run holds the learned image encoder); every weight is stored in fp16; ``guidance`` (w1, w2) is what
    the bundle's models sample with by default, and ``condition_guidance`` a condition's own overrides of it (see
    `bundle_guidance`). A UNet above ``max_file_bytes`` is sharded (diffusers' index + shards), so that no file
    exceeds what one device call brings back. Returns the bundle folder."""
    from diffusers import AutoencoderKL, DDIMScheduler

    out = Path(out)
    needed = sorted({p for pair in MODELS.values() for p in pair})
    if sorted(runs) != needed:
        raise ValueError(f"write_bundle needs runs for {needed}; got {sorted(runs)}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    infos = {name: json.loads((Path(run) / "run.json").read_text()) for name, run in runs.items()}
    for name, run in runs.items():
        kind = "text" if infos[name]["condition"] == "text" else "image"
        unet_class(kind).from_pretrained(Path(run) / "unet").half().save_pretrained(tmp / name,
                                                                                   max_shard_size=max_file_bytes)
        DDIMScheduler.from_pretrained(Path(run) / "scheduler").save_pretrained(tmp / name)  # its prediction type
    AutoencoderKL.from_pretrained(vae_dir).half().save_pretrained(tmp / "vae")
    shutil.copytree(Path(runs["image_3d"]) / "scheduler", tmp / "scheduler")
    LearnedImageEncoder.from_pretrained(Path(runs["image_3d"]) / "image_encoder").half().save_pretrained(
        tmp / "image_encoder")
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    models = {c: {"model": m, "base": b} for c, (m, b) in MODELS.items()}
    for condition, weights in (condition_guidance or {}).items():
        models[condition]["guidance"] = dict(weights)
    write_json_atomic(tmp / "manifest.json", {
        "format": BUNDLE_FORMAT, "num_frames": infos["text_4d"]["num_frames"],
        "image_size": infos["text_4d"]["image_size"],
        "text_encoder": infos["text_4d"]["text_encoder"], "image_encoder": LEARNED,
        "models": models,
        "guidance": {"w1": float(guidance[0]), "w2": float(guidance[1])},
        "bytes": sum(files.values()), "files": files, "training": training,
    })
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
