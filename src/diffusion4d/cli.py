"""`diffusion4d …`: thin command-line wrappers over the package."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from diffusion4d.extras import MissingExtraError
from diffusion4d.io import write_json_atomic

# reconstruction.fit.DEFAULT_METHOD (a test holds them equal), spelled out so that parsing imports no torch
METHOD_HELP = "deformation field: scgs (control points, the default) or 4dgs (HexPlane)"


def _procedural(args) -> int:
    from diffusion4d.assets.procedural import write_procedural_dataset

    paths = write_procedural_dataset(args.out, count=args.count, seed=args.seed, progress=not args.quiet)
    print(f"wrote {len(paths)} assets and captions.jsonl to {Path(args.out).resolve()}")
    return 0


def _render_settings(args):
    from diffusion4d.data.render_job import RenderSettings

    animation = int(args.animation) if args.animation.lstrip("-").isdigit() else args.animation
    return RenderSettings(
        frames=args.frames, size=args.size, fov=args.fov, distance=args.distance, elevation=args.elevation,
        random_starts=args.random_starts, time_mode=args.time_mode, animation=animation, seed=args.seed,
        samples=args.samples, max_triangles=args.max_triangles, cull_back_faces=args.cull_back_faces,
    )


def _render_inputs(args) -> tuple[list, dict[str, str] | None, list[dict]]:
    """Assets, captions (None: each folder's captions.jsonl) and the inputs left out (not fatal)."""
    from diffusion4d.data import objaverse
    from diffusion4d.data.render_job import asset_uid, expand_assets

    assets, problems, captions = list(args.assets), [], None
    if (args.objaverse_uids is None) != (args.objaverse_dir is None):
        raise ValueError("--objaverse-uids and --objaverse-dir go together")
    if args.objaverse_uids:
        paths, problems = objaverse.resolve(args.objaverse_uids, args.objaverse_dir)
        assets += paths
    if not assets:
        raise ValueError("nothing to render: give assets, or --objaverse-uids with --objaverse-dir")
    if args.captions:
        captions = objaverse.read_captions_csv(args.captions, args.caption_prefix)
        problems += objaverse.uncaptioned([asset_uid(p) for p in expand_assets(assets)], captions, args.captions)
    return assets, captions, problems


def _render_executor(args):
    """None (the render job's process pool of --workers), or with --ray the Ray executor."""
    if args.ray is None:
        return None
    from diffusion4d.data.render_ray import RayExecutor

    return RayExecutor(address=args.ray, num_cpus=args.workers)


def _render(args) -> int:
    from diffusion4d.data.limits import AssetLimits
    from diffusion4d.data.render_job import run_render_job

    executor = _render_executor(args)  # first: a missing Ray is reported before any work
    limits = AssetLimits(seconds=args.asset_timeout, memory_mb=args.asset_memory_mb)
    assets, captions, problems = _render_inputs(args)
    report = run_render_job(assets, args.out, _render_settings(args), workers=args.workers, progress=not args.quiet,
                            captions=captions, problems=problems, limits=limits, executor=executor)
    print(report.summary())
    print(f"orbits in {Path(args.out).resolve()} (report: render_report.json)")
    return 1 if report.failed else 0  # the rest was finished; a non-zero exit tells scripts to look


def _curate(args) -> int:
    from diffusion4d.data.curate import CurationConfig, curate, summarize

    executor = None  # the process pool of --workers
    if args.ray is not None:  # first: a missing Ray or a malformed address is reported before any work
        from diffusion4d.data.curate_ray import RayCurator

        executor = RayCurator(address=args.ray, num_cpus=args.workers)
    config = CurationConfig(s_high=args.s_high, s_low=args.s_low, val_fraction=args.val_fraction)
    rows = curate(args.dir, config, workers=args.workers, progress=not args.quiet, executor=executor)
    print(summarize(rows))
    for row in rows:
        if "error" in row:
            print(f"  ERROR {row['uid']}: {row['error']}")
    print(f"manifest: {(Path(args.dir) / 'manifest.jsonl').resolve()}")
    return 0


def _demo(args) -> int:
    """The main job: image → 4D asset with the shipped default model; without one (or with --data), the data job."""
    from diffusion4d.pipelines.default import default_bundle_dir

    bundle = default_bundle_dir()
    if not args.data and (bundle / "manifest.json").is_file():
        return _demo_generate(args, bundle)
    if not args.data:
        print(f"no default model in {bundle} (benchmarks/train_default_model.py makes one): running the data job")
    return _demo_data(args)


def _demo_generate(args, bundle: Path) -> int:
    """A procedural asset's front view → 4D asset on this machine (the cpu preset without a GPU)."""
    from dataclasses import replace

    from diffusion4d.pipelines.default import read_manifest
    from diffusion4d.pipelines.generate import (
        GenerateSettings,
        OtherRunError,
        Prompt,
        generate,
        procedural_image_prompt,
    )

    manifest = read_manifest(bundle)
    out = Path(args.out)
    print(f"[1/2] image prompt: the front view of a procedural asset → {out / 'prompt'}")
    image = procedural_image_prompt(out / "prompt", manifest["image_size"], manifest["num_frames"])
    print("[2/2] image → 4D asset (a rerun resumes)")
    settings = GenerateSettings(seed=args.seed, progress=not args.quiet)
    try:
        result = generate(Prompt.one_of(image=image), out / "image_to_4d", settings)
    except OtherRunError as error:  # the demo's own folder, from another model or seed: replaced, not resumed
        print(f"{error.out}: holds a demo run of other inputs ({', '.join(error.changed)}): replacing it")
        result = generate(Prompt.one_of(image=image), out / "image_to_4d", replace(settings, overwrite=True))
    print(result.summary())
    return 0


def _demo_data(args) -> int:
    """procedural → render → curate on a small set: the package's end-to-end data job."""
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.curate import CurationConfig, curate, summarize
    from diffusion4d.data.render_job import RenderSettings, run_render_job

    out = Path(args.out)
    assets = out / "assets"
    orbits = out / "orbits"
    print(f"[1/3] procedural assets → {assets}")
    write_procedural_dataset(assets, count=args.count, seed=args.seed, progress=not args.quiet)
    print(f"[2/3] rendering orbits → {orbits}")
    report = run_render_job([assets], orbits, RenderSettings(size=args.size), workers=args.workers,
                            progress=not args.quiet)
    print(report.summary())
    print(f"[3/3] curating → {orbits / 'manifest.jsonl'}")
    rows = curate(orbits, CurationConfig(), workers=args.workers, progress=not args.quiet)
    print(summarize(rows))
    print(f"\ndataset written to {orbits.resolve()}\n"
          f"  load it with: diffusion4d.data.OrbitDataset('{orbits}')")
    return 0


def _train(args) -> int:
    from diffusion4d.diffusion.train import TrainConfig, train

    flags = {k: getattr(args, k) for k in (
        "data", "out", "condition", "preset", "stage", "init", "vae", "text_encoder", "text_states", "image_encoder",
        "max_steps",
        "batch_size", "grad_accum", "lr", "mixed_precision", "cond_dropout", "omega", "checkpoint_every", "seed",
        "data_workers", "log_every", "prediction_type", "beta_schedule", "timestep_spacing", "stream_lanes",
        "stream_window")}
    for switch in ("cuda_graph", "rescale_betas_zero_snr", "camera_embedding", "in_memory"):
        flags[switch] = getattr(args, switch) or None  # None: the config file's value
    config = TrainConfig.from_file(args.config, **flags)
    run = train(config, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process of a multi-GPU launch
        print(f"run written to {run.resolve()} (model: unet/, config: train_config.json, losses: loss.jsonl)")
    return 0


def _train_vae(args) -> int:
    from diffusion4d.diffusion.train_vae import VAEConfig, train_vae

    config = VAEConfig.from_overrides(**vars(args))
    out = train_vae(config, resume=args.resume, progress=not args.quiet)
    print(f"VAE written to {out.resolve()} (use it with `diffusion4d train --vae {out}`; losses: loss.jsonl)")
    return 0


def _encode(args) -> int:
    from diffusion4d.diffusion.components import load_or_build_vae
    from diffusion4d.diffusion.shards import encode_shards

    # under torchrun / accelerate launch, each process takes its share of the shards (and its own GPU)
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", "0"))
    world = args.world if args.world is not None else int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if _cuda() else "cpu")
    vae = load_or_build_vae(args.vae, None).to(device)
    report = encode_shards(args.data, args.out, vae, shard_size=args.shard_size, workers=args.workers, rank=rank,
                           world=world, vae_source=args.vae, progress=not args.quiet)
    print(f"process {rank} of {world}: {report.summary()}")
    if report.index:
        print(f"train on them with `diffusion4d train --data {args.out} …`")
    return 0


def _encode_text(args) -> int:
    from diffusion4d.diffusion.text_states import dataset_captions, write_text_states

    captions = dataset_captions(args.data)
    out = write_text_states(captions, args.text_encoder, args.out)
    print(f"{len(captions)} captions (with the empty prompt) encoded to {Path(out).resolve()} "
          f"(use it with `diffusion4d train --text-states {out}`)")
    return 0


def _sample(args) -> int:
    from diffusion4d.pipelines.orbit import OrbitPipeline, load_image_prompt, load_static_prompt, write_orbit

    prompts = [p for p in (args.prompt, args.image, args.static) if p is not None]
    if len(prompts) != 1:
        print("error: give exactly one of --prompt TEXT, --image PNG, --static ORBIT_DIR", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if _cuda() else "cpu")
    if args.compile and device == "cpu":
        print("--compile applies to CUDA devices only; sampling on the CPU without it")
    pipe = OrbitPipeline.from_run(args.model, base=args.base, device=device, compile=args.compile)
    pipe.guidance_every = args.guidance_every
    image = load_image_prompt(args.image, pipe.image_size) if args.image else None
    static, c2w = (load_static_prompt(args.static, pipe.image_size, pipe.num_frames) if args.static
                   else (None, None))
    start = time.perf_counter()
    frames = pipe(prompt=args.prompt, image=image, static=static, motion=args.motion, w1=args.w1, w2=args.w2,
                  steps=args.steps, seed=args.seed, progress=not args.quiet, c2w=c2w)
    seconds = time.perf_counter() - start  # the sampling and decoding only: what Table 1's generation time counts
    out = write_orbit(frames, args.out, c2w=c2w)
    write_json_atomic(Path(args.out) / "timing.json", {"seconds": seconds, "stage": "sample", "device": device})
    print(f"orbit of {len(frames)} views written to {out.resolve()} (multi_frame*.png, orbit.mp4, orbit.gif)")
    return 0


def _reconstruct(args) -> int:
    from diffusion4d.reconstruction.fit import PRESETS, FitDiverged, fit
    from diffusion4d.reconstruction.losses import perceptual_from_files

    device = args.device or ("cuda" if _cuda() else "cpu")
    preset = args.preset or ("fast" if device.startswith("cuda") else "cpu")
    config = PRESETS[preset][args.method]
    # built once, before the fit: a missing or wrong weight file fails here, by name
    perceptual = perceptual_from_files(args.lpips_weights, args.lpips_backbone, args.lpips_net, device)
    try:
        asset = fit(args.orbit_dir, args.out, args.method, config, static_dir=args.static, resume=args.resume,
                    device=device, perceptual=perceptual, progress=not args.quiet)
    except FitDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    asset.save(args.out)
    asset.export(args.out, size=config.size, backend=config.backend)
    print(f"4D asset ({args.method}, preset {preset}, {asset.canonical.num} Gaussians) written to "
          f"{Path(args.out).resolve()} (asset.json + *.safetensors, ply/time_XX.ply, renders/orbit_t*.mp4|gif)")
    return 0


def _generate(args) -> int:
    from diffusion4d.pipelines.generate import GenerateSettings, Prompt, generate

    prompt = Prompt.one_of(text=args.prompt, image=args.image, asset=args.asset, static=args.static)
    settings = GenerateSettings(motion=args.motion, seed=args.seed, preset=args.preset, steps=args.steps,
                                guidance_every=args.guidance_every, method=args.method, device=args.device,
                                bundle=args.bundle, lpips_weights=args.lpips_weights,
                                lpips_backbone=args.lpips_backbone, lpips_net=args.lpips_net,
                                overwrite=args.overwrite, progress=not args.quiet)
    result = generate(prompt, args.out, settings)
    print(result.summary())
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _evaluate(args) -> int:
    from diffusion4d.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(
        generated=args.generated, reference=args.reference, out=args.out, task=args.task, clip=args.clip,
        lpips_weights=args.lpips_weights, lpips_backbone=args.lpips_backbone, lpips_net=args.lpips_net,
        i3d_weights=args.i3d_weights, i3d_size=args.i3d_size, prompts=args.prompts,
        device=args.device or ("cuda" if _cuda() else "cpu"), progress=not args.quiet,
    )
    result = evaluate(config)
    for line in sorted(set(result["notes"].values())) + result["remarks"]:
        print(f"note: {line}")
    print(f"{len(result['items'])} items evaluated; report: {(Path(args.out) / 'report.md').resolve()} "
          f"(per uid: per_uid.json)")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=24, help="views per orbit, T (default 24)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--fov", type=float, default=39.6, help="field of view in degrees (default 39.6)")
    p.add_argument("--distance", type=float, default=2.0, help="camera distance (default 2.0)")
    p.add_argument("--elevation", type=float, default=0.0, help="camera elevation in degrees (default 0)")
    p.add_argument("--random-starts", type=int, default=1, help="random-start orbits per asset (default 1)")
    p.add_argument("--time-mode", choices=("official", "clip"), default="official",
                   help="official: frames 0..T-1 at 24 fps (the authors' renders); clip: spread over the clip")
    p.add_argument("--animation", default="0", help="animation index or name (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random start azimuths (default 0)")
    p.add_argument("--samples", type=int, default=4, help="MSAA samples (default 4; 0 = off)")
    p.add_argument("--max-triangles", type=int, default=2_000_000, help="refuse larger meshes (default 2e6)")
    p.add_argument("--cull-back-faces", action="store_true",
                   help="do not draw the back faces of single-sided materials, as the glTF spec says (default off: "
                        "both sides are drawn, as in the Blender renders our orbits are checked against)")


def _add_fit_lpips_options(p: argparse.ArgumentParser) -> None:
    """LPIPS in the fit's loss: the paper's L1 + LPIPS + depth smoothness (Sec. 3.4); without the files, D-SSIM
    stands in for LPIPS."""
    p.add_argument("--lpips-weights", help="the lpips release's linear layers (e.g. weights/v0.1/alex.pth): fit with "
                                           "L1 + LPIPS (default: L1 + D-SSIM)")
    p.add_argument("--lpips-backbone", help="torchvision AlexNet/VGG16 state dict for LPIPS (with --lpips-weights)")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")


def _add_loop_options(p: argparse.ArgumentParser, batch: str) -> None:
    """The options every training loop takes (train, train-vae); unset ones keep the config's values."""
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help=batch)
    p.add_argument("--lr", type=float)
    p.add_argument("--mixed-precision", choices=("no", "bf16"))
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-workers", type=int, help="processes loading orbits (default 2)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")


def _add_procedural_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("procedural", help="write seeded procedural animated assets (.glb) + captions.jsonl")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=_procedural)


def _add_render_command(sub: argparse._SubParsersAction, cpus: int) -> None:
    p = sub.add_parser("render", help="render assets to orbits in the official layout")
    p.add_argument("assets", nargs="*", help=".glb/.gltf files or folders of them")
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=cpus, help=f"parallel processes (default {cpus}); with --ray "
                                                               f"[local]: the local cluster's CPUs")
    _add_ray_option(p)
    p.add_argument("--asset-timeout", type=float, metavar="SECONDS",
                   help="stop an asset that renders longer than this and report it as failed (default: no limit)")
    p.add_argument("--asset-memory-mb", type=_positive_int, metavar="MB",
                   help="stop an asset whose render needs more memory than this and report it as failed "
                        "(address space on top of the worker's own; default: no limit)")
    p.add_argument("--objaverse-uids", metavar="FILE", help="Objaverse uids, one a line (as ObjV1_curated.txt)")
    p.add_argument("--objaverse-dir", metavar="DIR",
                   help="the objaverse package's cache (with hf-objaverse-v1/glbs/<group>/<uid>.glb)")
    p.add_argument("--captions", metavar="CSV", help="Cap3D's uid,caption file (default: captions.jsonl beside "
                                                     "the assets)")
    p.add_argument("--caption-prefix", default="", help='put before each --captions caption, e.g. '
                                                        '"a dynamic asset, " (default none)')
    _add_render_options(p)
    p.set_defaults(run=_render)


def _add_ray_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each asset as a Ray task (pip install 'diffusion4d[ray]'): on a local cluster started "
                        "for the job (no ADDRESS, or 'local'), or on the running cluster at ADDRESS")


def _add_curate_command(sub: argparse._SubParsersAction, cpus: int) -> None:
    # encode is left without --ray on purpose: it is GPU-bound, and its --rank/--world shards already spread it.
    p = sub.add_parser("curate", help="score, filter and split rendered orbits → manifest.jsonl",
                       epilog="`diffusion4d encode` (the next step) is GPU-bound and scales with --rank/--world, "
                              "one process per GPU (e.g. under torchrun or accelerate launch); it takes no --ray.")
    p.add_argument("dir")
    p.add_argument("--s-high", type=float, default=0.95, help="too still if both SSIM scores exceed this")
    p.add_argument("--s-low", type=float, default=0.4, help="broken if either SSIM score is below this")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=cpus, help=f"parallel processes (default {cpus}); with --ray "
                                                               f"[local]: the local cluster's CPUs")
    _add_ray_option(p)
    p.set_defaults(run=_curate)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the 3D-aware (--stage 3d) or 4D-aware (--stage 4d) video model")
    p.add_argument("config", nargs="?", help="JSON config file; flags override it")
    p.add_argument("--data", help="orbit folder with manifest.jsonl, or shards (diffusion4d encode)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--condition", choices=("text", "image", "static"))
    p.add_argument("--preset", choices=("tiny", "small", "full"))
    p.add_argument("--stage", choices=("3d", "4d"))
    p.add_argument("--init", help="our run (e.g. the 3d stage), a local diffusers base model folder, or a VideoMV "
                                  "checkpoint file (.pth/.safetensors)")
    p.add_argument("--vae", help="diffusers AutoencoderKL folder")
    p.add_argument("--text-encoder", help="local text model folder (CLIP or BERT-style) or 'minilm' (packaged)")
    p.add_argument("--text-states", help="pre-computed text states (diffusion4d encode-text) instead of the encoder")
    p.add_argument("--image-encoder", help="local CLIP vision model folder, or 'learned' (our own small encoder)")
    _add_loop_options(p, batch="orbits per step and process")
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--cond-dropout", type=float)
    p.add_argument("--omega", type=float, help="weight of L_mr")
    p.add_argument("--log-every", type=int, help="steps between loss logs (default 10)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="one CUDA device: replay each step from a CUDA graph (for small, launch-bound models)")
    # the schedule flags: unset, the --init base's scheduler config decides (else epsilon, scaled_linear, leading);
    # one that contradicts the base's is an error (diffusion/schedule.py)
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction"),
                   help="default: the --init base's, else epsilon")
    p.add_argument("--beta-schedule", choices=("scaled_linear", "linear", "squaredcos_cap_v2"),
                   help="default: the --init base's, else scaled_linear")
    p.add_argument("--rescale-betas-zero-snr", action="store_true",
                   help="zero terminal SNR (needs --prediction-type v_prediction; default: the --init base's)")
    p.add_argument("--timestep-spacing", choices=("leading", "trailing", "linspace"),
                   help="sampling's timesteps (trailing: start at t = T-1; default: the --init base's, else leading)")
    p.add_argument("--camera-embedding", action="store_true", help="condition each frame on its camera")
    p.add_argument("--stream-lanes", type=_positive_int,
                   help="--data SHARDS: streams the global batch is drawn from (it must divide the global batch and "
                        "be a multiple of the processes; default: the global batch); keep it when resuming")
    p.add_argument("--stream-window", type=_positive_int,
                   help="--data SHARDS: shards each lane shuffles together (default 1)")
    p.add_argument("--in-memory", action="store_true",
                   help="--data SHARDS: read every shard onto the device and sample as from the latent cache")
    p.set_defaults(run=_train)


def _add_train_vae_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-vae", help="train our small VAE (AutoencoderKL) on orbit frames")
    p.add_argument("--data", required=True, help="orbit folder with manifest.jsonl")
    p.add_argument("--out", required=True, help="the VAE folder (diffusers format)")
    p.add_argument("--size", type=int, help="image side (default 128)")
    _add_loop_options(p, batch="frames per step (default 16)")
    p.add_argument("--kl-weight", type=float)
    p.set_defaults(run=_train_vae)


def _add_encode_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode the training orbits once into latent shards (train --data SHARDS)")
    p.add_argument("--data", required=True, help="orbit folder with manifest.jsonl")
    p.add_argument("--out", required=True, help="the shard folder (a rerun finishes or updates it)")
    p.add_argument("--vae", help="diffusers AutoencoderKL folder (default: a fresh tiny VAE, for tests)")
    p.add_argument("--shard-size", type=_positive_int, default=64, help="orbits per shard (default 64)")
    p.add_argument("--workers", type=int, default=2, help="processes decoding orbits (default 2)")
    p.add_argument("--rank", type=int, help="this process's share of the shards, of --world (default: $RANK or 0)")
    p.add_argument("--world", type=_positive_int, help="processes sharing the encode (default: $WORLD_SIZE or 1)")
    p.add_argument("--device", help="default: cuda:$LOCAL_RANK when available, else cpu")
    p.set_defaults(run=_encode)


def _add_encode_text_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode-text", help="encode a dataset's captions once (for training without the encoder)")
    p.add_argument("--data", required=True, help="orbit folder with manifest.jsonl")
    p.add_argument("--text-encoder", required=True, help="local text model folder or 'minilm'")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.set_defaults(run=_encode_text)


def _add_sample_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample an orbit video from a trained model")
    p.add_argument("--model", required=True, help="a run folder")
    p.add_argument("--prompt")
    p.add_argument("--image")
    p.add_argument("--static", help="a static orbit folder (official layout)")
    p.add_argument("--base", help="the 3D-aware run, or a VideoMV checkpoint file (ε̄ of Eq. 3)")
    p.add_argument("--motion", type=float, default=0.02, help="motion magnitude m (pixel scale of Eq. 1)")
    p.add_argument("--w1", type=float, default=7.0)
    p.add_argument("--w2", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-every", type=_positive_int, default=1, metavar="K",
                   help="run Eq. 3's guidance branches every K-th step and reuse their term between (fewer model "
                        "calls, an approximation; default 1: every step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--compile", action="store_true",
                   help="GPU: compile the UNet blocks for faster steps (the first run on a machine compiles for "
                        "minutes; later runs read the cache in $TORCHINDUCTOR_CACHE_DIR or ~/.cache/diffusion4d)")
    p.add_argument("--out", required=True)
    p.set_defaults(run=_sample)


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score generated orbits / 4D assets against ground truth (Table 1)")
    p.add_argument("--generated", required=True, help="folder of <uid>/ generated orbits or 4D assets")
    p.add_argument("--reference", required=True, help="folder of <uid>/ ground-truth orbits (official layout)")
    p.add_argument("--out", required=True, help="where report.md, report.json and per_uid.json go")
    p.add_argument("--task", choices=("text", "image", "static"), default="image")
    p.add_argument("--clip", help="local CLIP model folder (CLIP-F, CLIP-O)")
    p.add_argument("--lpips-weights", help="the lpips release's linear layers (e.g. weights/v0.1/alex.pth)")
    p.add_argument("--lpips-backbone", help="torchvision AlexNet/VGG16 state dict for LPIPS")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    p.add_argument("--i3d-weights", help="Inception-I3D state dict, pytorch-i3d layout (FVD)")
    p.add_argument("--i3d-size", type=int, default=224, help="frame side fed to I3D (default 224, as trained)")
    p.add_argument("--prompts", help="captions.jsonl ({uid, caption} per line) for text-to-4D CLIP scores")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=_evaluate)


def _add_reconstruct_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="fit a 4D Gaussian asset to an orbit (coarse-to-fine, paper Sec. 3.4)")
    p.add_argument("orbit_dir", help="an orbit folder in the official layout (multi_frame*.png + multi*.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=("4dgs", "scgs"), default="scgs", help=METHOD_HELP)
    p.add_argument("--preset", choices=("gpu", "fast", "cpu"), help="default: fast on CUDA, cpu otherwise")
    p.add_argument("--static", help="static orbit folder (default: the static orbit in ORBIT_DIR, if any)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _add_fit_lpips_options(p)
    p.set_defaults(run=_reconstruct)


def _add_generate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="prompt → 4D asset: static orbit, 4D orbit, coarse-to-fine fit, export")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text prompt")
    prompt.add_argument("--image", help="image prompt (PNG/JPEG; transparency composited on white)")
    prompt.add_argument("--asset", help="static-3D-to-4D: a .glb/.gltf asset (its static orbit is rendered)")
    prompt.add_argument("--static", help="static-3D-to-4D: a static orbit folder (official layout)")
    p.add_argument("--out", required=True, help="output folder (a rerun of the same inputs resumes)")
    p.add_argument("--motion", type=float, default=0.02,
                   help="motion magnitude m (default 0.02); a warning says when it lies outside the m of the "
                        "bundle's training orbits, where the motion may not follow it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=("cpu", "gpu"), help="default: gpu on CUDA, cpu otherwise")
    p.add_argument("--bundle", help="default-model bundle folder (default: the one shipped in the package)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: 10 with --preset cpu, 50 with gpu)")
    p.add_argument("--guidance-every", type=_positive_int, metavar="K",
                   help="Eq. 3's guidance branches every K-th step, their term reused between (default: the "
                        "preset's)")
    p.add_argument("--method", choices=("4dgs", "scgs"), default="scgs", help=METHOD_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _add_fit_lpips_options(p)
    p.set_defaults(run=_generate)


def _add_demo_command(sub: argparse._SubParsersAction, cpus: int) -> None:
    p = sub.add_parser("demo", help="image → 4D asset with the shipped default model (else, or with --data: "
                                    "procedural → render → curate on a small set)")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--data", action="store_true", help="the data job even when a default model is shipped")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", type=int, default=cpus)
    p.set_defaults(run=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusion4d", description="Diffusion4D: 4D assets from video diffusion.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    cpus = max(1, (os.cpu_count() or 1))

    _add_procedural_command(sub)
    _add_render_command(sub, cpus)
    _add_curate_command(sub, cpus)
    _add_train_command(sub)
    _add_train_vae_command(sub)
    _add_encode_command(sub)
    _add_encode_text_command(sub)
    _add_sample_command(sub)
    _add_evaluate_command(sub)
    _add_reconstruct_command(sub)
    _add_generate_command(sub)
    _add_demo_command(sub, cpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, MissingExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
        if "out of memory" not in str(exc).lower():
            raise
        print("error: the device ran out of memory. Try a smaller --batch-size (with --grad-accum to keep the "
              "global batch), --mixed-precision bf16, a smaller --preset, or --device cpu for sampling.\n"
              f"({str(exc).splitlines()[0]})", file=sys.stderr)
        return 3
