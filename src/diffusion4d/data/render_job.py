"""The render job: animated assets → orbits in the official layout (paper Sec. 3.2, 4.1).

Per asset: the front-start dynamic orbit and its static orbit at τ0 in ``<uid>/``, each random-start orbit (and its
static orbit, as the paper renders one V̄ per V) in ``<uid>_az0.xx/``, the two extra front frames curation needs,
and ``metadata.json`` last. Resumable: an asset with ``metadata.json`` from the same settings is skipped; any other
trace of it (a run killed midway) is deleted and rendered again. Every file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
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
        return json.loads(meta.read_text()).get("settings") == json.loads(json.dumps(asdict(settings)))
    except (OSError, json.JSONDecodeError):
        return False


def _clear(out_dir: Path, uid: str) -> None:
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
    _clear(out_dir, uid)

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


# -- the parallel job ----------------------------------------------------------------------------------------------

_worker: dict = {}


def _init_worker(settings: RenderSettings, single_thread: bool) -> None:
    if single_thread:  # one llvmpipe thread per worker process: the job's parallelism is across assets
        os.environ.setdefault("LP_NUM_THREADS", "1")
    _worker["renderer"] = Renderer(settings.size, settings.size, samples=settings.samples)


def _render_one(args) -> tuple[str, str, str | None]:
    path, out_dir, settings, caption = args
    try:
        render_asset(path, out_dir, settings, _worker["renderer"], caption)
        return str(path), "done", None
    except Exception as exc:  # noqa: BLE001 — a batch job reports any failure of one asset and goes on
        _clear(out_dir, asset_uid(path))  # nothing half-written stays behind
        message = str(exc)
        if not message.startswith(str(path)):  # loader errors name the file already; others get it here
            message = f"{path}: {type(exc).__name__}: {message}"
        return str(path), "failed", message


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


def expand_assets(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expand to the .glb/.gltf files directly inside them (sorted)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in (".glb", ".gltf"))
        else:
            paths.append(item)
    return paths


def run_render_job(
    assets: list[str | Path], out_dir: str | Path, settings: RenderSettings = RenderSettings(),
    workers: int = 1, progress: bool = True, captions: dict[str, str] | None = None,
    problems: list[dict] | None = None,
) -> JobReport:
    """Render many assets (files or folders of them) into ``out_dir``; writes ``render_report.json`` there.

    ``problems`` ({"uid", "problem"}: e.g. an Objaverse uid without a file or caption) go into the report as is.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = expand_assets(assets)
    report = JobReport([], [], [], 0.0, list(problems or []))
    seen: dict[str, Path] = {}
    jobs = []
    caption_cache: dict[Path, dict[str, str]] = {}
    for path in paths:
        uid = asset_uid(path)
        if uid in seen:
            report.failed.append((str(path), f"{path}: uid '{uid}' is also the uid of {seen[uid]}; rename one"))
            continue
        seen[uid] = path
        if is_done(out_dir, uid, settings):
            report.skipped.append(str(path))
            continue
        if captions is None:
            if path.parent not in caption_cache:
                try:
                    caption_cache[path.parent] = layout.read_captions(path.parent)
                except ValueError as exc:
                    print(f"warning: {exc}; assets there get no caption")
                    caption_cache[path.parent] = {}
            caption = caption_cache[path.parent].get(uid, "")
        else:
            caption = captions.get(uid, "")
        jobs.append((path, out_dir, settings, caption))

    bar = tqdm(total=len(jobs), desc="render", unit="asset", disable=not progress)

    def record(result):
        path, status, error = result
        (report.done.append(path) if status == "done" else report.failed.append((path, error)))
        bar.update()
        if error:
            bar.write(f"failed: {error}")

    if workers > 1 and len(jobs) > 1:
        # Fresh (spawned) processes: an EGL context does not survive fork. A worker that cannot start (no EGL,
        # a crash in the driver) breaks the pool; its unfinished assets are then reported, not waited on forever.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(settings, True)) as pool:
            futures = {pool.submit(_render_one, job): job for job in jobs}
            for future in as_completed(futures):
                path = futures[future][0]
                try:
                    record(future.result())
                except BrokenProcessPool as exc:
                    record((str(path), "failed", f"{path}: render worker died ({exc or 'no message'})"))
    elif jobs:
        _init_worker(settings, False)
        try:
            for job in jobs:
                record(_render_one(job))
        finally:
            _worker.pop("renderer").close()
    bar.close()
    report.seconds = time.perf_counter() - start
    write_json_atomic(out_dir / "render_report.json", {
        "done": report.done, "skipped": report.skipped,
        "failed": [{"asset": p, "error": e} for p, e in report.failed], "seconds": round(report.seconds, 3),
        "input_problems": report.problems,
    })
    return report
