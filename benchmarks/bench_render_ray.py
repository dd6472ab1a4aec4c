"""Assets per core-hour of the render job: the process pool against Ray's local cluster, on the same cores.

The same procedural assets (seed 123, as bench_render_job.py makes them) are rendered three times, each into a
fresh folder, with the render job's default settings (4 orbits of --frames views at --size², 2 front frames):
- pool: ``run_render_job(workers=cores)``, a pool of spawned processes (what ``diffusion4d render`` does);
- ray, cluster started by the job: ``RayExecutor(num_cpus=cores)`` starts a local cluster and stops it after,
  inside the timing (what ``diffusion4d render --ray`` does);
- ray, running cluster: a local cluster of ``cores`` CPUs started before the timing (as ``--ray ADDRESS`` joins).
Each is timed by wall clock, from the call to the report, and reported as assets / (wall hours × cores): the
cores are held for the whole job, startup included. The ratio to the pool is the figure of merit (goal ≥ 0.9).
The Ray runs' images are checked to be byte-identical to the pool's. With --repeat, the three runs are made in
turn, round after round, so that a change in the machine's other load falls on all of them, in an order that
rotates from round to round; medians are reported, and the median of each round's own ratio.

    python benchmarks/bench_render_ray.py [--assets 64] [--cores N] [--size 256] [--frames 24] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

from diffusion4d.assets.procedural import write_procedural_dataset
from diffusion4d.data.render_job import RenderSettings, run_render_job
from diffusion4d.data.render_ray import RayExecutor, import_ray

RUNS = ("pool", "ray, cluster started by the job", "ray, running cluster")


def timed_job(assets: list[Path], out: Path, settings: RenderSettings, **job) -> float:
    start = time.perf_counter()
    report = run_render_job(assets, out, settings, progress=False, **job)
    seconds = time.perf_counter() - start
    assert len(report.done) == len(assets), report.summary()
    return seconds


def same_images(a: Path, b: Path) -> bool:
    images = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    return images == sorted(p.relative_to(b) for p in b.rglob("*.png")) and all(
        (a / p).read_bytes() == (b / p).read_bytes() for p in images)


def timed_run(run: str, assets: list[Path], out: Path, settings: RenderSettings, cores: int) -> float:
    if run == RUNS[0]:
        return timed_job(assets, out, settings, workers=cores)
    if run == RUNS[1]:
        return timed_job(assets, out, settings, executor=RayExecutor(num_cpus=cores))
    ray = import_ray()
    ray.init(address="local", num_cpus=cores, include_dashboard=False)  # untimed: the cluster is already there
    try:
        return timed_job(assets, out, settings, executor=RayExecutor())
    finally:
        ray.shutdown()


def one_round(assets: list[Path], out: Path, settings: RenderSettings, cores: int, first: int) -> dict[str, float]:
    """Wall seconds of each run, each into a fresh folder, starting with run ``first`` (the order rotates from round
    to round, so that none always comes first or last); the Ray runs' images are checked against the pool's."""
    order = RUNS[first:] + RUNS[:first]
    seconds = {run: timed_run(run, assets, out / str(RUNS.index(run)), settings, cores) for run in order}
    for folder in ("1", "2"):
        assert same_images(out / "0", out / folder), f"{out / folder}: images differ from the pool's"
    shutil.rmtree(out)
    return seconds


def summarize(rounds: list[dict[str, float]], assets: int, cores: int) -> list[dict]:
    """Per run: the median wall time over the rounds → assets per core-hour, and its ratio to the pool's."""
    rows = []
    for run in RUNS:
        wall = statistics.median(r[run] for r in rounds)
        rows.append({"run": run, "wall_s": wall, "wall_s_each_round": [r[run] for r in rounds],
                     "per_core_hour": assets * 3600 / (wall * cores)})
    for row in rows:
        row["ratio_to_pool"] = row["per_core_hour"] / rows[0]["per_core_hour"]
    # Paired within each round (the runs of a round share the machine's load of the moment), then the median.
    for row, run in zip(rows, RUNS):
        row["ratio_each_round"] = [r[RUNS[0]] / r[run] for r in rounds]
        row["ratio_median_of_rounds"] = statistics.median(row["ratio_each_round"])
    return rows


def print_table(rows: list[dict], args, load: tuple) -> None:
    print(f"\nrender job, {args.assets} procedural assets, {args.frames} views × 4 orbits at {args.size}², "
          f"{args.cores} cores, median of {args.repeat} round(s); load average before: {load[0]:.2f}")
    print(f"{'run':<34}{'wall s':>9}{'assets/core-h':>15}{'ratio':>8}{'paired':>8}   each round (s)")
    for r in rows:
        each = " ".join(f"{s:.1f}" for s in r["wall_s_each_round"])
        print(f"{r['run']:<34}{r['wall_s']:>9.1f}{r['per_core_hour']:>15.0f}{r['ratio_to_pool']:>8.2f}"
              f"{r['ratio_median_of_rounds']:>8.2f}   {each}")
    print("ratio: of the median wall times; paired: the median over rounds of each round's own ratio")
    print("images of both Ray runs byte-identical to the pool's: yes")
    print("goal: Ray's assets per core-hour >= 0.9 x the pool's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=64, help="procedural assets (default 64)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="workers of each run (default: all)")
    parser.add_argument("--size", type=int, default=RenderSettings.size)
    parser.add_argument("--frames", type=int, default=RenderSettings.frames)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the three runs (default 1); medians")
    parser.add_argument("--out", default="/tmp/bench_render_ray", help="work folder; results.json is kept there")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    settings = RenderSettings(size=args.size, frames=args.frames)
    assets = write_procedural_dataset(out / "assets", args.assets, seed=123, progress=False)
    load = os.getloadavg()
    rounds = [one_round(assets, out / f"round{i}", settings, args.cores, i % len(RUNS)) for i in range(args.repeat)]
    rows = summarize(rounds, args.assets, args.cores)
    print_table(rows, args, load)
    summary = {"args": vars(args), "load_average_before": load, "load_average_after": os.getloadavg(),
               "python": platform.python_version(), "ray": import_ray().__version__, "results": rows}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {out / 'results.json'}")


if __name__ == "__main__":
    main()
