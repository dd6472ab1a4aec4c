"""GIF encoding: time, error and flicker of `io.gif_bytes` (a palette per frame) against one palette per clip.

    python benchmarks/bench_gif.py [--frames 36] [--size 256] [--repeats 3]

Three clips: random noise (a stand-in for renders of a noisy fit, the octree's worst case); a turn-like clip (a shaded
sphere whose texture slides one column per frame over a fixed, textured ground: most pixels never change); and
tests/test_io.py's gradient, whose frames have different colours. Per encoder: the best encode time, the mean absolute
error of the decoded frames (levels of 255; n/a when frames were merged), the frames decoded, and flicker — the mean
change of the decoded frames between consecutive frames at pixels whose input did not change (0 is perfectly stable).
"""

from __future__ import annotations

import argparse
import io
import time

import imageio.v3 as iio
import numpy as np
from PIL import Image

from diffusion4d.io import gif_bytes


def shared_palette(frames: np.ndarray, fps: int) -> bytes:
    """The alternative: one 256-colour palette for the clip (the octree on every frame subsampled ×4 each way),
    each frame mapped to it, no dithering."""
    mosaic = np.ascontiguousarray(frames[:, ::4, ::4].reshape(-1, *frames.shape[2:]))
    palette = Image.fromarray(mosaic).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    indexed = [Image.fromarray(np.ascontiguousarray(f)).quantize(palette=palette, dither=Image.Dither.NONE)
               for f in frames]
    buffer = io.BytesIO()
    indexed[0].save(buffer, format="GIF", save_all=True, append_images=indexed[1:], duration=round(1000 / fps),
                    loop=0)
    return buffer.getvalue()


def gradient_clip(T: int, S: int) -> np.ndarray:
    """tests/test_io.py's clip, at any size: an RG gradient whose blue level differs in every frame."""
    yy, xx = np.mgrid[:S, :S] * 256 // S
    return np.stack([np.stack([xx, yy, np.full_like(xx, (40 * k) % 256)], -1) for k in range(T)]).astype(np.uint8)


def turn_clip(T: int, S: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    ground = (rng.integers(0, 40, (S, S, 3)) + np.linspace(150, 230, S)[:, None, None]).astype(np.uint8)
    yy, xx = np.mgrid[:S, :S] / S
    inside = (xx - 0.5) ** 2 + (yy - 0.45) ** 2 < 0.09
    shade = np.clip(1.2 - 2.5 * np.hypot(xx - 0.4, yy - 0.35), 0.2, 1.0)
    texture = rng.integers(0, 255, (S, S, 3))
    frames = []
    for t in range(T):
        colour = np.roll(texture, t, axis=1) * shade[..., None]
        frames.append(np.where(inside[..., None], colour, ground).astype(np.uint8))
    return np.stack(frames)


def scores(encode, frames: np.ndarray, repeats: int) -> tuple[float, float, float, int, int]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data = encode(frames, 8)
        best = min(best, time.perf_counter() - start)
    back = iio.imread(data)[..., :3].astype(int)
    if len(back) != len(frames):  # PIL merges consecutive frames that quantise to the same image
        return best, float("nan"), float("nan"), len(data), len(back)
    error = np.abs(back - frames).mean()
    still = np.all(frames[1:] == frames[:-1], axis=-1)  # [T-1, S, S] input unchanged between t and t+1
    flicker = np.abs(back[1:] - back[:-1]).sum(-1)[still].mean() / 3 if still.any() else float("nan")
    return best, error, flicker, len(data), len(back)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    T, S = args.frames, args.size
    clips = {"random noise": np.random.default_rng(1).integers(0, 256, (T, S, S, 3), dtype=np.uint8),
             "turn": turn_clip(T, S), "gradient, blue per frame": gradient_clip(T, S)}
    print(f"{T} frames at {S}², best of {args.repeats}\n")
    print("| clip | encoder | s | error | flicker | KiB | frames decoded |\n|---|---|---|---|---|---|---|")
    for name, frames in clips.items():
        encoders = (("io.gif_bytes (palette per frame)", gif_bytes), ("one palette per clip", shared_palette))
        for label, encode in encoders:
            seconds, error, flicker, size, decoded = scores(encode, frames, args.repeats)
            print(f"| {name} | {label} | {seconds:.3f} | {error:.2f} | {flicker:.3f} | {size / 1024:.0f} | "
                  f"{decoded} of {len(frames)} |")


if __name__ == "__main__":
    main()
