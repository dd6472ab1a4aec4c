"""The render job: animated assets → orbits in the official layout (paper Sec. 3.2, 4.1).

Per asset: the front-start dynamic orbit and its static orbit at τ0 in ``<uid>/``, each random-start orbit (and its
static orbit, as the paper renders one V̄ per V) in ``<uid>_az0.xx/``, the two extra front frames curation needs,
and ``metadata.json`` last. Resumable: an asset with ``metadata.json`` from the same settings is skipped; any other
trace of it (a run killed midway) is deleted and rendered again. Every file is written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import diffusion4d
from diffusion4d import cameras
from diffusion4d.assets.gltf import load_gltf
from diffusion4d.data import layout
from diffusion4d.data.limits import NO_LIMITS, AssetLimits, AssetTimeLimitExceeded, asset_limits, exceeded_limit
from diffusion4d.io import write_json_atomic, write_png_atomic
from diffusion4d.render import Renderer


@dataclass(frozen=True)
class RenderSettings:
    frames: int = cameras.DEFAULT_NUM_VIEWS  # T
    size: int = 256
    fov: float = cameras.DEFAULT_FOV_DEG  # degrees
    distance: float = cameras.DEFAULT_DISTANCE
    elevation: float = 0.0  # degrees
    random_starts: int = 1
    time_mode: str = "official"  # "official": frames 0…T−1 at 24 fps; "clip": T frames spread over the clip
    animation: int | str = 0  # index or name
    seed: int = 0  # random start azimuths are drawn from (seed, uid): reruns give the same folders
    samples: int = 4  # MSAA samples
    max_triangles: int = 2_000_000
    # Back-face cull single-sided materials, as the glTF spec says (Renderer's cull_single_sided). Off: both sides
    # are drawn, as in the Blender renders our orbits are checked against.
    cull_back_faces: bool = False


# Settings added after orbits were first rendered, each with the value every orbit rendered before it had: an
# earlier metadata.json without one was rendered with that value, so its asset stays done.
_ADDED_SETTINGS = {"cull_back_faces": False}


def random_start_turns(uid: str, seed: int, count: int) -> list[float]:
    """``count`` distinct start azimuths in (0, 1) turns, on the 0.01 grid the folder names can express."""
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return sorted(float(k) / 100 for k in rng.choice(np.arange(1, 100), size=count, replace=False))


def asset_uid(path: Path) -> str:
    return Path(path).stem


def is_done(out_dir: Path, uid: str, settings: RenderSettings) -> bool:
    meta = Path(out_dir) / uid / layout.METADATA
    if not meta.exists():
        return False
    try:
        saved = json.loads(meta.read_text()).get("settings")
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(saved, dict) and {**_ADDED_SETTINGS, **saved} == json.loads(json.dumps(asdict(settings)))


def clear_asset(out_dir: Path, uid: str) -> None:
    """Remove every trace of an asset (its folder and its random-start folders) before (re)rendering it."""
    for folder in [Path(out_dir) / uid, *Path(out_dir).glob(f"{uid}_az?.??")]:
        if folder.is_dir():
            shutil.rmtree(folder)


def render_asset(path: Path, out_dir: Path, settings: RenderSettings, renderer, caption: str = "") -> dict:
    """Render one asset into ``out_dir`` and return its metadata (also written to ``<uid>/metadata.json``)."""
    start = time.perf_counter()
    path, out_dir = Path(path), Path(out_dir)
    uid = asset_uid(path)
    asset = load_gltf(path, animation=settings.animation, max_triangles=settings.max_triangles)
    clear_asset(out_dir, uid)

    T, S = settings.frames, settings.size
    x_fov, y_fov = cameras.fov_xy(settings.fov, S, S)
    times = asset.frame_times(T, settings.time_mode)
    poses = {}  # time → posed mesh: the orbits share their times, so pose each instant once

    def pose(k: int):
        if k not in poses:
            poses[k] = asset.pose(float(times[k]))
        return poses[k]

    def render(k: int, c2w: np.ndarray) -> np.ndarray:
        return renderer.render(pose(k), c2w, x_fov, y_fov).rgba

    orbits = [{"folder": uid, "start_turns": 0.0}]
    orbits += [{"folder": layout.random_start_dirname(uid, t), "start_turns": t}
               for t in random_start_turns(uid, settings.seed, settings.random_starts)]
    for orbit in orbits:
        folder = out_dir / orbit["folder"]
        c2ws = cameras.orbit_camera_to_world(T, 360.0 * orbit["start_turns"], settings.elevation, settings.distance)
        for i, c2w in enumerate(c2ws):
            layout.write_view(folder, layout.DYNAMIC, i, render(i, c2w), c2w, x_fov, y_fov)
            layout.write_view(folder, layout.STATIC, i, render(0, c2w), c2w, x_fov, y_fov)
    front = cameras.orbit_camera_to_world(T, 0.0, settings.elevation, settings.distance)[0]
    for k in sorted({T // 4, T // 2}):
        write_png_atomic(out_dir / uid / layout.FRONT_FRAME.format(i=k), render(k, front))

    meta = {
        "uid": uid,
        "source": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "caption": caption,
        "has_animation": asset.has_animation,
        "animation": (asset.animation_names[asset.animation_index] if asset.has_animation else None),
        "duration": asset.duration,
        "times_seconds": [float(t) for t in times],
        "timestamps": [float(t) for t in cameras.orbit_timestamps(T)],
        "orbits": orbits,
        "normalization": {"scale": float(asset.normalization[0]),
                          "offset": [float(v) for v in asset.normalization[1]]},
        "num_triangles": asset.num_triangles,
        "settings": asdict(settings),
        "renderer": getattr(renderer, "description", type(renderer).__name__),
        "version": diffusion4d.__version__,
        "render_seconds": round(time.perf_counter() - start, 3),
    }
    write_json_atomic(out_dir / uid / layout.METADATA, meta)  # last: its presence means "done"
    return meta


# -- one asset, in whichever process renders it -------------------------------------------------------------------

@dataclass(frozen=True)
class AssetJob:
    """One asset's work: all that the process rendering it needs (pickled to pool and Ray workers)."""

    path: Path
    out_dir: Path
    settings: RenderSettings
    caption: str = ""
    limits: AssetLimits = NO_LIMITS


#: (asset path, "done" or "failed", the error or None): what a worker hands back for each asset
AssetResult = tuple[str, str, str | None]

_worker: dict = {}  # this process's renderer: made for its first asset, kept for the next ones


def single_threaded_gl() -> None:
    """One llvmpipe thread in a worker process (before its first GL context): the job's parallelism is across
    assets, one per worker."""
    os.environ.setdefault("LP_NUM_THREADS", "1")


def _worker_renderer(settings: RenderSettings) -> Renderer:
    key = (settings.size, settings.samples, settings.cull_back_faces)
    if _worker.get("key") != key:
        close_worker_renderer()
        _worker["renderer"] = Renderer(settings.size, settings.size, samples=settings.samples,
                                       cull_single_sided=settings.cull_back_faces)
        _worker["key"] = key
    return _worker["renderer"]


def close_worker_renderer() -> None:
    renderer = _worker.pop("renderer", None)
    _worker.pop("key", None)
    if renderer is not None:
        renderer.close()


def render_job_asset(job: AssetJob) -> AssetResult:
    """Render one asset with this process's renderer, within the job's limits: the per-asset work of every
    executor. The asset's own failures (a bad file, a limit, no GL context) come back as a result, with nothing of
    the asset left on disk, not as an exception."""
    try:
        renderer = _worker_renderer(job.settings)  # outside the limits: the renderer is the worker's, not the asset's
        with asset_limits(job.limits):
            render_asset(job.path, job.out_dir, job.settings, renderer, job.caption)
        return str(job.path), "done", None
    except (Exception, AssetTimeLimitExceeded) as exc:  # noqa: BLE001 — a batch job reports any failure of one asset
        clear_asset(job.out_dir, asset_uid(job.path))
        limit = exceeded_limit(exc, job.limits)
        if limit:  # stopped anywhere, maybe inside a draw call: the next asset gets a fresh GL context
            close_worker_renderer()
        return str(job.path), "failed", failure_message(job.path, exc, limit)


def failure_message(path: Path, exc: BaseException, limit: str | None = None) -> str:
    """The report's line for a failed asset; it always starts with the asset's path."""
    if limit:
        return f"{path}: stopped: {limit}"
    message = str(exc)
    if not message.startswith(str(path)):  # loader errors name the file already; others get it here
        message = f"{path}: {type(exc).__name__}: {message}"
    return message


# -- the job: plan, run the assets on an executor, report ----------------------------------------------------------

@dataclass
class JobReport:
    done: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]  # (asset path, error)
    seconds: float
    problems: list[dict] = field(default_factory=list)  # inputs not rendered, not fatal: {"uid", "problem"}

    def summary(self) -> str:
        lines = [f"{len(self.done)} rendered, {len(self.skipped)} already done, {len(self.failed)} failed "
                 f"in {self.seconds:.1f} s" + (f"; {len(self.problems)} input problems" if self.problems else "")]
        lines += [f"  FAILED {e}" for _, e in self.failed]  # each error starts with the asset path
        lines += [f"  INPUT {p['uid']}: {p['problem']}" for p in self.problems]
        return "\n".join(lines)

    def sort(self, paths: list[Path]) -> None:
        """Inputs' order, whichever order the workers finished in: the same report from every executor."""
        rank = {str(p): i for i, p in reversed(list(enumerate(paths)))}
        self.done.sort(key=rank.__getitem__)
        self.failed.sort(key=lambda failure: rank[failure[0]])

    def write(self, out_dir: Path) -> None:
        write_json_atomic(Path(out_dir) / "render_report.json", {
            "done": self.done, "skipped": self.skipped,
            "failed": [{"asset": p, "error": e} for p, e in self.failed], "seconds": round(self.seconds, 3),
            "input_problems": self.problems,
        })


def expand_assets(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expand to the .glb/.gltf files directly inside them (sorted)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in (".glb", ".gltf"))
        else:
            paths.append(item)
    return paths


def plan_render_job(
    paths: list[Path], out_dir: Path, settings: RenderSettings, captions: dict[str, str] | None = None,
    problems: list[dict] | None = None, limits: AssetLimits = NO_LIMITS,
) -> tuple[JobReport, list[AssetJob]]:
    """The assets still to render, and the report so far: assets done by an earlier run (skipped) and assets whose
    uid an earlier input already has (failed)."""
    report = JobReport([], [], [], 0.0, list(problems or []))
    caption_of = _caption_lookup(captions)
    seen: dict[str, Path] = {}
    jobs = []
    for path in paths:
        uid = asset_uid(path)
        if uid in seen:
            report.failed.append((str(path), f"{path}: uid '{uid}' is also the uid of {seen[uid]}; rename one"))
            continue
        seen[uid] = path
        if is_done(out_dir, uid, settings):
            report.skipped.append(str(path))
        else:
            jobs.append(AssetJob(path, Path(out_dir), settings, caption_of(path), limits))
    return report, jobs


def _caption_lookup(captions: dict[str, str] | None) -> Callable[[Path], str]:
    """path → caption: from ``captions`` by uid, or (None) from the captions.jsonl beside each asset."""
    if captions is not None:
        return lambda path: captions.get(asset_uid(path), "")
    by_folder: dict[Path, dict[str, str]] = {}

    def caption_of(path: Path) -> str:
        if path.parent not in by_folder:
            try:
                by_folder[path.parent] = layout.read_captions(path.parent)
            except ValueError as exc:
                print(f"warning: {exc}; assets there get no caption")
                by_folder[path.parent] = {}
        return by_folder[path.parent].get(asset_uid(path), "")

    return caption_of


#: runs the assets' jobs, handing each result to the callback as it comes (in any order)
Executor = Callable[[list[AssetJob], Callable[[AssetResult], None]], None]


def process_executor(workers: int) -> Executor:
    """The default executor: a pool of ``workers`` spawned processes, or this process alone for one worker."""
    return functools.partial(_run_in_processes, workers=workers)


def _run_in_processes(jobs: list[AssetJob], record: Callable[[AssetResult], None], workers: int) -> None:
    if workers > 1 and len(jobs) > 1:
        _run_in_pool(jobs, record, workers)
        return
    try:
        for job in jobs:
            record(render_job_asset(job))
    finally:
        close_worker_renderer()


def _run_in_pool(jobs: list[AssetJob], record: Callable[[AssetResult], None], workers: int) -> None:
    # Fresh (spawned) processes: an EGL context does not survive fork. A worker that dies (a crash in the driver)
    # breaks the pool; its unfinished assets are then reported, not waited on forever.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=single_threaded_gl) as pool:
        futures = {pool.submit(render_job_asset, job): job for job in jobs}
        for future in as_completed(futures):
            path = futures[future].path
            try:
                record(future.result())
            except BrokenProcessPool as exc:
                record((str(path), "failed", f"{path}: render worker died ({exc or 'no message'})"))


def run_render_job(
    assets: list[str | Path], out_dir: str | Path, settings: RenderSettings = RenderSettings(),
    workers: int = 1, progress: bool = True, captions: dict[str, str] | None = None,
    problems: list[dict] | None = None, limits: AssetLimits = NO_LIMITS, executor: Executor | None = None,
) -> JobReport:
    """Render many assets (files or folders of them) into ``out_dir``; writes ``render_report.json`` there.

    ``problems`` ({"uid", "problem"}: e.g. an Objaverse uid without a file or caption) go into the report as is.
    ``limits``: per asset; one that goes over is stopped and reported as failed, and the job goes on.
    ``executor`` runs the assets: by default ``process_executor(workers)``; ``render_ray.RayExecutor`` runs each
    as a Ray task. Both run the same per-asset function, so the files are the same.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = expand_assets(assets)
    report, jobs = plan_render_job(paths, out_dir, settings, captions, problems, limits)
    with tqdm(total=len(jobs), desc="render", unit="asset", disable=not progress) as bar:
        (executor or process_executor(workers))(jobs, _recorder(report, bar))
    report.seconds = time.perf_counter() - start
    report.sort(paths)
    report.write(out_dir)
    return report


def _recorder(report: JobReport, bar: tqdm) -> Callable[[AssetResult], None]:
    def record(result: AssetResult) -> None:
        path, status, error = result
        (report.done.append(path) if status == "done" else report.failed.append((path, error)))
        bar.update()
        if error:
            bar.write(f"failed: {error}")

    return record
