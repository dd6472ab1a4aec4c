"""Full-size sampling time: our 3-branch sampler (Eq. 3) against diffusers' TextToVideoSDPipeline (2-branch CFG).

Both denoise 24 frames at 256² (4×32×32 latents) for 50 DDIM steps with full-size ModelScope-T2V UNets (random
weights: timing only), in the same process on the same GPU, bf16. The VAE decode is left out of both (the same
work in each): ours returns latents, diffusers' pipeline is asked for output_type="latent". Text states are random
[1, 77, 1024] tensors given to both.

Rows: diffusers; ours plain (the reference loop, eager); ours fast (``speedups=True``: CUDA graphs + ε̄ on a second
stream); ours compiled (the fast path with ``SamplerSpeedups(compile_blocks=True)``: the UNet blocks compiled by
Inductor, then captured in the CUDA graph). For the compiled rows the very first call, which compiles, is timed
alone ("first call s"); run the script twice with one TORCHINDUCTOR_CACHE_DIR to see the warm-cache cost. Each row is the best whole ``sample_latents`` call after one warm-up call, so a fast row includes its
per-call warm-up + graph capture; that one-off part is also reported alone, estimated from a 10-step call as
t(10 steps) − 10 × (t(steps) − t(10 steps)) / (steps − 10). "act. GiB" is the peak memory beyond the resident weights
of all the models loaded (peak statistics are reset before each row).

    python benchmarks/bench_sampler.py [--steps 50] [--frames 24] [--size 256] [--repeats 2]
                                       [--rows diffusers,plain,fast,fast2,compiled,compiled2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` runs after one warm-up, and peak GPU memory (GiB)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    from diffusion4d.diffusion.acceleration import SamplerSpeedups
    from diffusion4d.diffusion.sampling import sample_latents
    from diffusion4d.models.conditions import Condition
    from diffusion4d.models.presets import build_unet

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", default="diffusers,plain,fast,fast2",
                        help="comma-separated: diffusers, plain, fast, fast2 (w2=0), compiled, compiled2 (w2=0)")
    args = parser.parse_args()
    wanted = set(args.rows.split(","))
    wanted.add("diffusers")  # the reference of every ratio
    device, dtype = "cuda", torch.bfloat16
    h = args.size // 8
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: much faster than 3 × 1.4 B parameters on the CPU
        ours = build_unet("text", "full").to(dtype).eval()
        base = build_unet("text", "full", motion_embedding=False).to(dtype).eval()  # ε̄: the 3D-aware model
        theirs = UNet3DConditionModel().to(dtype).eval()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False)
    text = torch.randn(1, 77, 1024, device=device, dtype=dtype)
    empty = torch.randn(1, 77, 1024, device=device, dtype=dtype)
    m = torch.tensor([0.02], device=device)
    cond = Condition(encoder_hidden_states=text, motion=m, motion_keep=torch.ones(1, device=device))
    uncond = Condition(encoder_hidden_states=empty, motion=m, motion_keep=torch.zeros(1, device=device))
    base_cond = Condition(encoder_hidden_states=text)
    shape = (4, args.frames, h, h)

    def run_ours(w2: float, speedups, steps: int = args.steps):
        return lambda: sample_latents(ours, scheduler, cond, uncond, latent_shape=shape, seeds=[0], base_model=base,
                                      base_cond=base_cond, w1=7.0, w2=w2, steps=steps, device=device,
                                      dtype=dtype, progress=False, speedups=speedups)

    # The pipeline reads only the VAE's downsampling factor (8, from 4 levels) when asked for latents.
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 8, 8), norm_num_groups=8)
    pipe = TextToVideoSDPipeline(vae=vae.to(device, dtype), text_encoder=None, tokenizer=None,
                                 unet=theirs, scheduler=DDIMScheduler.from_config(scheduler.config))
    pipe.set_progress_bar_config(disable=True)

    def run_theirs():
        return pipe(prompt_embeds=text, negative_prompt_embeds=empty, num_frames=args.frames, height=args.size,
                    width=args.size, num_inference_steps=args.steps, guidance_scale=9.0, output_type="latent")

    torch.cuda.synchronize()
    resident = torch.cuda.memory_allocated() / 2**30
    compiled = SamplerSpeedups(compile_blocks=True)
    names = {
        "diffusers": "diffusers TextToVideoSDPipeline (2-branch CFG)",
        "plain": "ours plain, 3-branch (w1=7, w2=0.5)",
        "fast": "ours fast, 3-branch (w1=7, w2=0.5)",
        "fast2": "ours fast, 2-branch (w2=0)",
        "compiled": "ours compiled, 3-branch (w1=7, w2=0.5)",
        "compiled2": "ours compiled, 2-branch (w2=0)",
    }
    rel, first_call = {}, {}

    def relative_error(z):
        return ((z.float() - z_plain).norm() / z_plain.norm()).item()

    with torch.inference_mode():  # numerics: the fast path against the plain one, same models, same inputs
        z_plain = run_ours(0.5, False, 10)().float()
        rel["fast"] = relative_error(run_ours(0.5, True, 10)())

    def add_row(key, w2, speedups):
        seconds, peak = timed(run_ours(w2, speedups), args.repeats)
        short, _ = timed(run_ours(w2, speedups, 10), args.repeats)
        per_step = (seconds - short) / (args.steps - 10)
        rows[names[key]] = (seconds, peak, short - 10 * per_step)

    rows = {names["diffusers"]: (*timed(run_theirs, args.repeats), None)}  # name: (s, peak GiB, one-off s)
    if "plain" in wanted:
        rows[names["plain"]] = (*timed(run_ours(0.5, False), args.repeats), None)
    for key, w2 in (("fast", 0.5), ("fast2", 0.0)):
        if key in wanted:
            add_row(key, w2, True)
    # Last: compile_blocks changes the models in place, so every row above must run first.
    for key, w2, speedups in (("compiled", 0.5, compiled), ("compiled2", 0.0, compiled)):
        if key not in wanted:
            continue
        torch.cuda.synchronize()
        start = time.perf_counter()  # the first call compiles (or reads the cache): timed alone
        z = run_ours(w2, speedups, 10)()
        torch.cuda.synchronize()
        first_call[key] = time.perf_counter() - start
        if w2 == 0.5:
            rel[key] = relative_error(z)
        add_row(key, w2, speedups)
    ref = rows["diffusers TextToVideoSDPipeline (2-branch CFG)"][0]
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, {args.frames} frames at "
          f"{args.size}², {args.steps} DDIM steps, full-size UNets (random weights); resident weights "
          f"{resident:.1f} GiB")
    print(f"{'sampler':<48}{'seconds':>9}{'ms/step':>9}{'× diffusers':>13}{'one-off s':>11}{'peak GiB':>10}"
          f"{'act. GiB':>10}")
    for name, (seconds, peak, once) in rows.items():
        once_s = f"{once:.2f}" if once is not None else "-"
        print(f"{name:<48}{seconds:>9.2f}{1000 * seconds / args.steps:>9.1f}{seconds / ref:>13.2f}{once_s:>11}"
              f"{peak:>10.1f}{peak - resident:>10.2f}")
    for key, z_rel in rel.items():
        print(f"{key} vs plain after 10 steps: ||z - z_plain|| / ||z_plain|| = {z_rel:.2e}")
    for key, seconds in first_call.items():
        print(f"{names[key]}: first call (10 steps, compiles or reads the cache in "
              f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR')}) took {seconds:.1f} s")
    for key in ("fast", "compiled"):
        if names[key] in rows:
            ours = rows[names[key]][0]
            verdict = "met" if ours <= 0.6 * ref and ours <= 3.5 else "not met"
            print(f"goal, {key}: ours (3-branch) <= 0.6x diffusers and <= 3.5 s on an H100: {ours / ref:.2f}x, "
                  f"{ours:.2f} s -> {verdict}")


if __name__ == "__main__":
    main()
