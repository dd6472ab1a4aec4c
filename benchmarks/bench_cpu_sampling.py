"""One orbit sampling on the CPU with the shipped bundle, timed for two versions of the code side by side (issue 25:
the refactor must not slow the sampler).

    python benchmarks/bench_cpu_sampling.py --src OLD_SRC NEW_SRC [--rounds 3] [--calls 4] [--steps 10]
        [--threads 2] [--condition image] [--bundle DIR]

Each round runs one fresh process per source tree, in turn (A, B, then B, A in the next round, so neither always goes
first on a machine that warms or cools). A process loads `load_default(condition)` from its tree (with the same
bundle), samples once untimed (warm-up), then ``--calls`` times with the same prompt and seed, and reports each
call's seconds. Reported per tree: the minimum and median over all its calls, and the ratio of each to the first
tree's; the minimum is the figure least moved by other load on a shared machine. The outputs must be identical
(checked: the orbit's bytes are hashed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(args) -> None:
    """In the tree on PYTHONPATH: warm up, then time ``args.calls`` samplings; print one RESULT line."""
    import torch

    from diffusion4d.pipelines.default import load_default

    torch.set_num_threads(args.threads)
    pipe = load_default(args.condition, bundle=args.bundle)
    size, frames = pipe.image_size, pipe.num_frames
    g = torch.Generator().manual_seed(0)
    prompt = {"image": dict(image=torch.rand(3, size, size, generator=g)),
              "static": dict(static=torch.rand(frames, 3, size, size, generator=g)),
              "text": dict(prompt="a red robot arm waving")}[args.condition]
    pipe(**prompt, steps=args.steps, seed=0, progress=False)
    seconds, digest = [], None
    for _ in range(args.calls):
        start = time.perf_counter()
        frames_out = pipe(**prompt, steps=args.steps, seed=0, progress=False)
        seconds.append(time.perf_counter() - start)
        digest = hashlib.sha256(frames_out.tobytes()).hexdigest()
    print("RESULT " + json.dumps({"seconds": seconds, "sha256": digest}))


def run_tree(src: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--condition", args.condition, "--calls", str(args.calls),
           "--steps", str(args.steps), "--threads", str(args.threads)] + (["--bundle", args.bundle] * bool(args.bundle))
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"sampling with {src} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", nargs=2, metavar=("A", "B"), help="two source trees (their src/ folders)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--condition", choices=("image", "static", "text"), default="image")
    p.add_argument("--bundle", help="default: the bundle shipped in tree A")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if not args.src:
        p.error("--src A B is required")
    args.bundle = args.bundle or str(Path(args.src[0]) / "diffusion4d" / "weights" / "default")
    seconds = {src: [] for src in args.src}
    digests = set()
    for r in range(args.rounds):
        for src in (args.src if r % 2 == 0 else args.src[::-1]):
            result = run_tree(src, args)
            seconds[src] += result["seconds"]
            digests.add(result["sha256"])
            print(f"round {r + 1} {src}: " + " ".join(f"{s:.2f}" for s in result["seconds"]), flush=True)
    first = args.src[0]
    print(f"\n{args.condition}, {args.steps} steps, {args.threads} threads, {args.calls} calls x {args.rounds} rounds; "
          f"outputs identical: {'yes' if len(digests) == 1 else 'NO'}")
    for src in args.src:
        lo, mid = min(seconds[src]), statistics.median(seconds[src])
        print(f"{src}: min {lo:.2f} s ({lo / min(seconds[first]):.3f}x), median {mid:.2f} s "
              f"({mid / statistics.median(seconds[first]):.3f}x)")


if __name__ == "__main__":
    main()
