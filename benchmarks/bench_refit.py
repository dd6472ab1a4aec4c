"""The fit alone on sampled orbits: refit what ``bench_default_quality.py --reconstruct --out ROOT`` generated, with
another fit config, and score the 4D asset against the ground truth as that benchmark does.

    python benchmarks/bench_refit.py ROOT [--condition image] [--count 6] [--preset cpu] [--iters COARSE FINE]
        [--config KEY=VALUE ...] [--field KEY=VALUE ...] [--scores QUALITY.json] [--json FILE]

Image → 4D is `generate`'s orbit V and V̄′ (from the 3D-aware base) followed by the fit; this benchmark keeps the
sampled V and V̄′ of each uid (``ROOT/<condition>/<uid>/orbit`` and ``static``) fixed, so that fit configs compare on
the same inputs without sampling again. Per uid: the fit (the default method; the preset with the overrides of
bench_reconstruct's options), its renders at the ground truth's cameras and times (``ROOT/orbits/<uid>``), PSNR /
SSIM on views 1…T−1, beside the asset ``generate`` fitted (``fit_psnr`` in ``--scores``, the bench's ``--json``;
default ``ROOT/quality.json``, as contact_sheet.py --run-bench writes it) and copy-τ0. The seconds are the fit's
wall time in this process (a figure, not comparable across loaded machines).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_default_quality import copy_baseline, ground_truth, renders_at
from bench_reconstruct import _scores, add_fit_options, fit_config
from diffusion4d.io import write_json_atomic
from diffusion4d.reconstruction.fit import fit


def sampled_uids(root: Path, condition: str, count: int) -> list[str]:
    """The first ``count`` uids (sorted) with a sampled orbit, its V̄ and a ground truth under ``root``."""
    folder = root / condition
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no sampled orbits there (run bench_default_quality.py --reconstruct --out "
                         f"{root} first)")
    uids = [d.name for d in sorted(folder.iterdir())
            if (d / "orbit").is_dir() and (d / "static").is_dir() and (root / "orbits" / d.name).is_dir()]
    if not uids:
        raise SystemExit(f"{folder}: no uid has orbit/, static/ and a ground truth in {root / 'orbits'}")
    return uids[:count]


def saved_fit_scores(path: Path, condition: str) -> dict[str, float]:
    """uid → the PSNR of the asset ``generate`` fitted, from bench_default_quality's JSON (empty without one)."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", {}).get(condition, [])
    return {r["uid"]: r["fit_psnr"] for r in rows if "fit_psnr" in r}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="the --out folder of bench_default_quality.py --reconstruct")
    p.add_argument("--condition", default="image", choices=("image", "static", "text"))
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scores", type=Path, help="bench_default_quality.py's --json (default: ROOT/quality.json)")
    p.add_argument("--json")
    add_fit_options(p)
    args = p.parse_args(argv)
    config = fit_config(args, p)
    saved = saved_fit_scores(args.scores or args.root / "quality.json", args.condition)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_refit_") as tmp:
        for uid in sampled_uids(args.root, args.condition, args.count):
            gen_dir = args.root / args.condition / uid
            orbit, target, static = ground_truth(args.root / "orbits" / uid)
            start = time.perf_counter()
            asset = fit(gen_dir / "orbit", Path(tmp) / uid, args.method, config, static_dir=gen_dir / "static",
                        device=args.device, progress=False, log=lambda *_: None)
            seconds = time.perf_counter() - start
            (psnr, ssim), (copy, _) = _scores(renders_at(asset, orbit), target), _scores(
                copy_baseline(args.condition, target, static), target)
            rows.append({"uid": uid, "psnr": psnr, "ssim": ssim, "copy_psnr": copy, "saved_psnr": saved.get(uid),
                         "seconds": seconds})
            print(f"{uid}: {psnr:.2f} dB, SSIM {ssim:.3f} (generate's fit {saved.get(uid, float('nan')):.2f}, copy "
                  f"{copy:.2f}), {seconds:.1f} s", flush=True)
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "copy_psnr", "seconds")}
    if all(r["saved_psnr"] is not None for r in rows):
        means["saved_psnr"] = float(np.mean([r["saved_psnr"] for r in rows]))
    print(f"\nrefit of {len(rows)} sampled orbits ({args.condition}), {config.coarse_iters} + {config.fine_iters} "
          f"iterations, config {args.config or 'preset'}, field {args.field or 'preset'}: PSNR {means['psnr']:.2f}, "
          f"SSIM {means['ssim']:.3f}; generate's fit {means.get('saved_psnr', float('nan')):.2f}; copy-τ0 "
          f"{means['copy_psnr']:.2f}; {means['seconds']:.1f} s per fit")
    record = {"root": str(args.root), "condition": args.condition, "config": config.to_json(), "rows": rows,
              "means": means}
    if args.json:
        write_json_atomic(Path(args.json), record)
    return record


if __name__ == "__main__":
    main()
