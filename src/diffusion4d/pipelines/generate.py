"""One call from a prompt to a 4D asset: V̄ (static orbit) → V (4D orbit, Eq. 3) → coarse-to-fine fit → export.

    result = generate(Prompt.one_of(image="cat.png"), "out/cat", GenerateSettings(preset="cpu"))
    print(result.summary())

The stages, each a function of explicit values (``plan_stages`` binds them to one run's values)::

    stage_static (prompt, models, sampling, static/, orbit/) → static/     V̄, or V̄′ from a 3D-aware base model
    stage_orbit  (prompt, models, sampling, static/, orbit/) → orbit/      V, 4D-aware with 3D-aware CFG (Eq. 3)
    stage_fit    (orbit/, static/, asset4d/, fit options, resume) → asset4d/
    stage_export (asset4d/, viewer.html, fit options, title) → viewer.html

The output folder (each stage writes only its own part; ``stages.json`` marks the finished ones)::

    static/      V̄: the asset's rendered static orbit (asset prompts), the given one (static prompts), or V̄′
                 sampled from the image model's 3D-aware base (Sec. 3.4), given the image (image prompts) or V's
                 first view (text prompts: their V is sampled first); multi_static_frame{i}.png + static{i}.json
    orbit/       V: the 4D-aware model's orbit (official layout) + orbit.mp4 / orbit.gif
    asset4d/     the 4D Gaussians (asset.json, canonical/deformation .safetensors, ply/time_XX.ply, renders/*.mp4|gif,
                 checkpoint/ of the fit)
    viewer.html  the self-contained browser viewer of the asset
    timing.json  {"seconds": total, "stages": {stage: seconds}} (read by `diffusion4d evaluate`)
    stages.json  the run's inputs and its finished stages (written atomically after each stage)

A rerun with the same inputs resumes from the first unfinished stage (the fit from its last checkpoint); a folder
holding another run's inputs is refused unless ``overwrite`` (which deletes only the files listed above).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.diffusion.sampling import check_guidance_every
from diffusion4d.io import write_json_atomic
from diffusion4d.pipelines.orbit import OrbitPipeline, load_image_prompt, load_static_prompt, write_orbit
from diffusion4d.reconstruction.fit import DEFAULT_METHOD, PRESETS, FitConfig

STAGES = ("static", "orbit", "fit", "export")
#: the order they run in: a text prompt's V̄′ is sampled from V's first view (paper Sec. 3.4: "given the first-view
#: image I0 in V, we use the pretrained 3D-aware video diffusion model to generate V̄′"), so its V comes first
STAGE_ORDER = {"text": ("orbit", "static", "fit", "export")}
OUTPUTS = ("static", "orbit", "asset4d", "viewer.html", "timing.json", "stages.json")
CONDITION = {"text": "text", "image": "image", "asset": "static", "static": "static"}  # prompt kind → model
FIT_PRESET = {"cpu": "cpu", "gpu": "fast"}  # generate preset → reconstruction.fit.PRESETS key
#: DDIM steps per preset. cpu: far fewer than the paper's 50, for the 120 s budget on 2 cores: a small-preset
#: orbit (24 views at 128²) costs one UNet call per step for V̄′'s two CFG branches and one more for ε̄ in V's Eq. 3
#: (20 steps of V̄′ alone took 111 s on a shared, overloaded 2-core machine; not yet measured on an idle one)
SAMPLE_STEPS = {"cpu": 10, "gpu": 50}
#: k of `sample_latents(guidance_every=k)` per preset: Eq. 3's guidance branches every k-th step, their term reused
#: between. gpu: 4 — at 50 steps on 20 held-out assets the default models' orbits scored +0.05 dB (image and static)
#: against k = 1, and image → 4D with full-size UNets took 13.9 s against 17.1 s on an H200 (BENCHMARKS.md, session
#: 6). cpu: 1 — at its 10 steps, k = 2 cost 0.09 dB (image) and 0.31 dB (static) on 8 assets.
GUIDANCE_EVERY = {"cpu": 1, "gpu": 4}
#: the asset's orbit renders per preset: (times τ, views per turn). cpu: one turn at τ = 0.5, since each render of
#: the torch rasterizer at 128² costs a good part of a second on 2 cores; gpu: turns at τ = 0, 0.5, 1
RENDERS = {"cpu": ((0.5,), 36), "gpu": ((0.0, 0.5, 1.0), 36)}
FORMAT = "diffusion4d-generate/1"


# -- values ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Prompt:
    """The one prompt of a run. ``image``: the image prompt [3, S, S] in [−1, 1], once :func:`check_input` has
    loaded it."""
    kind: str  # text | image | asset | static
    value: str  # the text, or the input's path
    image: torch.Tensor | None = None

    @classmethod
    def one_of(cls, text: str | None = None, image: str | Path | None = None, asset: str | Path | None = None,
               static: str | Path | None = None) -> Prompt:
        """The one prompt given; ValueError when none or several are."""
        given = {k: v for k, v in (("text", text), ("image", image), ("asset", asset), ("static", static))
                 if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one prompt: --prompt TEXT, --image PNG, --asset GLB_OR_GLTF or "
                             f"--static ORBIT_DIR (got {len(given)}: {sorted(given) or 'none'})")
        (kind, value), = given.items()
        return cls(kind, str(value))

    @property
    def title(self) -> str:
        return f"Diffusion4D — {self.value if self.kind == 'text' else Path(self.value).name}"


@dataclass(frozen=True)
class GenerateSettings:
    """generate's options, one per flag of `diffusion4d generate`; None: the preset's default (the machine's, for
    ``preset`` and ``device``)."""
    motion: float = 0.02  # motion magnitude m
    seed: int = 0
    preset: str | None = None  # cpu (the fit's cpu preset) | gpu (its fast preset); default gpu on CUDA
    steps: int | None = None  # DDIM steps of both samplings (default SAMPLE_STEPS[preset])
    guidance_every: int | None = None  # k of `sample_latents` for both samplings (default GUIDANCE_EVERY[preset])
    method: str = DEFAULT_METHOD  # the fit's deformation field
    device: str | None = None
    bundle: str | Path | None = None  # the default model's folder (default: the one shipped in the package)
    lpips_weights: str | Path | None = None  # with lpips_backbone (both or neither): the fit's L1 + LPIPS
    lpips_backbone: str | Path | None = None  # (losses.perceptual_from_files) instead of L1 + D-SSIM
    lpips_net: str = "alex"
    overwrite: bool = False  # replace another run's outputs in ``out``
    progress: bool = True


@dataclass(frozen=True)
class Sampling:
    """How V̄′ and V are sampled."""
    motion: float
    seed: int
    steps: int
    guidance_every: int
    progress: bool


@dataclass(frozen=True)
class FitOptions:
    """How the 4D Gaussians are fitted and exported."""
    method: str
    config: FitConfig
    perceptual: object  # LPIPS (losses.perceptual_from_files), or None: L1 + D-SSIM
    device: str
    renders: tuple[tuple[float, ...], int]  # the asset's orbit renders: (times τ, views per turn)
    progress: bool


@dataclass(frozen=True)
class Folders:
    """Where a run's outputs go (the layout of the module docstring)."""
    out: Path

    @property
    def static(self) -> Path:
        return self.out / "static"

    @property
    def orbit(self) -> Path:
        return self.out / "orbit"

    @property
    def asset(self) -> Path:
        return self.out / "asset4d"

    @property
    def viewer(self) -> Path:
        return self.out / "viewer.html"

    @property
    def timing(self) -> Path:
        return self.out / "timing.json"

    @property
    def record(self) -> Path:
        return self.out / "stages.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a run's orbit models come from: a given pipeline, else a bundle folder; their orbits' shape."""
    pipeline: OrbitPipeline | None
    bundle: Path | None  # also for a text prompt's V̄′ beside a given text pipeline (then: the image model's base)
    record: str  # for stages.json: the bundle's path and manifest hash, or "(a given pipeline)"
    image_size: int
    num_frames: int
    trained_motion: dict = field(default_factory=dict)  # the training orbits' m: min, median, max (if recorded)

    @classmethod
    def find(cls, kind: str, bundle: str | Path | None, pipeline: OrbitPipeline | None) -> ModelSource:
        """``pipeline`` (which must take ``kind`` prompts) if given, else the bundle (default: the shipped one),
        whose manifest is read now so that a missing bundle fails before anything is written."""
        if pipeline is not None:
            if pipeline.condition != CONDITION[kind]:
                raise ValueError(f"the given pipeline takes {pipeline.condition} prompts, not {kind}")
            return cls(pipeline, bundle, "(a given pipeline)", pipeline.image_size, pipeline.num_frames)
        from diffusion4d.pipelines.default import default_bundle_dir, read_manifest

        bundle = Path(bundle) if bundle is not None else default_bundle_dir()
        manifest = read_manifest(bundle)
        trained_motion = manifest.get("training", {}).get("data", {}).get("motion", {})
        # the manifest changes with every training call (steps, losses): a retrained bundle at the same path, as a
        # package update ships, is other inputs, and a rerun must not resume on the old model's orbits
        record = f"{bundle.resolve()} (manifest sha256 {_sha256(bundle / 'manifest.json')[:16]})"
        return cls(None, bundle, record, manifest["image_size"], manifest["num_frames"], trained_motion)

    def motion_warning(self, motion: float) -> str | None:
        """Why ``motion`` may not be followed, or None: a request outside the training orbits' range of m (above it,
        the default model's samples moved less than at 0.04: BENCHMARKS.md, issue 21, session 19)."""
        low, high = self.trained_motion.get("min"), self.trained_motion.get("max")
        if low is None or high is None or low <= motion <= high:
            return None
        return (f"motion {motion:g} lies outside the m of every orbit the model trained on ({low:.4f}–{high:.4f}, "
                f"median {self.trained_motion.get('median', float('nan')):.4f}); its motion may not follow the "
                "request (above that range, measured samples moved less, not more)")


class Models:
    """The orbit models of a run, each loaded on first use (a run resumed past both samplings loads none): the
    prompt's own model and, for a text prompt's V̄′, the image model's 3D-aware base."""

    def __init__(self, source: ModelSource, condition: str, device: str, guidance_every: int,
                 log: Callable[[str], None]):
        self.source, self.condition, self.device, self.guidance_every, self.log = (source, condition, device,
                                                                                  guidance_every, log)
        self._own = source.pipeline

    @property
    def image_size(self) -> int:
        return self.source.image_size

    @property
    def num_frames(self) -> int:
        return self.source.num_frames

    def for_prompt(self) -> OrbitPipeline:
        if self._own is None:
            self._own = self._load(self.condition)
        self._own.guidance_every = self.guidance_every
        return self._own

    def image_model(self) -> OrbitPipeline | None:
        """An image model (for its 3D-aware base ε̄): the prompt's own, or else the bundle's; None when neither
        exists (a given text pipeline without a bundle)."""
        if self._own is not None and self._own.condition == "image":
            return self.for_prompt()
        if self.source.bundle is None:
            return None
        return self._load("image")

    def _load(self, condition: str) -> OrbitPipeline:
        from diffusion4d.pipelines.default import load_default

        start = time.perf_counter()
        pipe = load_default(condition, device=self.device, bundle=self.source.bundle)
        self.log(f"  loaded the default {condition} model in {time.perf_counter() - start:.1f} s")
        pipe.guidance_every = self.guidance_every
        return pipe


@dataclass
class GenerateResult:
    out: Path
    orbit: Path  # V, official layout
    static: Path  # V̄ or V̄′
    asset: Path  # Asset4D folder
    viewer: Path
    timing: Path
    stages: dict[str, float]  # seconds per stage (from the run that finished it)
    resumed: list[str] = field(default_factory=list)  # stages finished by an earlier run, skipped now

    @property
    def seconds(self) -> float:
        return float(sum(self.stages.values()))

    def summary(self) -> str:
        times = ", ".join(f"{k} {v:.1f} s" + (" (earlier run)" if k in self.resumed else "")
                          for k, v in self.stages.items())
        plys = sorted((self.asset / "ply").glob("time_*.ply"))
        return "\n".join([
            f"4D asset written to {self.out.resolve()} in {self.seconds:.1f} s ({times})",
            f"  orbit V        {self.orbit}/multi_frame*.png, orbit.mp4, orbit.gif",
            f"  static orbit   {self.static}/multi_static_frame*.png",
            f"  4D Gaussians   {self.asset}/asset.json, canonical.safetensors, deformation.safetensors",
            f"  per-time PLY   {self.asset}/ply/ ({len(plys)} files)",
            f"  renders        {self.asset}/renders/orbit_t*.mp4|gif",
            f"  viewer         {self.viewer} (open it in a browser)",
            f"  timing         {self.timing}",
        ])


def _printer(progress: bool) -> Callable[[str], None]:
    return (lambda message: print(message, flush=True)) if progress else (lambda message: None)


# -- inputs ------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_input(prompt: Prompt, image_size: int, num_frames: int) -> tuple[Prompt, dict]:
    """Load the prompt once to refuse bad input before anything is written: (the prompt, with its image loaded for
    an image prompt; its record for stages.json)."""
    if prompt.kind == "text":
        return prompt, {"kind": prompt.kind, "text": prompt.value}
    path = Path(prompt.value)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {'folder' if prompt.kind == 'static' else 'file'}")
    if prompt.kind == "image":
        prompt = replace(prompt, image=load_image_prompt(path, image_size))
    elif prompt.kind == "asset":
        from diffusion4d.assets.gltf import load_gltf

        load_gltf(path)  # AssetError (a ValueError) names the file and the problem
    else:
        load_static_prompt(path, image_size, num_frames)
    record = {"kind": prompt.kind, "path": str(path.resolve())}
    if path.is_file():
        record["sha256"] = _sha256(path)
    return prompt, record


def lpips_record(weights: str | Path, backbone: str | Path, net: str) -> dict:
    """The LPIPS files of the fit, for stages.json: the fitted asset depends on them, so a rerun with other ones
    is another run's inputs (and one without LPIPS keeps the record of runs made before the fit could use it)."""
    return {"weights": str(Path(weights).resolve()), "backbone": str(Path(backbone).resolve()), "net": net}


def run_inputs(prompt_record: dict, sampling: Sampling, fit: FitOptions, models_record: str,
               settings: GenerateSettings) -> dict:
    """What a resumed run must share with the run that wrote the folder (stages.json's "inputs")."""
    inputs = {**prompt_record, "motion": float(sampling.motion), "seed": int(sampling.seed),
              "steps": int(sampling.steps),
              # k = 1 unrecorded: runs made before guidance reuse existed keep resuming
              **({"guidance_every": sampling.guidance_every} if sampling.guidance_every != 1 else {}),
              "method": fit.method, "fit": fit.config.to_json(), "bundle": models_record}
    if fit.perceptual is not None:
        inputs["lpips"] = lpips_record(settings.lpips_weights, settings.lpips_backbone, settings.lpips_net)
    return inputs


class OtherRunError(ValueError):
    """The output folder ``out`` holds a generate run whose inputs differ in ``changed``."""

    def __init__(self, out: Path, changed: list[str]):
        self.out, self.changed = out, changed
        super().__init__(f"{out}: holds a generate run of other inputs (differing: {', '.join(changed)}); "
                         "use --overwrite to replace it, or another --out")


def prepare_out(out: Path, inputs: dict, overwrite: bool) -> dict:
    """Create ``out`` or take up a resumable run of the same inputs; returns the stages record."""
    record_path = out / "stages.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.exists() and overwrite:
        for name in OUTPUTS:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            earlier = record["inputs"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{record_path}: not a generate record; use --overwrite or another --out") from None
        if earlier != inputs:
            changed = sorted(k for k in set(earlier) | set(inputs) if earlier.get(k) != inputs.get(k))
            raise OtherRunError(out, changed)
        return record
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty (and not a generate run); use --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "inputs": inputs, "done": {}}
    write_json_atomic(record_path, record)
    return record


# -- stages ------------------------------------------------------------------------------------------------------


def _default_cameras(T: int, size: int) -> tuple[np.ndarray, float, float]:
    return cameras.orbit_camera_to_world(T), *cameras.fov_xy(cameras.DEFAULT_FOV_DEG, size, size)


def write_static_orbit(frames: np.ndarray, folder: Path, c2w: np.ndarray, x_fov: float, y_fov: float) -> Path:
    """Frames [T, H, W, 3|4] uint8 → a static orbit (multi_static_frame{i}.png + static{i}.json) in ``folder``."""
    for i in range(len(frames)):
        layout.write_view(folder, layout.STATIC, i, frames[i], c2w[i], x_fov, y_fov)
    return folder


def render_static_orbit(asset_path: Path, folder: Path, num_frames: int, size: int, progress: bool = True) -> Path:
    """The asset at τ0 from the T orbit cameras, with the project's renderer (the static-3D-to-4D input V̄)."""
    from diffusion4d.assets.gltf import load_gltf
    from diffusion4d.render import Renderer

    asset = load_gltf(asset_path)
    posed = asset.pose(float(asset.frame_times(num_frames)[0]))
    c2w, x_fov, y_fov = _default_cameras(num_frames, size)
    with Renderer(size, size) as renderer:
        frames = np.stack([renderer.render(posed, pose, x_fov, y_fov).rgba
                           for pose in tqdm(c2w, desc="render V̄", unit="view", disable=not progress, leave=False)])
    return write_static_orbit(frames, folder, c2w, x_fov, y_fov)


def procedural_image_prompt(folder: Path, size: int, frames: int) -> Path:
    """An image prompt without any input: the front view (τ0) of procedural asset 1 of seed 0 (a spinning top),
    rendered by the project's renderer into ``folder/prompt.png`` (the demo's and the benchmarks' prompt)."""
    from PIL import Image

    from diffusion4d.assets.procedural import write_procedural_dataset

    glb = write_procedural_dataset(folder / "assets", count=2, seed=0, progress=False)[1]
    render_static_orbit(glb, folder / "prompt_orbit", frames, size, progress=False)
    path = folder / "prompt.png"
    Image.open(layout.frame_path(folder / "prompt_orbit", layout.STATIC, 0)).save(path)
    return path


def copy_static_orbit(source: Path, folder: Path) -> Path:
    """A given static orbit (its static frames, or else its dynamic ones) → ``folder`` as a static orbit."""
    orbit = layout.read_static_orbit(source)
    return write_static_orbit(orbit.images, folder, orbit.c2w, orbit.x_fov, orbit.y_fov)


def _base_model_and_prompt(prompt: Prompt, models: Models, orbit_dir: Path) -> tuple[OrbitPipeline, dict]:
    """The 3D-aware base that samples V̄′, and its prompt: the image model's, given the image (image prompts) or
    V's first view in ``orbit_dir`` (text prompts); a given text pipeline without a bundle: its own, given the text."""
    if prompt.kind == "image":
        return models.for_prompt(), {"image": prompt.image}
    pipe = models.image_model()
    if pipe is None:
        return models.for_prompt(), {"prompt": prompt.value}
    return pipe, {"image": load_image_prompt(layout.frame_path(orbit_dir, layout.DYNAMIC, 0), pipe.image_size)}


def stage_static(prompt: Prompt, models: Models, sampling: Sampling, static_dir: Path, orbit_dir: Path) -> Path:
    """V̄ into ``static_dir``: rendered (asset), copied (static), or V̄′ from a 3D-aware base model (image and text;
    a text prompt's from V's first view in ``orbit_dir``: it runs after the orbit stage)."""
    if prompt.kind == "asset":
        return render_static_orbit(Path(prompt.value), static_dir, models.num_frames, models.image_size,
                                   sampling.progress)
    if prompt.kind == "static":
        return copy_static_orbit(Path(prompt.value), static_dir)
    pipe, conditioning = _base_model_and_prompt(prompt, models, orbit_dir)
    frames = pipe.sample_base(**conditioning, steps=sampling.steps, seed=sampling.seed, progress=sampling.progress)
    return write_static_orbit(frames, static_dir, *_default_cameras(pipe.num_frames, pipe.image_size))


def stage_orbit(prompt: Prompt, models: Models, sampling: Sampling, static_dir: Path, orbit_dir: Path) -> Path:
    """V into ``orbit_dir``: the 4D-aware model with 3D-aware CFG (Eq. 3), on the cameras of V̄ in ``static_dir``
    (text prompts: the default ones, which V̄′ then shares)."""
    pipe = models.for_prompt()
    options = dict(motion=sampling.motion, steps=sampling.steps, seed=sampling.seed, progress=sampling.progress)
    if prompt.kind == "text":  # before V̄′ (STAGE_ORDER)
        frames = pipe(prompt=prompt.value, **options)
        return write_orbit(frames, orbit_dir, c2w=_default_cameras(pipe.num_frames, pipe.image_size)[0])
    static, c2w = load_static_prompt(static_dir, pipe.image_size, pipe.num_frames)
    conditioning = {"image": prompt.image} if prompt.kind == "image" else {"static": static}
    frames = pipe(**conditioning, **options, c2w=c2w)
    return write_orbit(frames, orbit_dir, c2w=c2w)


def stage_fit(orbit_dir: Path, static_dir: Path, asset_dir: Path, options: FitOptions, resume: bool,
              log: Callable[[str], None]) -> Path:
    """Coarse (V̄ ∪ V) to fine (V) 4D Gaussians into ``asset_dir``; ``resume`` continues from its checkpoint."""
    from diffusion4d.reconstruction.fit import fit

    asset = fit(orbit_dir, asset_dir, options.method, options.config, static_dir=static_dir, resume=resume,
                device=options.device, perceptual=options.perceptual, progress=options.progress,
                log=lambda m: log(f"  {m}"))
    asset.save(asset_dir)
    return asset_dir


def stage_export(asset_dir: Path, viewer: Path, options: FitOptions, title: str) -> Path:
    """Per-time PLY and orbit renders (MP4 + GIF) into ``asset_dir``, and ``viewer``, from the saved asset."""
    from diffusion4d.reconstruction.asset import Asset4D
    from diffusion4d.reconstruction.viewer import frame_from_gaussians, write_viewer

    asset = Asset4D.load(asset_dir, device=options.device)
    times, views = options.renders
    asset.export(asset_dir, video_times=times, num_views=views, size=options.config.size,
                 backend=options.config.backend)
    frames = [frame_from_gaussians(asset.at(t)) for t in asset.timestamps]
    write_viewer(viewer, frames, times=asset.timestamps, title=title)
    return viewer


# -- the run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A stage bound to one run's values. ``run(resume)`` writes ``output``, deleted first unless the stage resumes
    (only a ``resumable`` one does, when it is the first unfinished stage); None: the stage only adds files."""
    name: str
    description: str
    output: Path | None
    run: Callable[[bool], Path]
    resumable: bool = False


_STATIC_HOW = {"asset": "rendering the asset's static orbit V̄", "static": "copying the static orbit V̄",
               "image": "sampling V̄′ with the 3D-aware model",
               "text": "sampling V̄′ with the image 3D-aware model from V's first view"}


def plan_stages(prompt: Prompt, models: Models, sampling: Sampling, fit: FitOptions, folders: Folders,
                log: Callable[[str], None]) -> list[Stage]:
    """The run's stages, in the order they run (STAGE_ORDER). The calls name the stage functions at run time."""
    f, config = folders, fit.config
    stages = {
        "static": Stage("static", f"{_STATIC_HOW[prompt.kind]} → {f.static}", f.static,
                        lambda resume: stage_static(prompt, models, sampling, f.static, f.orbit)),
        "orbit": Stage("orbit", f"sampling V with the 4D-aware model, 3D-aware CFG ({sampling.steps} DDIM steps) "
                                f"→ {f.orbit}", f.orbit,
                       lambda resume: stage_orbit(prompt, models, sampling, f.static, f.orbit)),
        # resumable: a fit interrupted midway continues from its last checkpoint
        "fit": Stage("fit", f"coarse-to-fine {fit.method} fit ({config.coarse_iters} + {config.fine_iters} "
                            f"iterations at {config.size}²) → {f.asset}", f.asset,
                     lambda resume: stage_fit(f.orbit, f.static, f.asset, fit, resume, log), resumable=True),
        "export": Stage("export", f"PLY per time, orbit renders, viewer → {f.asset}, {f.viewer}", None,
                        lambda resume: stage_export(f.asset, f.viewer, fit, prompt.title)),
    }
    return [stages[name] for name in STAGE_ORDER.get(prompt.kind, STAGES)]


def run_stages(stages: list[Stage], folders: Folders, record: dict, log: Callable[[str], None]) -> list[str]:
    """Run the stages from the first unfinished one, marking each finished one in stages.json at once; returns
    the stages finished by an earlier run."""
    done, names = record["done"], [stage.name for stage in stages]
    first = next((i for i, name in enumerate(names) if name not in done), len(names))
    resumed = names[:first]
    if resumed and first < len(names):
        log(f"resuming {folders.out}: {', '.join(resumed)} finished earlier")
    for i, stage in enumerate(stages[first:], start=first):
        for later in names[i:]:  # what follows a (re)run stage is stale
            done.pop(later, None)
        log(f"[{i + 1}/{len(stages)}] {stage.name}: {stage.description}")
        start = time.perf_counter()
        # the first unfinished stage continues where it stopped; after a rerun stage, a stage starts afresh
        resume = stage.resumable and i == first
        if stage.output is not None and not resume:
            shutil.rmtree(stage.output, ignore_errors=True)
        stage.run(resume)
        done[stage.name] = {"seconds": round(time.perf_counter() - start, 3)}
        write_json_atomic(folders.record, record)
        log(f"  {stage.name} done in {done[stage.name]['seconds']:.1f} s")
    return resumed


def write_timing(folders: Folders, record: dict, resumed: list[str], device: str, steps: int) -> GenerateResult:
    """timing.json from the stages' recorded seconds, and the run's result."""
    stages = {name: float(record["done"][name]["seconds"]) for name in STAGES}
    write_json_atomic(folders.timing, {"seconds": round(sum(stages.values()), 3), "stages": stages, "device": device,
                                       "steps": steps, "resumed": resumed})
    return GenerateResult(out=folders.out, orbit=folders.orbit, static=folders.static, asset=folders.asset,
                          viewer=folders.viewer, timing=folders.timing, stages=stages, resumed=resumed)


def generate(prompt: Prompt, out: str | Path, settings: GenerateSettings = GenerateSettings(),
             pipeline: OrbitPipeline | None = None) -> GenerateResult:
    """Prompt (:meth:`Prompt.one_of`: a text / image file / glTF asset / static orbit folder) → 4D asset in ``out``.

    ``pipeline``: an already loaded OrbitPipeline instead of the bundle (benchmarks with full-size random models).
    Raises ValueError / FileNotFoundError for bad input, naming it, before anything is written.
    """
    from diffusion4d.reconstruction.losses import perceptual_from_files

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = settings.preset or ("gpu" if device.startswith("cuda") else "cpu")
    if preset not in FIT_PRESET:
        raise ValueError(f"preset must be one of {sorted(FIT_PRESET)}, got {preset!r}")
    if not np.isfinite(settings.motion) or settings.motion < 0:
        raise ValueError(f"motion magnitude must be a finite number ≥ 0, got {settings.motion}")
    source = ModelSource.find(prompt.kind, settings.bundle, pipeline)
    if (why := source.motion_warning(settings.motion)) is not None:
        warnings.warn(why, stacklevel=2)
    config = PRESETS[FIT_PRESET[preset]][settings.method]
    guidance_every = GUIDANCE_EVERY[preset] if settings.guidance_every is None else settings.guidance_every
    sampling = Sampling(settings.motion, settings.seed, settings.steps or SAMPLE_STEPS[preset],
                        check_guidance_every(guidance_every), settings.progress)
    prompt, prompt_record = check_input(prompt, source.image_size, source.num_frames)
    # built once, here: bad LPIPS files fail before anything is written
    perceptual = perceptual_from_files(settings.lpips_weights, settings.lpips_backbone, settings.lpips_net, device)
    fit = FitOptions(settings.method, config, perceptual, device, RENDERS[preset], settings.progress)
    folders = Folders(Path(out))
    record = prepare_out(folders.out, run_inputs(prompt_record, sampling, fit, source.record, settings),
                         settings.overwrite)
    log = _printer(settings.progress)
    models = Models(source, CONDITION[prompt.kind], device, sampling.guidance_every, log)
    resumed = run_stages(plan_stages(prompt, models, sampling, fit, folders, log), folders, record, log)
    return write_timing(folders, record, resumed, device, sampling.steps)
