"""The training recipe of the embedded default model, one rerunnable command:

    procedural assets → render (front + random-start orbits, each with its static orbit) → curate → train the VAE
    → encode the captions once (text states) → 3D-aware stage for text and for image (+ the learned image encoder)
    → 4D-aware stages for text, image and static (each from its 3D-aware run, with m conditioning and L_mr)
    → DIR/default/: fp16 safetensors + JSON of the 5 UNets, the VAE, the image encoder, manifest.json, loss_*.jsonl

    python benchmarks/train_default_model.py --out DIR [--assets 120 --size 128 --vae-steps 1500 --steps-3d 1500
        --steps-4d 1000 --batch-size 16 --mixed-precision bf16] [--orbits ORBITS --text-states FILE] [--pack OUT]
        [--parallel] [--cuda-graph] [--budget-minutes M] [--prediction-type epsilon|v_prediction]
        [--continue-from BUNDLE [--runs image_3d,image_4d,static_4d]]
    python benchmarks/train_default_model.py --out DIR --toy      # the whole path on a CPU in a couple of minutes
    python benchmarks/train_default_model.py --out DIR --prepare-only   # data + text states only (to carry)

Rerunning the command skips finished phases (DIR/phases.json) and resumes a killed training phase from its last
checkpoint. ``--continue-from BUNDLE`` trains further from a bundle this recipe made (each run starts from the
bundle's model, the learned image encoder from the bundle's, the VAE is the bundle's and is not trained again; fresh
optimizers): device time can then accumulate over several calls, each bringing back only the bundle; ``--runs``
trains only some of the runs further and keeps the others as they are (their loss curves go on across calls).

The shipped bundle (src/diffusion4d/weights/default) was made by five calls (BENCHMARKS.md has the figures), four
on one H200; the first two on 100 assets:

    python benchmarks/train_default_model.py --out A --orbits PREP/orbits --text-states PREP/text_states.safetensors \
        --mixed-precision bf16 --batch-size 16 --vae-steps 6000 --steps-3d 20000 --steps-4d 20000 --data-workers 14 \
        --budget-minutes 7.0 --parallel --cuda-graph --pack OUT
    python benchmarks/train_default_model.py --out B --continue-from A/default --runs image_3d,image_4d,static_4d \
        --prediction-type v_prediction --text-states PREP/text_states.safetensors --mixed-precision bf16 \
        --batch-size 16 --steps-3d 40000 --steps-4d 40000 --data-workers 14 --budget-minutes 8.4 --parallel \
        --cuda-graph --pack OUT

then two on 600 assets (the models had memorised the 200 orbits), all five runs, each call from the last's bundle
(C from B's, D from C's; D reused C's rendered orbits with ``--orbits``); TEXT600 is the text states of the 600
assets' captions, e.g. PREP600/text_states.safetensors from ``--out PREP600 --assets 600 --prepare-only`` (the
session encoded the same captions straight from the procedural captions.jsonl with `write_text_states`):

    python benchmarks/train_default_model.py --out C --assets 600 --continue-from B/default \
        --prediction-type v_prediction --text-states TEXT600 --mixed-precision bf16 --batch-size 16 \
        --steps-3d 40000 --steps-4d 40000 --data-workers 14 --budget-minutes 8.7 --parallel --cuda-graph --pack OUT
    (D: the same with --continue-from C/default --orbits C/orbits --budget-minutes 7.4)

and its manifest's ``guidance`` set to w1 = 3, w2 = 0.5 after `bench_default_quality.py --w1 3`; then one on an H100
(session 13) for the image runs only, on 1,000 assets, with this recipe's defaults (v-prediction, zero terminal SNR,
trailing, cameras):

    python benchmarks/train_default_model.py --out E --assets 1000 --continue-from D/default \
        --runs image_3d,image_4d,static_4d --mixed-precision bf16 --batch-size 16 --steps-3d 40000 --steps-4d 40000 \
        --data-workers 14 --budget-minutes 8.5 --parallel --cuda-graph --pack OUT

and the guidance set to w1 = 3, w2 = 0 after `bench_paper_claims.py --claims c` (new bundles get ``--guidance W1 W2``,
default the paper's 7 and 0.5).

(PREP from ``--prepare-only`` on a machine with the text encoder; the second call rendered the same 100 assets
itself.) The five UNet runs share one latent cache, DIR/runs/latents.safetensors (every orbit encoded once by the
VAE; ~80 MB at 200 orbits, 128², T = 24: leave it out of what you bring back). ``--orbits`` takes orbits rendered
(and curated) beforehand, e.g. on a machine with a renderer; ``--text-states`` a file from `diffusion4d encode-text`
(for a machine without the text encoder's package).
``--pack OUT`` also writes the bundle as ``default.tar.part-00 …`` (≤ 15 MiB each) into OUT; unpack with
``cat default.tar.part-* | tar x -C src/diffusion4d/weights/``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path

TOY = dict(assets=3, size=64, frames=4, vae_steps=12, steps_3d=2, steps_4d=2, batch_size=2, vae_batch_size=4)
FULL = dict(assets=100, size=128, frames=24, vae_steps=2000, steps_3d=2000, steps_4d=1500, batch_size=16,
            vae_batch_size=32)
RUNS = ("text_3d", "image_3d", "text_4d", "image_4d", "static_4d")
#: with --parallel, the runs of one group train at the same time, one process each, on one GPU: a small UNet's step
#: leaves the GPU idle between kernel launches, so two or three processes share it at little cost per step
GROUPS = (("text_3d", "image_3d"), ("text_4d", "image_4d", "static_4d"))
#: shares of --budget-minutes: each training phase gets its weight's share of the time left when it starts
#: (a parallel group counts as one phase, with its members' largest weight)
WEIGHTS = {"vae": 1.0, "text_3d": 2.0, "image_3d": 2.0, "text_4d": 1.5, "image_4d": 1.5, "static_4d": 1.5}
SETUP_SECONDS = 8  # per training phase: models, data workers, the final save — outside the timed loop


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--toy", action="store_true", help="tiny counts, 64², tiny presets: a CPU check of the path")
    p.add_argument("--assets", type=int)
    p.add_argument("--size", type=int, help="image side (128 for the default)")
    p.add_argument("--frames", type=int, help="views per orbit T (24)")
    p.add_argument("--val-fraction", type=float, default=0.0, help="assets held out by curation")
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--steps-3d", type=int)
    p.add_argument("--steps-4d", type=int)
    p.add_argument("--batch-size", type=int, help="orbits per UNet step")
    p.add_argument("--vae-batch-size", type=int, help="frames per VAE step")
    p.add_argument("--lr-3d", type=float, default=2e-4, help="from scratch: far above the paper's fine-tuning 3e-5")
    p.add_argument("--lr-4d", type=float, default=1e-4)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--guidance", type=float, nargs=2, metavar=("W1", "W2"), default=(7.0, 0.5),
                   help="Eq. 3's w1, w2 the bundle samples with by default (manifest 'guidance'; choose them with "
                        "bench_default_quality.py --w1 / --w2)")
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="v_prediction",
                   help="what the UNets of this call learn to predict (a run continued from an ε model may switch "
                        "to v: its features carry over)")
    p.add_argument("--zero-snr", action=argparse.BooleanOptionalAction, default=True,
                   help="betas rescaled to zero terminal SNR and trailing timesteps (default; needs v-prediction). "
                        "--no-zero-snr: Stable Diffusion's schedule, whose z_T still holds the orbit's mean colour")
    p.add_argument("--cameras", action=argparse.BooleanOptionalAction, default=True,
                   help="condition each frame on its camera (default; a continued model without the layer gets it)")
    p.add_argument("--omega", type=float, default=1.0, help="weight ω of L_mr in the 4D-aware runs (0: off)")
    p.add_argument("--mixed-precision", choices=("no", "bf16"), default="no")
    p.add_argument("--data-workers", type=int, default=2)
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay each UNet training step from a CUDA graph (TrainConfig.cuda_graph; one GPU)")
    p.add_argument("--parallel", action="store_true",
                   help="train the two 3D-aware runs at once, then the three 4D-aware ones (a process each)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="cpu hides the GPUs (default: whatever is there)")
    p.add_argument("--orbits", help="rendered + curated orbits to use instead of rendering")
    p.add_argument("--text-encoder", default="minilm", help="text encoder for the captions (default minilm)")
    p.add_argument("--text-states", help="pre-computed text states instead of running the text encoder")
    p.add_argument("--pack", help="also write the bundle as ≤ 15 MiB tar parts into this folder")
    p.add_argument("--prepare-only", action="store_true",
                   help="stop after the data and the text states (DIR/orbits, DIR/text_states.safetensors)")
    p.add_argument("--continue-from", metavar="BUNDLE",
                   help="a bundle of this recipe (e.g. the shipped one) to train further: same data and VAE")
    p.add_argument("--runs", default=",".join(RUNS),
                   help="with --continue-from: the runs to train further, comma-separated; the others are kept "
                        "from the bundle as they are (e.g. image_3d,image_4d: the models `demo` uses)")
    p.add_argument("--widen", default="",
                   help="with --continue-from: image runs of --runs (comma-separated) whose UNet first doubles its "
                        "channels, computing the same function (models/widen.py), to train on with more capacity")
    p.add_argument("--budget-minutes", type=float,
                   help="wall-clock budget of the whole call: each training phase stops early at its share of it "
                        "(checkpointed; steps reached go to the manifest)")
    args = p.parse_args(argv)
    for key, value in (TOY if args.toy else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.runs.split(",")) - set(RUNS)
    if unknown:
        p.error(f"--runs: unknown runs {sorted(unknown)}; the runs are {', '.join(RUNS)}")
    args.runs = tuple(r for r in RUNS if r in args.runs.split(","))  # in training order
    if args.runs != RUNS and not args.continue_from:
        p.error("--runs needs --continue-from: a fresh bundle trains every run")
    args.widen = tuple(r for r in args.widen.split(",") if r)
    if args.widen and not (args.continue_from and set(args.widen) <= set(args.runs) - {"text_3d", "text_4d"}):
        p.error(f"--widen {','.join(args.widen)}: only image runs that this call trains from --continue-from "
                f"(--runs {','.join(args.runs)}) can be widened")
    if "image_3d" in args.runs and not {"image_4d", "static_4d"} <= set(args.runs):
        p.error("--runs: image_3d trains the image encoder that image_4d and static_4d are conditioned through; "
                "train them too")
    return args


class Phases:
    """Which phases are finished, and their times, in DIR/phases.json (a rerun skips the finished ones)."""

    def __init__(self, out: Path, budget_minutes: float | None = None):
        self.path = out / "phases.json"
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.deadline = time.perf_counter() + 60 * budget_minutes if budget_minutes else None

    def seconds_for(self, names: tuple[str, ...], groups: tuple[tuple[str, ...], ...]) -> float | None:
        """The time of the phases ``names`` (run together; set-up included): their share of the budget left, among the
        unfinished ``groups`` (None: no budget)."""
        if self.deadline is None:
            return None
        todo = [g for g in groups if any(p not in self.done for p in g)]
        left = self.deadline - time.perf_counter() - SETUP_SECONDS * len(todo)
        weight = lambda group: max(WEIGHTS[p] for p in group)  # noqa: E731
        return max(5.0, left * weight(names) / sum(weight(g) for g in todo))

    def run(self, name: str, fn) -> None:
        self.run_together((name,), lambda names: fn())

    def run_together(self, names: tuple[str, ...], fn) -> None:
        """``fn(unfinished names)``, then all of ``names`` are finished, each with the call's wall time."""
        for name in names:
            if name in self.done:
                print(f"[{name}] done before ({self.done[name]['seconds']:.1f} s), skipped")
        todo = tuple(n for n in names if n not in self.done)
        if not todo:
            return
        label = " + ".join(todo)
        print(f"[{label}] …", flush=True)
        start = time.perf_counter()
        fn(todo)
        seconds = round(time.perf_counter() - start, 2)
        self.done.update({name: {"seconds": seconds} for name in todo})
        from diffusion4d.io import write_json_atomic

        write_json_atomic(self.path, self.done)
        print(f"[{label}] {seconds:.1f} s", flush=True)


def cli(*argv: str) -> None:
    from diffusion4d.cli import main as diffusion4d

    code = diffusion4d(["-q", *argv])
    if code != 0:
        raise SystemExit(f"diffusion4d {argv[0]} failed with exit code {code}")


def make_data(args, out: Path) -> None:
    cli("procedural", "--count", str(args.assets), "--seed", "0", "--out", str(out / "assets"))
    cli("render", str(out / "assets"), "--out", str(out / "orbits"), "--size", str(args.size), "--frames",
        str(args.frames), "--random-starts", "1", "--workers", str(max(1, (os.cpu_count() or 1))))
    curate(args, out / "orbits")


def curate(args, orbits: Path) -> None:
    extra = ["--s-low", "-1", "--s-high", "1"] if args.toy else []  # tiny renders: keep all that is in frame
    cli("curate", str(orbits), "--val-fraction", str(args.val_fraction), "--workers",
        str(min(8, os.cpu_count() or 1)), *extra)


def train_run(args, out: Path, orbits: Path, name: str, text_states: Path, until: float | None) -> None:
    """One run, stopping at the wall-clock time ``until`` (``time.time()``; None: no budget)."""
    from diffusion4d.diffusion.train import TrainConfig, train

    # a deadline, not a duration: what was spent before this run (with --parallel, the latent cache and the
    # processes' start) comes out of the phase's share
    max_seconds = None if until is None else max(5.0, until - time.time())

    condition, stage = name.split("_")
    init = None
    if args.continue_from:  # each run from the bundle's own model (init_runs_from_bundle)
        init = str(out / "init" / name)
        if stage == "4d" and condition != "text":  # the image encoder the image_3d run of this call went on to train
            shutil.copytree(out / "runs" / "image_3d" / "image_encoder", Path(init) / "image_encoder",
                            dirs_exist_ok=True)
    elif stage == "4d":
        init = str(out / "runs" / ("text_3d" if condition == "text" else "image_3d"))
    config = TrainConfig(
        data=str(orbits), out=str(out / "runs" / name), condition=condition, stage=stage, init=init,
        preset="tiny" if args.toy else "small", vae=str(out / "vae"), image_encoder="learned",
        text_states=str(text_states) if condition == "text" else None,
        max_steps=args.steps_3d if stage == "3d" else args.steps_4d, batch_size=args.batch_size,
        lr=args.lr_3d if stage == "3d" else args.lr_4d, mixed_precision=args.mixed_precision,
        ema_decay=args.ema_decay, checkpoint_every=max(1, (args.steps_3d if stage == "3d" else args.steps_4d) // 4),
        log_every=1 if args.toy else 10, data_workers=args.data_workers, max_seconds=max_seconds,
        latent_cache=str(out / "runs" / "latents.safetensors"),  # same data, same VAE: encoded by the first run
        cuda_graph=args.cuda_graph, prediction_type=args.prediction_type, omega=args.omega,
        **schedule_fields(args), camera_embedding=args.cameras,
    )
    train(config, resume=True, progress=False)


def train_runs(args, out: Path, orbits: Path, names: tuple[str, ...], text_states: Path,
               until: float | None) -> None:
    """The runs ``names``: in this process one after the other, or with --parallel one process each, at once."""
    if not args.parallel or len(names) == 1:
        for name in names:
            train_run(args, out, orbits, name, text_states, until)
        return
    import multiprocessing

    encode_latents(args, out, orbits)  # before the processes start: none of them may find the cache missing
    spawn = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    procs = {n: spawn.Process(target=_train_process, args=(args, out, orbits, n, text_states, until,
                                                          max(1, (os.cpu_count() or 1) // len(names))))
             for n in names}
    for proc in procs.values():
        proc.start()
    for proc in procs.values():
        proc.join()
    failed = [n for n, proc in procs.items() if proc.exitcode != 0]
    if failed:
        raise SystemExit(f"training runs {failed} failed (their errors above); rerun the command to resume them")


def _train_process(args, out, orbits, name, text_states, until, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # the processes share the host's cores
    train_run(args, out, orbits, name, text_states, until)


def encode_latents(args, out: Path, orbits: Path) -> None:
    """The runs' shared latent cache (what the first run would write), if it is not there yet."""
    import torch

    from diffusion4d.data.dataset import OrbitDataset
    from diffusion4d.diffusion.components import load_or_build_vae
    from diffusion4d.diffusion.latent_cache import load_or_encode

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_or_build_vae(str(out / "vae"), None).requires_grad_(False).to(device)
    load_or_encode(out / "runs" / "latents.safetensors", vae, OrbitDataset(orbits, split="train"), device,
                   args.data_workers)


def schedule_fields(args) -> dict:
    """The TrainConfig fields of this call's noise schedule."""
    return {"rescale_betas_zero_snr": args.zero_snr, "timestep_spacing": "trailing" if args.zero_snr else "leading"}


def check_schedules(bundle: Path, runs: tuple[str, ...], args) -> None:
    """A 4D-aware model and its 3D-aware base must share the noise schedule and what they predict (Eq. 3 mixes
    their outputs at the same z_t and t): where one of a pair is trained in this call and the other kept from the
    bundle, the kept one must agree with this call's."""
    from diffusion4d.pipelines.default import MODELS, scheduler_dir

    ours = {"prediction_type": args.prediction_type, **schedule_fields(args)}
    defaults = {"prediction_type": "epsilon", "rescale_betas_zero_snr": False, "timestep_spacing": "leading"}
    for model, base in MODELS.values():
        if (model in runs) == (base in runs):
            continue
        kept = base if model in runs else model
        config = json.loads((scheduler_dir(bundle, kept) / "scheduler_config.json").read_text())
        theirs = {key: config.get(key, default) for key, default in defaults.items()}
        if theirs != ours:
            raise SystemExit(f"--runs keeps {kept} from {bundle}, whose schedule is {theirs}, but trains "
                             f"{model if kept == base else base} with {ours}: train both, or match its options")


def init_runs_from_bundle(bundle: Path, out: Path, keep: tuple[str, ...] = (), widen: tuple[str, ...] = ()) -> None:
    """The bundle's models as run folders that `train --init` reads (DIR/init/<name>: train_config.json, unet/ in
    float32, the learned image encoder for the image models), and its VAE as DIR/vae (not trained again: the
    UNets were trained on its latents). The runs in ``keep`` are not trained in this call: they become finished run
    folders (DIR/runs/<name>) holding the bundle's model. The UNets of the runs in ``widen`` are widened ×2
    (`widen_unet`, the same function; 1e-3 noise on the copies so that they can learn apart)."""
    import torch
    from diffusers import AutoencoderKL

    from diffusion4d.diffusion.components import unet_class
    from diffusion4d.io import write_json_atomic
    from diffusion4d.models.image_tokens import LearnedImageEncoder
    from diffusion4d.models.widen import widen_unet
    from diffusion4d.pipelines.default import read_manifest, scheduler_dir

    manifest = read_manifest(bundle)  # checks it is a bundle
    for name in RUNS:
        condition = name.split("_")[0]
        kind = "text" if condition == "text" else "image"
        run = out / "init" / name
        unet = unet_class(kind).from_pretrained(bundle / name, torch_dtype=torch.float32)
        if name in widen:
            unet = widen_unet(unet, noise=1e-3, generator=torch.Generator().manual_seed(0))
        unet.save_pretrained(run / "unet")
        if kind == "image":
            LearnedImageEncoder.from_pretrained(bundle / "image_encoder").float().save_pretrained(
                run / "image_encoder")
        write_json_atomic(run / "train_config.json", {"condition": condition, "from_bundle": str(bundle)})
    AutoencoderKL.from_pretrained(bundle / "vae", torch_dtype=torch.float32).save_pretrained(out / "vae")
    write_json_atomic(out / "init" / "previous_training.json", manifest.get("training", {}))
    for path in bundle.glob("loss_*.jsonl"):  # the curves so far: this call's rows are appended to them
        shutil.copy(path, out / "init" / path.name)
    for name in RUNS:
        if name not in keep:
            continue
        run, init = out / "runs" / name, out / "init" / name
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(init, run)
        shutil.copytree(bundle / "scheduler", run / "scheduler")  # then the run's own config over the shared one
        shutil.copy(scheduler_dir(bundle, name) / "scheduler_config.json", run / "scheduler" / "scheduler_config.json")
        write_json_atomic(run / "run.json", {"condition": name.split("_")[0], "stage": name.split("_")[1],
                                             "text_encoder": manifest["text_encoder"], "image_encoder": "learned",
                                             "num_frames": manifest["num_frames"],
                                             "image_size": manifest["image_size"], "kept_from": str(bundle)})
        (run / "loss.jsonl").write_text("")  # not trained in this call


def losses(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def curve(out: Path, name: str, path: Path) -> list[dict]:
    """The whole loss curve of ``name``: the continued bundle's rows (DIR/init/loss_<name>.jsonl, if any), then
    this call's rows from ``path``, their steps counted on from the bundle's last."""
    before = losses(out / "init" / f"loss_{name}.jsonl")
    offset = before[-1]["step"] if before else 0
    return before + [{**row, "step": row["step"] + offset} for row in losses(path)]


def motion_range(ms: list[float]) -> dict[str, float]:
    """The training orbits' m (Eq. 1): `generate` warns when a request lies outside [min, max], where the samples
    may not follow it (BENCHMARKS.md, issue 21, session 19)."""
    return {"min": float(min(ms)), "median": float(statistics.median(ms)), "max": float(max(ms))} if ms else {}


def write_default(args, out: Path, orbits: Path, phases: Phases) -> None:
    from diffusion4d.data.dataset import read_manifest
    from diffusion4d.pipelines.default import write_bundle

    rows = [r for r in read_manifest(orbits) if r.get("kept") and "orbits" in r]
    runs = {name: out / "runs" / name for name in RUNS}
    curves = {name: curve(out, name, run / "loss.jsonl") for name, run in runs.items()}
    curves["vae"] = curve(out, "vae", out / "vae" / "loss.jsonl")
    final = {name: (rows_of_run or [{}])[-1] for name, rows_of_run in curves.items()}
    train_m = [o["m"] for r in rows if r.get("split") == "train" for o in r["orbits"]]
    training = {
        "data": {"assets": len(rows), "train_assets": sum(r.get("split") == "train" for r in rows),
                 "orbits": len(train_m), "size": args.size, "frames": args.frames,
                 "motion": motion_range(train_m)},
        "steps": {"vae": args.vae_steps, "3d": args.steps_3d, "4d": args.steps_4d, "batch_size": args.batch_size,
                  "vae_batch_size": args.vae_batch_size, "lr_3d": args.lr_3d, "lr_4d": args.lr_4d,
                  "mixed_precision": args.mixed_precision, "prediction_type": args.prediction_type,
                  **schedule_fields(args), "camera_embedding": args.cameras, "omega": args.omega},
        "steps_reached": {name: row.get("step") for name, row in final.items()},
        "final_losses": final,
        "seconds": {k: v["seconds"] for k, v in phases.done.items()},
    }
    previous = out / "init" / "previous_training.json"
    if args.continue_from and previous.exists():  # the calls before this one, newest first
        training["continued_from"] = json.loads(previous.read_text())
    bundle = write_bundle(out / "default", runs, out / "vae", training, guidance=tuple(args.guidance),
                          condition_guidance=condition_guidance(args))
    for name, rows_of_run in curves.items():
        (bundle / f"loss_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_of_run))


def condition_guidance(args) -> dict:
    """The per-condition guidance of the bundle this call continues from (kept: it was chosen by measuring)."""
    from diffusion4d.pipelines.default import read_manifest

    if not args.continue_from:
        return {}
    models = read_manifest(args.continue_from).get("models", {})
    return {c: entry["guidance"] for c, entry in models.items() if "guidance" in entry}


def pack(bundle: Path, dest: Path, part_bytes: int = 15 * 2**20) -> list[Path]:
    """The bundle folder as one tar, split into parts of ≤ part_bytes (``cat`` them back together)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(bundle, arcname=bundle.name)
    data = buffer.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(data), part_bytes):
        parts.append(dest / f"{bundle.name}.tar.part-{i // part_bytes:02d}")
        parts[-1].write_bytes(data[i : i + part_bytes])
    return parts


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: accelerate then trains on the CPU
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases(out, args.budget_minutes)
    start = time.perf_counter()
    orbits = Path(args.orbits) if args.orbits else out / "orbits"
    if args.orbits:
        if not (orbits / "manifest.jsonl").exists():
            phases.run("curate", lambda: curate(args, orbits))
    else:
        phases.run("data", lambda: make_data(args, out))
    text_states = Path(args.text_states) if args.text_states else out / "text_states.safetensors"
    if not args.text_states and (args.prepare_only or any(r.startswith("text") for r in args.runs)):
        phases.run("text_states", lambda: encode_text(args, out, orbits, text_states))
    if args.prepare_only:
        print(f"prepared: orbits in {orbits.resolve()}, text states in {text_states.resolve()}")
        return
    from diffusion4d.diffusion.train_vae import SMALL_VAE_WIDTHS, VAEConfig, train_vae

    groups = GROUPS if args.parallel else tuple((name,) for name in RUNS)
    groups = tuple(g for g in (tuple(n for n in group if n in args.runs) for group in groups) if g)
    schedule = (("vae",), *groups)  # the timed phases, in order: how --budget-minutes is shared
    if args.continue_from:
        keep = tuple(n for n in RUNS if n not in args.runs)
        check_schedules(Path(args.continue_from), args.runs, args)
        phases.run("init", lambda: init_runs_from_bundle(Path(args.continue_from), out, keep, args.widen))
        schedule = groups

    vae = VAEConfig(data=str(orbits), out=str(out / "vae"), size=args.size, max_steps=args.vae_steps,
                    batch_size=args.vae_batch_size, mixed_precision=args.mixed_precision,
                    checkpoint_every=max(1, args.vae_steps // 4), data_workers=args.data_workers,
                    log_every=1 if args.toy else 10, widths=(8, 16, 32, 32) if args.toy else SMALL_VAE_WIDTHS,
                    max_seconds=phases.seconds_for(("vae",), (("vae",), *groups)))
    if not args.continue_from:
        phases.run("vae", lambda: train_vae(vae, resume=True, progress=False))
    for group in groups:
        seconds = phases.seconds_for(group, schedule)
        until = None if seconds is None else time.time() + seconds
        phases.run_together(group, lambda todo, until=until: train_runs(args, out, orbits, todo, text_states, until))
    phases.run("bundle", lambda: write_default(args, out, orbits, phases))
    if args.pack:
        parts = pack(out / "default", Path(args.pack))
        print(f"packed into {len(parts)} parts in {Path(args.pack).resolve()}")
    manifest = json.loads((out / "default" / "manifest.json").read_text())
    print(f"\n{'phase':<14}{'seconds':>9}{'steps':>8}{'ms/step':>9}")
    for name, value in phases.done.items():
        logged = losses(out / "vae" / "loss.jsonl" if name == "vae" else out / "runs" / name / "loss.jsonl")
        per_step = sorted(r["seconds_per_step"] for r in logged if "seconds_per_step" in r)
        steps = f"{logged[-1]['step']:>8}" if logged else " " * 8
        ms = f"{1000 * per_step[len(per_step) // 2]:>9.1f}" if per_step else ""  # the median over log intervals
        print(f"{name:<14}{value['seconds']:>9.1f}{steps}{ms}")
    print(f"{'this call':<14}{time.perf_counter() - start:>9.1f}")
    print(f"bundle: {(out / 'default').resolve()} ({manifest['bytes'] / 1e6:.2f} MB)")


def encode_text(args, out: Path, orbits: Path, path: Path) -> None:
    from diffusion4d.diffusion.text_states import dataset_captions, write_text_states

    encoder = args.text_encoder
    if args.toy and encoder == "minilm":  # the toy's tiny UNets attend to 32-wide states
        sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny encoders are test fixtures
        from tiny_models import make_tiny_bert_text_encoder

        encoder = str(make_tiny_bert_text_encoder(out / "tiny_text_encoder"))
    write_text_states(dataset_captions(orbits), encoder, path)


if __name__ == "__main__":
    sys.exit(main())
