"""Streamed against in-memory training (issue 22): steps/s, and peak host RSS and GPU memory as the dataset grows.

    python benchmarks/bench_streaming.py [--device cuda|cpu] [--preset small|tiny|full] [--samples 512]
        [--growth 1,10] [--shard-size 16] [--batch-size 8] [--steps 60] [--cuda-graph] [--text-encoder DIR] [--out DIR]

For each dataset size (``--samples`` × each ``--growth`` factor) it writes synthetic shards: random latents of the
preset's shapes (small: 128² images → 4 × 24 × 16 × 16 latents; tiny: 64² → 4 × 4 × 8 × 8; full: 256² →
4 × 24 × 32 × 32), through the package's shard writer, with an index as `diffusion4d encode` writes it and the VAE
beside them. Then, in a fresh process per measurement, it trains the text model ``--steps`` steps on them twice:
streamed (`train --data SHARDS`) and read whole onto the device (`--in-memory`, the latent cache's path). Each
process reports steps/s (the median of the logged intervals after the first), its peak RSS and its peak GPU memory
(torch.cuda.max_memory_allocated). The text encoder is all-MiniLM-L6-v2 (small; the packaged one), a tiny random
one (tiny), or a random 2-layer BERT of the full model's cross-attention width, 1024 (full: the paper's OpenCLIP
ViT-H text tower is not available offline; its forward pass, ~0.05 TFLOP for one prompt, is small beside the UNet's
step either way).

The goals of the issue: streamed ≥ 0.9 × the in-memory steps/s, and memory flat from 1× to 10×. Nothing is asserted;
the table is printed and saved in OUT/results.json. A streamed run holds at most 2 × lanes × window shards of its
process (the default: one lane per sample of the global batch, windows of one shard), so memory is flat only once
the 1× data has more shards than that: the defaults give 32 shards at 1×, a bound of 16. On two CPU cores,
`--device cpu --preset tiny --samples 32 --shard-size 4 --batch-size 2 --steps 12` takes about a minute.

The full preset (1.41 B parameters; issue 22 asks for its steps/s too) has its own defaults, ``--samples 128
--growth 1 --batch-size 1 --steps 150``: its goal is the speed ratio (memory flatness is measured at the small
preset), and batch 1 is what fits 80 GB beside its ~26 GiB of fp32 weights, gradients, AdamW state and EMA. Its peak
RSS is the model's, not the data's. Each run's final checkpoint (~28 GB) is deleted after its measurement, for the
disk. 150 steps, because each figure is the median of 5 logged intervals: with 30 steps (intervals of 5 steps) the
ratio came out 0.76, with 150 on the same warm machine 0.92 (BENCHMARKS.md, session 18). One device call, ~4 minutes
on a warm machine (from `benchmarks/`; the random 1024-wide BERT is made in OUT):

    timeout 540 python3 bench_streaming.py --device cuda --preset full --out /tmp/bsf
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# images, frames and latent side of each preset's orbits (presets.py); the VAE downsamples ×8
SHAPES = {"tiny": (64, 4), "small": (128, 24), "full": (256, 24)}
# the defaults of --samples, --growth, --batch-size and --steps: the full model needs ~26 GiB of optimizer state and
# ~1 GiB of activations per frame (batch 1 on an 80 GB GPU), and its 1x run must fit one device call with the writes
DEFAULTS = {"tiny": dict(samples=512, growth="1,10", batch_size=8, steps=60),
            "small": dict(samples=512, growth="1,10", batch_size=8, steps=60),
            "full": dict(samples=128, growth="1", batch_size=1, steps=150)}
# the text encoder width of the full model (its cross_attention_dim: presets.py, diffusers' default)
FULL_TEXT_WIDTH = 1024


def synthetic_latents(n: int, image: int, frames: int, start: int, seed: int):
    """``n`` random samples of OrbitLatents (numbered from ``start``: names and captions)."""
    from diffusion4d.diffusion.latent_cache import OrbitLatents

    g = torch.Generator().manual_seed(seed)
    h = image // 8
    return OrbitLatents(
        video=torch.randn(n, 4, frames, h, h, generator=g), static=torch.randn(n, 4, frames, h, h, generator=g),
        front=torch.rand(n, 3, image, image, generator=g) * 2 - 1,
        cameras=torch.eye(4).expand(n, frames, 4, 4).clone(), m=torch.rand(n, generator=g) * 0.05,
        captions=[f"a synthetic asset of kind {(start + i) % 10}" for i in range(n)],
        orbits=[f"synthetic_{start + i:07d}" for i in range(n)])


def write_synthetic_shards(out: Path, samples: int, shard_size: int, preset: str) -> Path:
    """``out``: shards of ``samples`` synthetic samples, their index and the VAE (a fresh tiny one)."""
    from diffusion4d.diffusion.components import tiny_vae
    from diffusion4d.diffusion.latent_cache import vae_digest, write_cache
    from diffusion4d.diffusion.shards import VAE_DIR, save_vae, shard_name, write_index

    if (out / "index.json").is_file():
        return out
    vae = tiny_vae()
    vae_id = vae_digest(vae)
    save_vae(out / VAE_DIR, vae, vae_id)
    image, frames = SHAPES[preset]
    entries = []
    for i, start in enumerate(range(0, samples, shard_size)):
        latents = synthetic_latents(min(shard_size, samples - start), image, frames, start, seed=i)
        path = out / shard_name(i)
        write_cache(path, latents, key=f"synthetic {i}", metadata={"vae": vae_id, "uids": json.dumps(latents.orbits)})
        entries.append({"file": path.name, "orbits": latents.orbits, "uids": latents.orbits,
                        "bytes": path.stat().st_size})
    write_index(out, entries, vae, vae_id, "a fresh tiny VAE", {"folder": "synthetic"}, shard_size)
    return out


def child(args) -> None:
    """One measurement in this process: train, then print the figures as one JSON line."""
    from diffusion4d.diffusion.train import TrainConfig, train

    start = time.perf_counter()
    log_every = max(1, args.steps // 6)
    config = TrainConfig(data=args.data, out=args.run, condition="text", preset=args.preset, max_steps=args.steps,
                         batch_size=args.batch_size, log_every=log_every, checkpoint_every=10**9,
                         text_encoder=args.text_encoder, in_memory=args.in_memory, cuda_graph=args.cuda_graph,
                         mixed_precision="bf16" if args.device == "cuda" else "no", lr=1e-4)
    run = train(config, progress=False)
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    seconds = statistics.median(r["seconds_per_step"] for r in (rows[1:] or rows))  # the first holds the warm-up
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    print("RESULT " + json.dumps({"steps_per_s": 1 / seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF)
                                  .ru_maxrss / 1024, "gpu_mb": gpu, "wall_s": time.perf_counter() - start}))


def measure(args, data: Path, in_memory: bool, text_encoder: str) -> dict:
    """Run one measurement in a fresh process (so peak RSS is its own) and return its figures."""
    run = Path(args.out) / "runs" / f"{data.name}_{'memory' if in_memory else 'stream'}"
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--run", str(run), "--preset", args.preset,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--text-encoder", text_encoder,
           "--device", args.device] + ["--in-memory"] * in_memory + ["--cuda-graph"] * args.cuda_graph
    env = {**os.environ, **({"ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {})}
    shutil.rmtree(run, ignore_errors=True)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if args.preset == "full":  # its final checkpoint (weights, EMA, AdamW) and EMA weights: ~28 GB a run
        for folder in ("checkpoints", "unet"):
            shutil.rmtree(run / folder, ignore_errors=True)
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed ({' '.join(cmd)}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def text_encoder_for(preset: str, out: Path) -> str:
    """The small text model's own encoder width (384: MiniLM); a tiny random CLIP text model for tiny; a random BERT
    of the full model's width (1024) for full."""
    if preset == "small":
        return "minilm"
    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny encoders are test fixtures
    from tiny_models import make_tiny_bert_text_encoder, make_tiny_text_encoder

    if preset == "full":
        folder = out / f"bert{FULL_TEXT_WIDTH}_text_encoder"
        if not (folder / "config.json").exists():
            make_tiny_bert_text_encoder(folder, hidden_size=FULL_TEXT_WIDTH)
        return str(folder)
    folder = out / "tiny_text_encoder"
    if not (folder / "config.json").exists():
        make_tiny_text_encoder(folder)
    return str(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", choices=tuple(SHAPES), default="small")
    p.add_argument("--samples", type=int, help="samples of the 1× dataset (default 512; full: 128)")
    p.add_argument("--growth", help="dataset sizes as multiples of --samples (default 1,10; full: 1)")
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, help="default 8; full: 1")
    p.add_argument("--steps", type=int, help="default 60; full: 150")
    p.add_argument("--cuda-graph", action="store_true", help="replay each step from a CUDA graph (both paths)")
    p.add_argument("--out", default="/tmp/bench_streaming")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--text-encoder", help="text encoder folder (default: MiniLM for small, a tiny random one for "
                   "tiny, a random BERT of width 1024 for full); e.g. a random BERT of MiniLM's width where its "
                   "weights package is not installed")
    p.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    for key, value in DEFAULTS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child:
        return child(args)
    out = Path(args.out)
    text_encoder = args.text_encoder or text_encoder_for(args.preset, out)
    results = []
    for factor in (int(x) for x in args.growth.split(",")):
        samples = factor * args.samples
        data = write_synthetic_shards(out / f"data_{samples}", samples, args.shard_size, args.preset)
        for in_memory in (True, False):
            figures = measure(args, data, in_memory, text_encoder)
            results.append({"growth": factor, "samples": samples, "mode": "in-memory" if in_memory else "streamed",
                            **figures})
            print(json.dumps(results[-1]), flush=True)
    print_table(args, results)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


def print_table(args, results: list[dict]) -> None:
    print(f"\n{args.preset} preset, batch {args.batch_size}, {args.steps} steps, {args.device}"
          f"{', CUDA graph' if args.cuda_graph else ''}, shards of {args.shard_size}")
    print(f"{'data':>6} {'samples':>8} {'mode':>10} {'steps/s':>8} {'vs memory':>9} {'peak RSS MB':>11} "
          f"{'peak GPU MB':>11}")
    memory = {r["samples"]: r["steps_per_s"] for r in results if r["mode"] == "in-memory"}
    for r in results:
        print(f"{r['growth']:>5}x {r['samples']:>8} {r['mode']:>10} {r['steps_per_s']:>8.2f} "
              f"{r['steps_per_s'] / memory[r['samples']]:>9.2f} {r['rss_mb']:>11.0f} {r['gpu_mb']:>11.0f}")


if __name__ == "__main__":
    main()
