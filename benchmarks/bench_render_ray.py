"""Assets per core-hour of the render job: the process pool against Ray's local cluster, on the same cores.

The same procedural assets (seed 123, as bench_render_job.py makes them) are rendered three times, each into a
fresh folder, with the render job's default settings (4 orbits of --frames views at --size², 2 front frames):
- pool: ``run_render_job(workers=cores)``, a pool of spawned processes (what ``diffusion4d render`` does);
- ray, cluster started by the job: ``RayExecutor(num_cpus=cores)`` starts a local cluster and stops it after,
  inside the timing (what ``diffusion4d render --ray`` does);
- ray, running cluster: a local cluster of ``cores`` CPUs started before the timing (as ``--ray ADDRESS`` joins).
Each is timed by wall clock, from the call to the report, and reported as assets / (wall hours × cores): the
cores are held for the whole job, startup included. The ratio to the pool is the figure of merit (goal ≥ 0.9).
The Ray runs' images are checked to be byte-identical to the pool's.

    python benchmarks/bench_render_ray.py [--assets 64] [--cores N] [--size 256] [--frames 24] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from diffusion4d.assets.procedural import write_procedural_dataset
from diffusion4d.data.render_job import RenderSettings, run_render_job
from diffusion4d.data.render_ray import RayExecutor, import_ray


def timed_job(name: str, assets: list[Path], out: Path, settings: RenderSettings, cores: int, **job) -> dict:
    start = time.perf_counter()
    report = run_render_job(assets, out, settings, progress=False, **job)
    seconds = time.perf_counter() - start
    assert len(report.done) == len(assets), report.summary()
    return {"run": name, "assets": len(assets), "cores": cores, "wall_s": seconds,
            "per_core_hour": len(assets) * 3600 / (seconds * cores)}


def same_images(a: Path, b: Path) -> bool:
    images = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    return images == sorted(p.relative_to(b) for p in b.rglob("*.png")) and all(
        (a / p).read_bytes() == (b / p).read_bytes() for p in images)


def run_all(assets: list[Path], out: Path, settings: RenderSettings, cores: int) -> list[dict]:
    ray = import_ray()
    results = [timed_job("pool", assets, out / "pool", settings, cores, workers=cores)]
    results.append(timed_job("ray, cluster started by the job", assets, out / "ray_cold", settings, cores,
                             executor=RayExecutor(num_cpus=cores)))
    ray.init(num_cpus=cores, include_dashboard=False)
    try:
        results.append(timed_job("ray, running cluster", assets, out / "ray_warm", settings, cores,
                                 executor=RayExecutor()))
    finally:
        ray.shutdown()
    for result, folder in zip(results[1:], ("ray_cold", "ray_warm")):
        result["images_identical_to_pool"] = same_images(out / "pool", out / folder)
    for result in results:
        result["ratio_to_pool"] = result["per_core_hour"] / results[0]["per_core_hour"]
    return results


def print_table(results: list[dict], settings: RenderSettings, load: tuple) -> None:
    print(f"\nrender job, {results[0]['assets']} procedural assets, {settings.frames} views × 4 orbits at "
          f"{settings.size}², {results[0]['cores']} cores; load average before: {load[0]:.2f}")
    print(f"{'run':<34}{'wall s':>9}{'assets/core-h':>15}{'ratio':>8}{'same images':>13}")
    for r in results:
        same = {True: "yes", False: "NO", None: "-"}[r.get("images_identical_to_pool")]
        print(f"{r['run']:<34}{r['wall_s']:>9.1f}{r['per_core_hour']:>15.0f}{r['ratio_to_pool']:>8.2f}{same:>13}")
    print("goal: Ray's assets per core-hour >= 0.9 x the pool's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=64, help="procedural assets (default 64)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="workers of each run (default: all)")
    parser.add_argument("--size", type=int, default=RenderSettings.size)
    parser.add_argument("--frames", type=int, default=RenderSettings.frames)
    parser.add_argument("--out", default="/tmp/bench_render_ray", help="work folder; results.json is kept there")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # fresh output folders for every run
    settings = RenderSettings(size=args.size, frames=args.frames)
    assets = write_procedural_dataset(out / "assets", args.assets, seed=123, progress=False)
    load = os.getloadavg()
    results = run_all(assets, out, settings, args.cores)
    print_table(results, settings, load)
    for folder in ("pool", "ray_cold", "ray_warm"):
        shutil.rmtree(out / folder)
    summary = {"args": vars(args), "load_average_before": load, "load_average_after": os.getloadavg(),
               "python": platform.python_version(), "ray": import_ray().__version__, "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {out / 'results.json'}")


if __name__ == "__main__":
    main()
