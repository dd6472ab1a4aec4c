"""The render job on Ray: the same files as the process pool, a killed worker, limits, resume, Ray missing;
and curation on Ray: the same manifest as the process pool.

One local Ray cluster (2 CPUs) serves the whole module; ``ray.shutdown`` stops all its processes at the end.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from diffusion4d.cli import main as cli_main
from diffusion4d.data import layout
from diffusion4d.data.curate import curate
from diffusion4d.data.limits import AssetLimits
from diffusion4d.data.render_job import RenderSettings, random_start_turns, run_render_job
from hazard_assets import write_exploding_asset, write_hanging_asset
from process_group import HANG_TIMEOUT_S, popen_group, run_group
from single_sided import write_single_sided_quad

SMALL = RenderSettings(frames=8, size=32, samples=0)
SMALL_ARGS = ["--frames", "8", "--size", "32", "--samples", "0"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from diffusion4d.assets.procedural import write_procedural_dataset

    return write_procedural_dataset(tmp_path_factory.mktemp("assets"), count=4, seed=11, progress=False)


def ray_executor(**options):
    from diffusion4d.data.render_ray import RayExecutor

    return RayExecutor(**options)


def files_without_timings(root: Path) -> dict[str, object]:
    """Every file under ``root`` by relative name: its bytes, or for the JSON that holds timings, its contents
    without them."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name, data = str(path.relative_to(root)), path.read_bytes()
        if path.name == layout.METADATA:
            data = {k: v for k, v in json.loads(data).items() if k != "render_seconds"}
        elif name == "render_report.json":
            data = {k: v for k, v in json.loads(data).items() if k != "seconds"}
        files[name] = data
    return files


def expected_folders(paths: list[Path], settings: RenderSettings) -> set[str]:
    folders = set()
    for path in paths:
        folders.add(path.stem)
        folders |= {layout.random_start_dirname(path.stem, t) for t in random_start_turns(path.stem, settings.seed, 1)}
    return folders


def orbit_files(frames: int, front: bool) -> set[str]:
    """The names in a finished orbit folder: each view's image and camera; the front-start orbit's folder also
    holds the extra front frames and metadata.json."""
    names = {layout.frame_path(Path(), kind, i).name for kind in (layout.DYNAMIC, layout.STATIC) for i in range(frames)}
    names |= {layout.camera_path(Path(), kind, i).name for kind in (layout.DYNAMIC, layout.STATIC)
              for i in range(frames)}
    if front:
        names |= {layout.FRONT_FRAME.format(i=k) for k in (frames // 4, frames // 2)} | {layout.METADATA}
    return names


def test_ray_writes_the_same_files_as_the_process_pool_and_a_rerun_skips_all(tmp_path, ray_cluster, assets):
    pool = run_render_job([assets[0].parent], tmp_path / "pool", SMALL, workers=2, progress=False)
    assert len(pool.done) == len(assets) and not pool.failed
    code = cli_main(["-q", "render", str(assets[0].parent), "--out", str(tmp_path / "ray"), *SMALL_ARGS, "--ray"])
    assert code == 0
    assert files_without_timings(tmp_path / "ray") == files_without_timings(tmp_path / "pool")

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.png")}
    again = run_render_job([assets[0].parent], tmp_path / "ray", SMALL, progress=False, executor=ray_executor())
    assert again.skipped == [str(p) for p in assets] and not again.done and not again.failed
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.png")} == stamps


def test_cull_back_faces_reaches_the_ray_workers(tmp_path, ray_cluster):
    # The same image size and samples as SMALL: a worker that rendered an earlier test's assets has a renderer of
    # that size, which must not be reused as it is for a job that culls.
    quad = write_single_sided_quad(tmp_path / "quad.glb")
    settings = RenderSettings(frames=4, size=32, samples=0, random_starts=0, cull_back_faces=True)
    pool = run_render_job([quad], tmp_path / "pool", settings, progress=False)
    on_ray = run_render_job([quad], tmp_path / "ray", settings, progress=False, executor=ray_executor())
    assert pool.done == on_ray.done == [str(quad)]
    assert files_without_timings(tmp_path / "ray") == files_without_timings(tmp_path / "pool")
    alpha = layout.read_orbit(tmp_path / "ray" / "quad").images[..., 3]
    assert [bool(a.any()) for a in alpha] == [True, False, False, True]  # views 1 and 2 see the culled back


def test_hanging_and_exploding_assets_are_stopped_and_the_rest_finish(tmp_path, ray_cluster, assets):
    hanging, exploding = write_hanging_asset(tmp_path), write_exploding_asset(tmp_path)
    inputs = [hanging, *assets[:2], exploding]
    # Generous for the real assets (each takes well under a second): only the hazards may hit the limits.
    limits = AssetLimits(seconds=8, memory_mb=1024)
    report = run_render_job(inputs, tmp_path / "out", SMALL, progress=False, limits=limits, executor=ray_executor())
    assert report.done == [str(p) for p in assets[:2]]
    assert report.failed == [
        (str(hanging), f"{hanging}: stopped: exceeded the per-asset time limit of 8 s"),
        (str(exploding), f"{exploding}: stopped: exceeded the per-asset memory limit of 1024 MB"),
    ]
    assert {p.name for p in (tmp_path / "out").iterdir() if p.is_dir()} == expected_folders(assets[:2], SMALL)
    saved = json.loads((tmp_path / "out" / "render_report.json").read_text())
    assert [f["asset"] for f in saved["failed"]] == [str(hanging), str(exploding)]


def test_a_task_stuck_past_its_deadline_has_its_worker_killed(tmp_path, ray_cluster, assets):
    # No time limit inside the worker: only the executor's deadline can end this hang (as for a hang in C code).
    hanging = write_hanging_asset(tmp_path)
    report = run_render_job([hanging], tmp_path / "out", SMALL, progress=False,
                            executor=ray_executor(kill_after_s=3))
    assert report.failed == [(str(hanging), f"{hanging}: killed: still running 3 s after it was submitted")]
    # The cluster goes on with a new worker.
    report = run_render_job(assets[:1], tmp_path / "out", SMALL, progress=False, executor=ray_executor())
    assert report.done == [str(assets[0])]


def test_curate_on_ray_writes_the_same_manifest_as_the_process_pool(tmp_path, ray_cluster, assets):
    orbits = tmp_path / "orbits"
    run_render_job(assets, orbits, SMALL, progress=False)
    broken = orbits / "broken"  # an asset whose curation fails: its error row must match too
    shutil.copytree(orbits / assets[0].stem, broken)
    layout.frame_path(broken, layout.DYNAMIC, 3).unlink()
    rows = curate(orbits, workers=2, progress=False)
    assert [r["uid"] for r in rows if "error" in r] == ["broken"] and len(rows) == len(assets) + 1
    pool = (orbits / layout.MANIFEST).read_bytes()
    (orbits / layout.MANIFEST).unlink()
    assert cli_main(["-q", "curate", str(orbits), "--ray"]) == 0
    assert (orbits / layout.MANIFEST).read_bytes() == pool


def rendering_workers() -> list[int]:
    """Pids of this test's Ray workers that are running a render task now (Ray titles a busy worker
    ``ray::<task>``); found through /proc, among this process's descendants."""
    children: dict[int, list[int]] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            titles[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (ValueError, OSError):
            continue  # not a process, or gone meanwhile
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if titles.get(child, "").startswith("ray::render_in_ray_worker"):
                found.append(child)
    return found


def kill_one_worker_mid_asset(out: Path, killed: list, stop: threading.Event) -> None:
    """SIGKILL a worker that is rendering, once some asset is half written; its pid goes into ``killed``."""
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        half_written = [d for d in out.glob("*") if d.is_dir() and not (d / layout.METADATA).exists()
                        and any(d.glob("*.png"))]
        workers = rendering_workers() if half_written else []
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])
            return
        time.sleep(0.01)


def test_a_worker_killed_mid_job_leaves_every_asset_rendered_once(tmp_path, ray_cluster, assets):
    settings = RenderSettings(frames=24, size=64, samples=0)  # long enough per asset to be caught mid-write
    out = tmp_path / "out"
    out.mkdir()
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=kill_one_worker_mid_asset, args=(out, killed, stop))
    killer.start()
    try:
        report = run_render_job(assets, out, settings, progress=False, executor=ray_executor())
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught rendering"
    assert report.done == [str(p) for p in assets] and not report.failed
    assert {p.name for p in out.iterdir() if p.is_dir()} == expected_folders(assets, settings)
    for path in assets:  # every file once, none half-written (no temp files), nothing else
        for folder in expected_folders([path], settings):
            front = folder == path.stem
            assert {p.name for p in (out / folder).iterdir()} == orbit_files(settings.frames, front), folder


def test_without_ray_the_cli_says_how_to_install_it(tmp_path, assets, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if Ray were not installed
    code = cli_main(["-q", "render", str(assets[0]), "--out", str(tmp_path / "out"), "--ray"])
    assert code == 2
    assert "pip install 'diffusion4d[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # it stopped before any work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_joins_a_running_cluster_by_address(tmp_path, assets):
    pytest.importorskip("ray")
    port, log = free_port(), tmp_path / "ray_start.log"
    # A throwaway cluster on this machine: no token authentication (recent Ray turns it on for `ray start`).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # Its own temporary folder, where `ray start` also leaves the file that would make a later plain ray.init()
    # join this (then dead) cluster; short, for the Unix socket paths inside it.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=1",
            "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block"]
    try:
        with open(log, "w") as out, popen_group(head, stdout=out, stderr=subprocess.STDOUT, env=env) as cluster:
            deadline = time.monotonic() + HANG_TIMEOUT_S
            while ("Ray runtime started" not in log.read_text() and cluster.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.2)
            assert cluster.poll() is None, log.read_text()
            cmd = [sys.executable, "-m", "diffusion4d", "-q", "render", str(assets[0]), "--out",
                   str(tmp_path / "out"), *SMALL_ARGS, "--ray", f"127.0.0.1:{port}"]
            result = run_group(cmd, env=env)
    finally:  # after the cluster's process group was killed, on leaving popen_group
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "render_report.json").read_text())
    assert report["done"] == [str(assets[0])]
