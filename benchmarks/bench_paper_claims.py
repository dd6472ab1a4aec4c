"""The paper's claims at small scale (issue 21, deliverable 4), side by side on the same held-out assets in one run.

    python benchmarks/bench_paper_claims.py [--bundle DIR] [--count 20] [--steps 10] [--claims a,b,c,d]
        [--omega-bundles 0=DIR 1=DIR …] [--sweep 0.005 0.01 0.02 0.04 0.08] [--sweep-conditions image,static]
        [--sweep-count 6] [--fit-count 6] [--json FILE] [--out DIR]

Held-out assets: procedural seed 1 (the bundle trained on seed 0), rendered at the bundle's size and view count.
Every sample is the image condition (the prompt is the ground truth's τ0 front view) unless said otherwise,
``--steps`` DDIM steps, seed k for asset k, scored on white against the ground-truth orbit on views 1…T−1
(PSNR / SSIM), as bench_default_quality.

(a) motion control (Sec. 3.3, Fig. 5): the first ``--sweep-count`` assets sampled at each requested m of ``--sweep``,
    with each condition of ``--sweep-conditions``; the measured m is Eq. 1 of the sample against the ground truth's
    static orbit V̄. For the static condition that V̄ is the prompt, so m is the sample's own motion; for the image
    condition it also counts the sample's appearance error, so image samples are measured a second time against
    V̄′, the static orbit the 3D-aware base samples from the same prompt (Sec. 3.4). Spearman ρ between requested
    and measured m, per asset (mean) and pooled.
(b) L_mr (Eq. 2): the image models of ``--omega-bundles`` side by side, bundles trained identically but for ω (one
    of them ω = 0, e.g. the side runs of benchmarks/device/train_default.sh), each at its ground truth's m: PSNR,
    SSIM, and the relative motion error |m − m_GT| / m_GT.
(c) 3D-aware CFG (Eq. 3): w2 = 0.5 against w2 = 0 (w1 the bundle's), the same seeds.
(d) coarse-to-fine (Sec. 3.4): for the first ``--fit-count`` assets, the sampled orbit V fitted (the default method,
    the cpu preset) with its coarse stage on V̄′ ∪ V (V̄′ from the 3D-aware base, as `generate` does) then the fine
    stage, against the fine stage alone for the same total number of iterations; the 4D asset rendered at the
    ground-truth cameras and times.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from bench_default_quality import ground_truth, prompt_of, render_held_out, renders_at, to_unit
from bench_reconstruct import _scores
from diffusion4d.io import write_json_atomic
from diffusion4d.metrics import motion_magnitude
from diffusion4d.pipelines.default import load_default, read_manifest

CLAIMS = ("a", "b", "c", "d")


def sample(pipe, gt_dir: Path, seed: int, steps: int, **kw) -> torch.Tensor:
    """The orbit of one held-out asset sampled from the pipeline's condition (its τ0 front view, or V̄),
    [T, 3, S, S] in [0, 1]."""
    prompt = prompt_of(pipe.condition, gt_dir, pipe.image_size, pipe.num_frames)
    return to_unit(pipe(**prompt, steps=steps, seed=seed, progress=False, **kw))


def scored(pred: torch.Tensor, target: torch.Tensor, static: torch.Tensor, m_gt: float) -> dict:
    psnr, ssim = _scores(pred, target)
    m = float(motion_magnitude(pred, static))
    return {"psnr": psnr, "ssim": ssim, "m": m, "m_error": abs(m - m_gt) / max(m_gt, 1e-8)}


def claim_a(pipe, assets: list[dict], sweep: list[float], steps: int) -> dict:
    """Requested vs measured m over the sweep: ρ per asset and pooled. With the static condition the sample's own V̄
    is the one given, so Eq. 1 measures its motion alone; with the image one it also reads the appearance error
    against the ground truth's V̄. So image samples are also measured against the object's static orbit as the method
    itself makes it, V̄′ of the 3D-aware base from the same prompt and seed (`measured_own`, `rho_own_mean`)."""
    per_asset, pooled, pooled_own = [], [], []
    for a in assets:
        samples = [sample(pipe, a["dir"], a["seed"], steps, motion=m) for m in sweep]
        measured = [float(motion_magnitude(s, a["static"])) for s in samples]
        row = {"uid": a["uid"], "measured": measured, "rho": float(spearmanr(sweep, measured).statistic)}
        pooled += list(zip(sweep, measured))
        if pipe.condition == "image":
            prompt = prompt_of("image", a["dir"], pipe.image_size, pipe.num_frames)
            own = to_unit(pipe.sample_base(**prompt, steps=steps, seed=a["seed"], progress=False))
            row["measured_own"] = [float(motion_magnitude(s, own)) for s in samples]
            row["rho_own"] = float(spearmanr(sweep, row["measured_own"]).statistic)
            pooled_own += list(zip(sweep, row["measured_own"]))
        per_asset.append(row)
        print(f"(a, {pipe.condition}) {a['uid']}: measured m {np.round(measured, 4).tolist()}, ρ {row['rho']:.2f}"
              + (f"; against V̄′ {np.round(row['measured_own'], 4).tolist()}, ρ {row['rho_own']:.2f}"
                 if "rho_own" in row else ""), flush=True)
    record = {"condition": pipe.condition, "sweep": sweep, "rows": per_asset,
              "rho_mean": float(np.mean([r["rho"] for r in per_asset])),
              "rho_pooled": float(spearmanr(*zip(*pooled)).statistic)}
    if pooled_own:
        record["rho_own_mean"] = float(np.mean([r["rho_own"] for r in per_asset]))
        record["rho_own_pooled"] = float(spearmanr(*zip(*pooled_own)).statistic)
    return record


def means_of(rows: dict[str, list[dict]]) -> dict[str, dict]:
    """arm → the mean of each score over its rows."""
    return {n: {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k != "uid"} for n, rs in rows.items()}


def compare(arms: dict, assets: list[dict], steps: int, tag: str) -> dict:
    """Each arm (name → (pipeline, sampling keywords)) on every asset at its ground truth's m; rows and means."""
    rows = {name: [] for name in arms}
    for a in assets:
        for name, (pipe, kw) in arms.items():
            pred = sample(pipe, a["dir"], a["seed"], steps, motion=a["m_gt"], **kw)
            rows[name].append({"uid": a["uid"], **scored(pred, a["target"], a["static"], a["m_gt"])})
        print(f"({tag}) {a['uid']}: " + ", ".join(f"{n} {rows[n][-1]['psnr']:.2f} dB" for n in arms), flush=True)
    return {"rows": rows, "means": means_of(rows)}


def claim_d(pipe, assets: list[dict], steps: int, root: Path, device: str) -> dict:
    """Coarse-to-fine against the fine stage alone (same total iterations), on each sampled orbit."""
    from diffusion4d.pipelines.generate import write_static_orbit
    from diffusion4d.pipelines.orbit import write_orbit
    from diffusion4d.reconstruction.fit import DEFAULT_METHOD, PRESETS, fit, with_iterations

    config = PRESETS["cpu"][DEFAULT_METHOD]
    arms = {"coarse_to_fine": config,
            "fine_only": with_iterations(config, 0, config.coarse_iters + config.fine_iters)}
    rows = {name: [] for name in arms}
    for a in assets:
        orbit, work = a["orbit"], root / "d" / a["uid"]
        frames = (sample(pipe, a["dir"], a["seed"], steps, motion=a["m_gt"]) * 255).round().byte()
        write_orbit(frames.permute(0, 2, 3, 1).numpy(), work / "orbit", c2w=orbit.c2w)
        prompt = prompt_of("image", a["dir"], pipe.image_size, pipe.num_frames)
        base = pipe.sample_base(**prompt, steps=steps, seed=a["seed"], progress=False)
        static_dir = write_static_orbit(base, work / "static", orbit.c2w, orbit.x_fov, orbit.y_fov)
        for name, cfg in arms.items():
            asset = fit(work / "orbit", work / name, DEFAULT_METHOD, cfg, static_dir=static_dir, device=device,
                        progress=False, log=lambda *_: None)
            pred = renders_at(asset, orbit)
            rows[name].append({"uid": a["uid"], **scored(pred, a["target"], a["static"], a["m_gt"])})
        print(f"(d) {a['uid']}: " + ", ".join(f"{n} {rows[n][-1]['psnr']:.2f} dB" for n in arms), flush=True)
    return {"rows": rows, "means": means_of(rows), "iterations": [config.coarse_iters, config.fine_iters]}


def held_out_assets(root: Path, count: int, size: int, frames: int) -> list[dict]:
    assets = []
    for seed, uid in enumerate(render_held_out(root, count, size, frames)):
        orbit, target, static = ground_truth(root / "orbits" / uid)
        assets.append({"uid": uid, "seed": seed, "dir": root / "orbits" / uid, "orbit": orbit, "target": target,
                       "static": static, "m_gt": float(motion_magnitude(target, static))})
    return assets


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="default-model bundle (default: the one shipped in the package)")
    p.add_argument("--omega-bundles", nargs="+", default=[], metavar="W=DIR",
                   help="(b): bundles trained alike but for ω = W of L_mr, one of them W = 0")
    p.add_argument("--count", type=int, default=20, help="held-out assets for (b) and (c)")
    p.add_argument("--sweep-count", type=int, default=6, help="held-out assets for (a)")
    p.add_argument("--fit-count", type=int, default=6, help="held-out assets for (d)")
    p.add_argument("--sweep", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.04, 0.08])
    p.add_argument("--sweep-conditions", default="image,static",
                   help="(a): the conditions to sweep (static: Eq. 1 against the V̄ given, i.e. motion alone)")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (10: the cpu preset's)")
    p.add_argument("--claims", default=",".join(CLAIMS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json")
    p.add_argument("--out", help="keep the renders and fits here (default: a temporary folder)")
    args = p.parse_args(argv)
    args.claims = tuple(c for c in args.claims.split(",") if c)
    if set(args.claims) - set(CLAIMS):
        p.error(f"--claims takes a comma-separated subset of {','.join(CLAIMS)}")
    args.sweep_conditions = tuple(c for c in args.sweep_conditions.split(",") if c)
    if set(args.sweep_conditions) - {"image", "static"}:
        p.error("--sweep-conditions takes a comma-separated subset of image,static")
    try:
        args.omega_bundles = {float(w): Path(d) for w, d in (item.split("=", 1) for item in args.omega_bundles)}
    except ValueError:
        p.error(f"--omega-bundles takes W=DIR items (W a number), got {' '.join(args.omega_bundles)}")
    if "b" in args.claims and (len(args.omega_bundles) < 2 or 0.0 not in args.omega_bundles):
        p.error("claim (b) needs --omega-bundles with ω = 0 and at least one other ω (bundles trained alike)")
    return args


def main(argv=None) -> dict:
    from diffusion4d.pipelines.default import default_bundle_dir

    args = parse_args(argv)
    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    manifest = read_manifest(bundle)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_paper_claims_"))
    count = max(args.count, args.sweep_count, args.fit_count)
    record = {"bundle": str(bundle), "steps": args.steps, "device": args.device}
    try:
        assets = held_out_assets(root, count, manifest["image_size"], manifest["num_frames"])
        pipe = load_default("image", device=args.device, bundle=bundle)
        record["guidance"] = [pipe.w1, pipe.w2]
        for condition in args.sweep_conditions if "a" in args.claims else ():
            swept = pipe if condition == "image" else load_default(condition, device=args.device, bundle=bundle)
            record[f"a_{condition}"] = claim_a(swept, assets[: args.sweep_count], args.sweep, args.steps)
        if "b" in args.claims:
            bundles = {f"omega_{w:g}": d for w, d in sorted(args.omega_bundles.items())}
            arms = {name: (load_default("image", device=args.device, bundle=d), {}) for name, d in bundles.items()}
            record["b"] = {**compare(arms, assets[: args.count], args.steps, "b"),
                           "bundles": {name: str(d) for name, d in bundles.items()}}
        if "c" in args.claims:
            record["c"] = compare({"w2_0.5": (pipe, {"w2": 0.5}), "w2_0": (pipe, {"w2": 0.0})},
                                  assets[: args.count], args.steps, "c")
        if "d" in args.claims:
            record["d"] = claim_d(pipe, assets[: args.fit_count], args.steps, root, args.device)
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    print_summary(record)
    if args.json:
        write_json_atomic(Path(args.json), record)
    return record


def print_summary(record: dict) -> None:
    print(f"\nbundle {record['bundle']}; {record['steps']} DDIM steps; {record['device']}")
    for a in (record[k] for k in record if k.startswith("a_")):
        print(f"(a, {a['condition']}) motion control over m = {a['sweep']}: Spearman ρ mean over assets "
              f"{a['rho_mean']:.2f}, pooled {a['rho_pooled']:.2f}"
              + (f"; against V̄′ {a['rho_own_mean']:.2f}, pooled {a['rho_own_pooled']:.2f}"
                 if "rho_own_mean" in a else ""))
    for claim in ("b", "c", "d"):
        if claim in record:
            for arm, mean in record[claim]["means"].items():
                print(f"({claim}) {arm}: PSNR {mean['psnr']:.2f}, SSIM {mean['ssim']:.3f}, m {mean['m']:.4f}, "
                      f"|m − m_GT|/m_GT {mean['m_error']:.2f}")


if __name__ == "__main__":
    main()
