"""End to end on the CPU with tiny models: procedural → render (64², 8 views) → curate → 3D-aware stage → 4D-aware
stage → 3D-aware-guided sampling, each step timed. The text encoder is a tiny random CLIP written to disk (no
weights can be downloaded here), so the samples are not meaningful; the run shows the whole path works and how
long it takes.

    python benchmarks/bench_tiny_two_stage.py [--assets 6] [--steps 50] [--out outputs/tiny_two_stage]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from diffusion4d.cli import main as cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50, help="training steps per stage")
    parser.add_argument("--out", default="outputs/tiny_two_stage")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny encoders are test fixtures
    from tiny_models import make_tiny_text_encoder

    make_tiny_text_encoder(out / "text_encoder")
    train = ["--data", str(out / "orbits"), "--condition", "text", "--preset", "tiny", "--max-steps",
             str(args.steps), "--batch-size", "2", "--lr", "1e-4", "--text-encoder", str(out / "text_encoder")]
    steps = [
        ("procedural", ["procedural", "--count", str(args.assets), "--seed", "0", "--out", str(out / "assets")]),
        ("render 64² × 8", ["render", str(out / "assets"), "--out", str(out / "orbits"), "--size", "64", "--frames",
                            "8", "--workers", "2"]),
        ("curate", ["curate", str(out / "orbits"), "--val-fraction", "0", "--workers", "1"]),
        ("train 3D-aware", ["train", *train, "--stage", "3d", "--out", str(out / "run3d")]),
        ("train 4D-aware", ["train", *train, "--stage", "4d", "--init", str(out / "run3d"), "--out",
                            str(out / "run4d")]),
        ("sample (w1 7, w2 0.5, 50 steps)", ["sample", "--model", str(out / "run4d"), "--base", str(out / "run3d"),
                                             "--prompt", "a red bird flaps its wings", "--out", str(out / "sample")]),
    ]
    times = []
    for name, argv in steps:
        start = time.perf_counter()
        code = cli(["-q", *argv])
        times.append((name, time.perf_counter() - start))
        if code != 0:
            raise SystemExit(f"{name} failed with exit code {code}")
    print(f"\n{'step':<34}{'seconds':>9}")
    for name, seconds in times:
        print(f"{name:<34}{seconds:>9.1f}")
    print(f"{'total':<34}{sum(s for _, s in times):>9.1f}")


if __name__ == "__main__":
    main()
