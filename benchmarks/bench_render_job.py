"""Assets per CPU-core-hour for the full data job, on procedural assets and on RiggedFigure.gltf.

The job per asset: the front-start and one random-start dynamic orbit plus their static orbits (T views each at
--size²), the two extra front frames of the SSIM test, all written as PNG + camera JSON, then curation (both SSIM
scores, out-of-boundary test, m per orbit). One process, llvmpipe limited to one thread, so wall time ≈ one core's
time; CPU time (user + system) is measured too and used for the per-core-hour figure.

    python benchmarks/bench_render_job.py [--count 24] [--repeat 8] [--size 256] [--frames 24]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ["LP_NUM_THREADS"] = "1"  # before any GL context exists: one core's worth of rasterization

from diffusion4d.assets.procedural import write_procedural_dataset  # noqa: E402
from diffusion4d.data.curate import CurationConfig, curate, summarize  # noqa: E402
from diffusion4d.data.render_job import RenderSettings, run_render_job  # noqa: E402

RIGGED_FIGURE = Path(__file__).resolve().parents[2] / "shared" / "assets" / "gltf" / "RiggedFigure.gltf"


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(name: str, assets: list[Path], out: Path, settings: RenderSettings) -> dict:
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    report = run_render_job(assets, out, settings, workers=1, progress=False)
    wall1 = time.perf_counter()
    rows = curate(out, CurationConfig(), workers=1, progress=False)
    wall2, cpu2 = time.perf_counter(), cpu_seconds()
    n = len(report.done)
    assert n == len(assets), report.summary()
    result = {
        "set": name, "assets": n,
        "render_s": (wall1 - wall0) / n, "curate_s": (wall2 - wall1) / n,
        "cpu_s": (cpu2 - cpu0) / n, "curation": summarize(rows),
    }
    result["per_core_hour"] = 3600 / result["cpu_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=24, help="procedural assets")
    parser.add_argument("--repeat", type=int, default=8, help="copies of RiggedFigure.gltf (distinct uids)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    settings = RenderSettings(size=args.size, frames=args.frames)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        procedural = write_procedural_dataset(tmp / "procedural", args.count, seed=123, progress=False)
        results.append(measure("procedural", procedural, tmp / "out_procedural", settings))
        if RIGGED_FIGURE.exists():
            (tmp / "rigged").mkdir()
            copies = [shutil.copy(RIGGED_FIGURE, tmp / "rigged" / f"RiggedFigure{i}.gltf") for i in range(args.repeat)]
            results.append(measure("RiggedFigure.gltf", [Path(c) for c in copies], tmp / "out_rigged", settings))
        else:
            print(f"(skipping RiggedFigure: {RIGGED_FIGURE} not found)")
    print(f"\nfull data job, {args.frames} views × 4 orbits (+2 front frames) at {args.size}², one core")
    print(f"{'set':<20}{'assets':>7}{'render s/asset':>16}{'curate s/asset':>16}{'CPU s/asset':>13}"
          f"{'assets/core-h':>15}")
    for r in results:
        print(f"{r['set']:<20}{r['assets']:>7}{r['render_s']:>16.3f}{r['curate_s']:>16.3f}{r['cpu_s']:>13.3f}"
              f"{r['per_core_hour']:>15.0f}")
    for r in results:
        print(f"curation of {r['set']}: {r['curation']}")
    print("goal: >= 300 assets per core-hour; the authors' Blender/Cycles job: about 11 assets per GPU-hour")


if __name__ == "__main__":
    main()
