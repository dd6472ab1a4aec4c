"""One call from a prompt to a 4D asset: V̄ (static orbit) → V (4D orbit, Eq. 3) → coarse-to-fine fit → export.

    result = generate(image="cat.png", out="out/cat", preset="cpu")
    print(result.summary())

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.diffusion.sampling import check_guidance_every
from diffusion4d.io import write_json_atomic
from diffusion4d.pipelines.orbit import OrbitPipeline, load_image_prompt, load_static_prompt, write_orbit
from diffusion4d.reconstruction.fit import DEFAULT_METHOD

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


@dataclass
class _Run:
    """What every stage needs: the checked inputs, the folders, the model (loaded on first use)."""
    out: Path
    kind: str  # text | image | asset | static
    value: str  # the text, or the input's path
    motion: float
    seed: int
    steps: int
    guidance_every: int
    preset: str
    fit_config: object  # reconstruction.fit.FitConfig
    method: str
    perceptual: object  # LPIPS for the fit's L1 + LPIPS (losses.perceptual_from_files), or None: L1 + D-SSIM
    device: str
    progress: bool
    bundle: Path | None
    pipe: OrbitPipeline | None = None
    image: torch.Tensor | None = None  # the image prompt [3, S, S] in [−1, 1]
    image_size: int = 0
    num_frames: int = 0

    @property
    def static_dir(self) -> Path:
        return self.out / "static"

    @property
    def orbit_dir(self) -> Path:
        return self.out / "orbit"

    @property
    def asset_dir(self) -> Path:
        return self.out / "asset4d"

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGE_ORDER.get(self.kind, STAGES)

    def image_pipeline(self) -> OrbitPipeline | None:
        """An image model (for its 3D-aware base ε̄): the stages' own, or else the bundle's; None when neither
        exists (a given text pipeline without a bundle)."""
        if self.pipe is not None and self.pipe.condition == "image":
            return self.pipeline()
        if self.bundle is None:
            return None
        from diffusion4d.pipelines.default import load_default

        start = time.perf_counter()
        pipe = load_default("image", device=self.device, bundle=self.bundle)
        _log(self, f"  loaded the default image model in {time.perf_counter() - start:.1f} s")
        pipe.guidance_every = self.guidance_every
        return pipe

    def pipeline(self) -> OrbitPipeline:
        if self.pipe is None:
            from diffusion4d.pipelines.default import load_default

            start = time.perf_counter()
            self.pipe = load_default(CONDITION[self.kind], device=self.device, bundle=self.bundle)
            _log(self, f"  loaded the default {CONDITION[self.kind]} model in {time.perf_counter() - start:.1f} s")
        self.pipe.guidance_every = self.guidance_every
        return self.pipe


def _log(run: _Run, message: str) -> None:
    if run.progress:
        print(message, flush=True)


# -- inputs ------------------------------------------------------------------------------------------------------


def prompt_kind(prompt=None, image=None, asset=None, static=None) -> tuple[str, str]:
    """(kind, value) of the one prompt given; ValueError when none or several are."""
    given = {k: v for k, v in (("text", prompt), ("image", image), ("asset", asset), ("static", static))
             if v is not None}
    if len(given) != 1:
        raise ValueError("give exactly one prompt: --prompt TEXT, --image PNG, --asset GLB_OR_GLTF or "
                         f"--static ORBIT_DIR (got {len(given)}: {sorted(given) or 'none'})")
    (kind, value), = given.items()
    return kind, str(value)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_input(kind: str, value: str, image_size: int, num_frames: int) -> tuple[dict, torch.Tensor | None]:
    """Load the prompt once to refuse bad input before anything is written: (its record for stages.json, the image
    prompt [3, S, S] in [−1, 1] or None)."""
    if kind == "text":
        return {"kind": kind, "text": value}, None
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {'folder' if kind == 'static' else 'file'}")
    image = None
    if kind == "image":
        image = load_image_prompt(path, image_size)
    elif kind == "asset":
        from diffusion4d.assets.gltf import load_gltf

        load_gltf(path)  # AssetError (a ValueError) names the file and the problem
    else:
        load_static_prompt(path, image_size, num_frames)
    record = {"kind": kind, "path": str(path.resolve())}
    if path.is_file():
        record["sha256"] = _sha256(path)
    return record, image


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
            raise ValueError(f"{out}: holds a generate run of other inputs (differing: {', '.join(changed)}); "
                             "use --overwrite to replace it, or another --out")
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


def stage_static(run: _Run) -> None:
    """V̄ into static/: rendered (asset), copied (static), or V̄′ from a 3D-aware base model: for an image prompt the
    image model's, from the image; for a text prompt also the image model's, from V's first view (it runs after
    the orbit stage)."""
    if run.kind == "asset":
        render_static_orbit(Path(run.value), run.static_dir, run.num_frames, run.image_size, run.progress)
        return
    if run.kind == "static":
        copy_static_orbit(Path(run.value), run.static_dir)
        return
    if run.kind == "text":
        pipe = run.image_pipeline()
        if pipe is None:  # a given text pipeline alone: its own 3D-aware base, from the prompt
            pipe, prompt = run.pipeline(), {"prompt": run.value}
        else:
            prompt = {"image": load_image_prompt(layout.frame_path(run.orbit_dir, layout.DYNAMIC, 0), pipe.image_size)}
    else:
        pipe, prompt = run.pipeline(), {"image": run.image}
    frames = pipe.sample_base(**prompt, steps=run.steps, seed=run.seed, progress=run.progress)
    write_static_orbit(frames, run.static_dir, *_default_cameras(pipe.num_frames, pipe.image_size))


def stage_orbit(run: _Run) -> None:
    """V into orbit/: the 4D-aware model with 3D-aware CFG (Eq. 3), on the same cameras as V̄."""
    pipe = run.pipeline()
    if run.kind == "text":  # before V̄′ (STAGE_ORDER): the default cameras, which V̄′ then shares
        frames = pipe(prompt=run.value, motion=run.motion, steps=run.steps, seed=run.seed, progress=run.progress)
        write_orbit(frames, run.orbit_dir, c2w=_default_cameras(pipe.num_frames, pipe.image_size)[0])
        return
    static, c2w = load_static_prompt(run.static_dir, pipe.image_size, pipe.num_frames)
    if run.kind == "image":
        prompt = {"image": run.image}
    else:
        prompt = {"static": static}
    frames = pipe(**prompt, motion=run.motion, steps=run.steps, seed=run.seed, progress=run.progress, c2w=c2w)
    write_orbit(frames, run.orbit_dir, c2w=c2w)


def stage_fit(run: _Run, resume: bool) -> None:
    """Coarse (V̄ ∪ V) to fine (V) 4D Gaussians into asset4d/; ``resume`` continues from its checkpoint."""
    from diffusion4d.reconstruction.fit import fit

    asset = fit(run.orbit_dir, run.asset_dir, run.method, run.fit_config, static_dir=run.static_dir, resume=resume,
                device=run.device, perceptual=run.perceptual, progress=run.progress, log=lambda m: _log(run, f"  {m}"))
    asset.save(run.asset_dir)


def stage_export(run: _Run) -> None:
    """Per-time PLY, orbit renders (MP4 + GIF) and viewer.html from the saved asset."""
    from diffusion4d.reconstruction.asset import Asset4D
    from diffusion4d.reconstruction.viewer import frame_from_gaussians, write_viewer

    asset = Asset4D.load(run.asset_dir, device=run.device)
    times, views = RENDERS[run.preset]
    asset.export(run.asset_dir, video_times=times, num_views=views, size=run.fit_config.size,
                 backend=run.fit_config.backend)
    frames = [frame_from_gaussians(asset.at(t)) for t in asset.timestamps]
    title = f"Diffusion4D — {run.value if run.kind == 'text' else Path(run.value).name}"
    write_viewer(run.out / "viewer.html", frames, times=asset.timestamps, title=title)


# -- the call ----------------------------------------------------------------------------------------------------


def generate(prompt: str | None = None, image: str | Path | None = None, asset: str | Path | None = None,
             static: str | Path | None = None, *, out: str | Path, motion: float = 0.02, seed: int = 0,
             preset: str | None = None, bundle: str | Path | None = None, overwrite: bool = False,
             steps: int | None = None, method: str = DEFAULT_METHOD, device: str | None = None, progress: bool = True,
             pipeline: OrbitPipeline | None = None, guidance_every: int | None = None,
             lpips_weights: str | Path | None = None, lpips_backbone: str | Path | None = None,
             lpips_net: str = "alex") -> GenerateResult:
    """Prompt (exactly one of text / image file / glTF asset / static orbit folder) → 4D asset in ``out``.

    preset: "cpu" (the fit's cpu preset, SAMPLE_STEPS["cpu"] DDIM steps) or "gpu" (the fit's fast preset, 50
    steps); default by device. ``bundle``: the default model's folder (default: the one shipped in the package).
    ``pipeline``: an already loaded OrbitPipeline instead of the bundle (benchmarks with full-size random models).
    ``guidance_every``: k of `sample_latents` for both samplings (default: GUIDANCE_EVERY[preset]).
    ``lpips_weights``, ``lpips_backbone`` (both or neither), ``lpips_net``: fit with the paper's L1 + LPIPS
    (losses.perceptual_from_files) instead of L1 + D-SSIM.
    Raises ValueError / FileNotFoundError for bad input, naming it, before anything is written.
    """
    from diffusion4d.reconstruction.fit import PRESETS
    from diffusion4d.reconstruction.losses import perceptual_from_files

    kind, value = prompt_kind(prompt, image, asset, static)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = preset or ("gpu" if device.startswith("cuda") else "cpu")
    if preset not in FIT_PRESET:
        raise ValueError(f"preset must be one of {sorted(FIT_PRESET)}, got {preset!r}")
    if not np.isfinite(motion) or motion < 0:
        raise ValueError(f"motion magnitude must be a finite number ≥ 0, got {motion}")
    if pipeline is not None:
        size, frames, bundle_id = pipeline.image_size, pipeline.num_frames, "(a given pipeline)"
        if pipeline.condition != CONDITION[kind]:
            raise ValueError(f"the given pipeline takes {pipeline.condition} prompts, not {kind}")
    else:
        from diffusion4d.pipelines.default import default_bundle_dir, read_manifest

        bundle = Path(bundle) if bundle is not None else default_bundle_dir()
        manifest = read_manifest(bundle)
        size, frames, bundle_id = manifest["image_size"], manifest["num_frames"], str(bundle.resolve())
    config = PRESETS[FIT_PRESET[preset]][method]
    steps = steps or SAMPLE_STEPS[preset]
    guidance_every = check_guidance_every(GUIDANCE_EVERY[preset] if guidance_every is None else guidance_every)
    given, image_prompt = check_input(kind, value, size, frames)
    perceptual = perceptual_from_files(lpips_weights, lpips_backbone, lpips_net, device)  # once; bad files fail here
    inputs = {**given, "motion": float(motion), "seed": int(seed),
              "steps": int(steps), **({"guidance_every": guidance_every} if guidance_every != 1 else {}),
              "method": method, "fit": config.to_json(), "bundle": bundle_id,
              **({"lpips": lpips_record(lpips_weights, lpips_backbone, lpips_net)} if perceptual is not None else {})}
    out = Path(out)
    record = prepare_out(out, inputs, overwrite)
    run = _Run(out=out, kind=kind, value=value, motion=motion, seed=seed, steps=steps,
               guidance_every=guidance_every, preset=preset,
               fit_config=config, method=method, perceptual=perceptual, device=device, progress=progress,
               bundle=bundle, pipe=pipeline,
               image=image_prompt, image_size=size, num_frames=frames)
    return run_stages(run, record)


def lpips_record(weights: str | Path, backbone: str | Path, net: str) -> dict:
    """The LPIPS files of the fit, for stages.json: the fitted asset depends on them, so a rerun with other ones
    is another run's inputs (and one without LPIPS keeps the record of runs made before the fit could use it)."""
    return {"weights": str(Path(weights).resolve()), "backbone": str(Path(backbone).resolve()), "net": net}


def run_stages(run: _Run, record: dict) -> GenerateResult:
    """Run the stages from the first unfinished one; each finished stage is marked in stages.json at once."""
    done, order = record["done"], run.stages
    first = next((i for i, name in enumerate(order) if name not in done), len(order))
    resumed = list(order[:first])
    if resumed and first < len(order):
        _log(run, f"resuming {run.out}: {', '.join(resumed)} finished earlier")
    for i, name in enumerate(order[first:], start=first):
        for later in order[i:]:  # what follows a (re)run stage is stale
            done.pop(later, None)
        _log(run, f"[{i + 1}/{len(order)}] {name}: {_DESCRIPTIONS[name](run)}")
        start = time.perf_counter()
        if name == "fit":
            # the first unfinished stage continues where it stopped; after a rerun stage the fit starts afresh
            if i != first:
                shutil.rmtree(run.asset_dir, ignore_errors=True)
            stage_fit(run, resume=i == first)
        else:
            if name in ("static", "orbit"):
                shutil.rmtree(run.out / name, ignore_errors=True)
            _STAGE_FNS[name](run)
        done[name] = {"seconds": round(time.perf_counter() - start, 3)}
        write_json_atomic(run.out / "stages.json", record)
        _log(run, f"  {name} done in {done[name]['seconds']:.1f} s")
    stages = {name: float(done[name]["seconds"]) for name in STAGES}
    timing = run.out / "timing.json"
    write_json_atomic(timing, {"seconds": round(sum(stages.values()), 3), "stages": stages, "device": run.device,
                               "steps": run.steps, "resumed": resumed})
    return GenerateResult(out=run.out, orbit=run.orbit_dir, static=run.static_dir, asset=run.asset_dir,
                          viewer=run.out / "viewer.html", timing=timing, stages=stages, resumed=resumed)


_STAGE_FNS = {"static": stage_static, "orbit": stage_orbit, "export": stage_export}
_STATIC_HOW = {"asset": "rendering the asset's static orbit V̄", "static": "copying the static orbit V̄",
               "image": "sampling V̄′ with the 3D-aware model",
               "text": "sampling V̄′ with the image 3D-aware model from V's first view"}
_DESCRIPTIONS = {
    "static": lambda r: f"{_STATIC_HOW[r.kind]} → {r.static_dir}",
    "orbit": lambda r: f"sampling V with the 4D-aware model, 3D-aware CFG ({r.steps} DDIM steps) → {r.orbit_dir}",
    "fit": lambda r: (f"coarse-to-fine {r.method} fit ({r.fit_config.coarse_iters} + {r.fit_config.fine_iters} "
                      f"iterations at {r.fit_config.size}²) → {r.asset_dir}"),
    "export": lambda r: f"PLY per time, orbit renders, viewer → {r.asset_dir}, {r.out / 'viewer.html'}",
}
