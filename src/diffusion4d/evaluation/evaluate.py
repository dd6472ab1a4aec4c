"""`diffusion4d evaluate`: generated orbits / 4D assets against ground-truth orbits, in the paper's Table 1 layout.

Pairing is the paper's (Sec. 4.2): a generated item and a ground-truth orbit share a uid (folder name), and each
generated image is compared with the ground-truth image of the same camera pose — checked from the per-view camera
JSONs, never assumed from the file index. A 4D asset is rendered at the ground-truth cameras and timestamps for
SSIM/PSNR/LPIPS/FVD, and at 36 uniform orbit views for CLIP-O.

* CLIP-F / CLIP-O: reference = the prompt (text-to-4D) or the ground truth's front view at τ0 (the conditioning
  image of image- and static-to-4D); targets = the front views (camera at the front azimuth: views 0 and T−1 of
  a front-start orbit) and all views.
* SSIM, PSNR, LPIPS: mean over the views of an item, then over items (per-view PSNR averaged, not pooled MSE).
* FVD: one video per item (the orbit, T frames), generated set vs ground-truth set of the matched uids. The
  report's remarks (and report.json's ``details.fvd``) say how many videos it rests on and the covariances' ranks:
  below 401 videos the 400-d I3D covariances are singular (see `fvd.FVDResult`).
The paper reports SSIM/PSNR/LPIPS/FVD for image- and static-to-4D only (a text prompt does not fix the
appearance); for text they are skipped with that note.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.evaluation.fvd import fvd_result
from diffusion4d.evaluation.pretrained import MissingWeights
from diffusion4d.evaluation.report import json_safe, write_report
from diffusion4d.io import write_json_atomic
from diffusion4d.metrics import psnr, ssim

TASKS = {"text": "Text-to-4D", "image": "Image-to-4D", "static": "Static 3D content-to-4D"}
KINDS = {"orbit": "Diffusion4D* (orbits)", "asset": "Diffusion4D (4D assets)"}  # the paper's * = diffusion output
ASSET_ORBIT_VIEWS = 36  # paper Sec. 4.2: "we uniformly render 36 orbital views from constructed 4D assets"
FRONT_TOLERANCE_DEG = 0.5
PIXEL_METRICS = ("ssim", "psnr", "lpips")


@dataclass
class EvaluateConfig:
    generated: Path
    reference: Path
    out: Path
    task: str = "image"  # text | image | static
    clip: Path | None = None  # local CLIP model folder
    lpips_weights: Path | None = None  # the lpips release's linear layers
    lpips_backbone: Path | None = None  # torchvision AlexNet / VGG16 state dict
    lpips_net: str = "alex"
    i3d_weights: Path | None = None
    prompts: Path | None = None  # captions.jsonl: {"uid", "caption"} per line
    device: str = "cpu"
    camera_tol: float = 1e-3  # max |Δ| of c2w entries and of fovs (radians) for two cameras to be "the same pose"
    i3d_size: int = 224
    progress: bool = False


@dataclass
class Item:
    """One generated item, ready to score: ``pixels`` [T, 3, H, W] in [0, 1] at the ground-truth cameras,
    ``views`` the CLIP-O targets [V, 3, H, W] (the orbit itself, or 36 renders of an asset), ``front`` their
    front-view indices."""

    uid: str
    kind: str
    pixels: torch.Tensor
    views: torch.Tensor
    front: list[int]
    seconds: float | None
    scores: dict = field(default_factory=dict)


# --- cameras and pairing --------------------------------------------------------------------------------------


def azimuths_deg(c2w: np.ndarray) -> np.ndarray:
    """Camera azimuths [V] in degrees, 0 = front (+Z), turning towards +X (the orbit convention of cameras.py)."""
    return np.degrees(np.arctan2(c2w[:, 0, 3], c2w[:, 2, 3]))


def front_views(c2w: np.ndarray) -> list[int]:
    """Indices of the views closest to the front azimuth (within 0.5° of the closest; the first and last view of
    a front-start orbit coincide, so both count)."""
    dist = np.abs((azimuths_deg(c2w) + 180.0) % 360.0 - 180.0)
    return [int(i) for i in np.flatnonzero(dist <= dist.min() + FRONT_TOLERANCE_DEG)]


def check_pairing(gen_dir: Path, ref_dir: Path, gen: layout.Orbit, ref: layout.Orbit, tol: float) -> None:
    """Same number of views, same image size and the same camera per view, else ValueError naming both sides."""
    if len(gen.images) != len(ref.images):
        raise ValueError(f"{gen_dir} has {len(gen.images)} views but {ref_dir} has {len(ref.images)}")
    if gen.images.shape[1:3] != ref.images.shape[1:3]:
        (gh, gw), (rh, rw) = gen.images.shape[1:3], ref.images.shape[1:3]
        raise ValueError(f"{layout.frame_path(gen_dir, layout.DYNAMIC, 0)} is {gw}x{gh} but "
                         f"{layout.frame_path(ref_dir, layout.DYNAMIC, 0)} is {rw}x{rh}")
    fov_diff = max(abs(gen.x_fov - ref.x_fov), abs(gen.y_fov - ref.y_fov))
    pose_diff = np.abs(gen.c2w - ref.c2w).max(axis=(1, 2))
    bad = [0] if fov_diff > tol else np.flatnonzero(pose_diff > tol).tolist()
    if bad:
        i = bad[0]
        raise ValueError(
            f"{layout.camera_path(gen_dir, layout.DYNAMIC, i)} and {layout.camera_path(ref_dir, layout.DYNAMIC, i)} "
            f"are not the same camera (max |Δ matrix_world| {pose_diff[i]:.3g}, |Δ fov| {fov_diff:.3g} rad; "
            f"tolerance {tol:g}): metrics need the same pose on both sides"
        )


def is_orbit(folder: Path) -> bool:
    """An orbit folder: its first frame is there and it is not a 4D asset (whose folder may hold renders too)."""
    return layout.frame_path(folder, layout.DYNAMIC, 0).is_file() and not (folder / ASSET_FILE).is_file()


# --- 4D assets ------------------------------------------------------------------------------------------------


ASSET_FILE = "asset.json"  # what `Asset4D.save` writes: a folder holding it is a 4D asset, not an orbit


def load_asset(folder: Path, device: str = "cpu"):
    """The one adapter to 4D assets: ``Asset4D.load(folder)`` of `diffusion4d reconstruct`'s output, whose
    ``render(c2w, x_fov, y_fov, width, height, t)`` gives RGB [H, W, 3] in [0, 1] on white."""
    try:
        from diffusion4d.reconstruction.asset import Asset4D
    except ImportError:
        raise ValueError(f"{folder}: no orbit frames, and this version cannot read 4D assets "
                         "(diffusion4d.reconstruction.asset is missing)") from None
    return Asset4D.load(folder).to(device)


def render_asset(asset, c2w: np.ndarray, x_fov: float, y_fov: float, width: int, height: int,
                 times: np.ndarray) -> torch.Tensor:
    """Renders at cameras c2w [V, 4, 4] and times [V] → [V, 3, H, W] in [0, 1]."""
    frames = []
    for pose, t in zip(c2w, times, strict=True):
        rgb = asset.render(pose, x_fov, y_fov, width, height, float(t))
        rgb = rgb.detach().cpu() if torch.is_tensor(rgb) else torch.as_tensor(np.asarray(rgb))
        rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
        frames.append(rgb[..., :3].clamp(0, 1).movedim(-1, 0))
    return torch.stack(frames)


def asset_orbit_cameras(ref: layout.Orbit, num_views: int = ASSET_ORBIT_VIEWS) -> np.ndarray:
    """``num_views`` uniform cameras [V, 4, 4] on the ground truth's orbit (its start azimuth, elevation, distance)."""
    position = ref.c2w[0, :3, 3]
    distance = float(np.linalg.norm(position))
    elevation = math.degrees(math.asin(position[1] / distance))
    return cameras.orbit_camera_to_world(num_views, float(azimuths_deg(ref.c2w[:1])[0]), elevation, distance)


# --- reading the inputs ---------------------------------------------------------------------------------------


def read_seconds(folder: Path) -> float | None:
    """Generation time from ``timing.json`` ({"seconds": s}), None when the file is absent."""
    path = folder / "timing.json"
    if not path.is_file():
        return None
    try:
        seconds = float(json.loads(path.read_text())["seconds"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: not a timing record (expected {{\"seconds\": number}})") from None
    return seconds


def read_prompts(reference: Path, prompts: Path | None) -> dict[str, str]:
    """uid → caption: ``--prompts`` (captions.jsonl format) wins, then the reference's manifest.jsonl, then each
    reference folder's metadata.json, then a captions.jsonl beside the folders."""
    captions = layout.read_captions(reference)
    for folder in sorted(p for p in reference.iterdir() if (p / layout.METADATA).is_file()):
        try:
            caption = json.loads((folder / layout.METADATA).read_text()).get("caption")
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"{folder / layout.METADATA}: not a JSON object") from None
        if caption:
            captions[folder.name] = caption
    for path in ([reference / layout.MANIFEST] + ([Path(prompts)] if prompts else [])):
        if not path.is_file():
            if path != reference / layout.MANIFEST:
                raise FileNotFoundError(f"{path}: prompts file not found")
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                uid, caption = record["uid"], record.get("caption")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise ValueError(f"{path}:{n}: not a caption record (needs uid and caption)") from None
            if caption:
                captions[uid] = caption
    return captions


def load_item(gen_dir: Path, ref_dir: Path, ref: layout.Orbit, ref_pixels: torch.Tensor,
              config: EvaluateConfig) -> Item:
    """A generated orbit (checked against the ground truth) or a 4D asset (rendered at its cameras)."""
    seconds = read_seconds(gen_dir)
    if is_orbit(gen_dir):
        gen = layout.read_orbit(gen_dir)
        if config.task != "text":  # text-to-4D has no pixel metrics: any size and trajectory may be scored
            check_pairing(gen_dir, ref_dir, gen, ref, config.camera_tol)
        pixels = layout.composite(gen.images)
        return Item(gen_dir.name, "orbit", pixels, pixels, front_views(gen.c2w), seconds)
    asset = load_asset(gen_dir, config.device)
    h, w = ref_pixels.shape[-2:]
    pixels = render_asset(asset, ref.c2w, ref.x_fov, ref.y_fov, w, h, ref.timestamps)
    orbit = asset_orbit_cameras(ref)
    views = render_asset(asset, orbit, ref.x_fov, ref.y_fov, w, h, cameras.orbit_timestamps(len(orbit)))
    return Item(gen_dir.name, "asset", pixels, views, front_views(orbit), seconds)


# --- metric networks ------------------------------------------------------------------------------------------


def load_networks(config: EvaluateConfig) -> tuple[dict, dict[str, str]]:
    """The networks whose weights were given, and a skip note (MissingWeights' message) for each that was not."""
    from diffusion4d.evaluation.clip import ClipEmbedder
    from diffusion4d.evaluation.i3d import InceptionI3d
    from diffusion4d.evaluation.lpips import LPIPS

    nets, notes = {}, {}
    loaders = {"clip": lambda: ClipEmbedder.from_dir(config.clip, config.device)}
    if config.task != "text":
        loaders["lpips"] = lambda: LPIPS.from_files(config.lpips_weights, config.lpips_backbone,
                                                    config.lpips_net).to(config.device)
        loaders["fvd"] = lambda: InceptionI3d.from_file(config.i3d_weights).to(config.device)
    for name, load in loaders.items():
        try:
            nets[name] = load()
        except MissingWeights as exc:
            for key in (("clip_f", "clip_o") if name == "clip" else (name,)):
                notes[key] = str(exc)
    return nets, notes


@torch.no_grad()
def lpips_views(model, x: torch.Tensor, y: torch.Tensor, device: str, chunk: int = 8) -> torch.Tensor:
    """LPIPS per view [T] of two orbits [T, 3, H, W], a few views at a time (memory stays small at 512²)."""
    return torch.cat([model(x[i : i + chunk].to(device), y[i : i + chunk].to(device)).cpu()
                      for i in range(0, len(x), chunk)])


def score_item(item: Item, ref_pixels: torch.Tensor, clip_ref, nets: dict, config: EvaluateConfig) -> None:
    """Fill ``item.scores`` with the per-uid metrics that can be computed (None for the others)."""
    from diffusion4d.evaluation.clip import clip_f_o

    s = {"clip_f": None, "clip_o": None, **{k: None for k in PIXEL_METRICS}}
    if "clip" in nets and clip_ref is not None:
        s["clip_f"], s["clip_o"] = clip_f_o(clip_ref, nets["clip"].images(item.views), item.front)
    if config.task != "text":
        s["ssim"] = float(ssim(item.pixels, ref_pixels).mean())
        s["psnr"] = float(psnr(item.pixels, ref_pixels).mean())
        if "lpips" in nets:
            s["lpips"] = float(lpips_views(nets["lpips"], item.pixels, ref_pixels, config.device).mean())
    item.scores = s


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# --- the command ----------------------------------------------------------------------------------------------


def evaluate(config: EvaluateConfig) -> dict:
    """Score every generated uid folder that has a ground-truth orbit; write report.md, report.json, per_uid.json.

    Returns {"rows", "notes", "remarks", "items", "skipped", "fvd_support"} (what was written; ``fvd_support``
    maps a task row to the videos, feature dimension and covariance ranks its FVD rests on).
    """
    refs = _reference_orbits(config)
    generated, reference = Path(config.generated), Path(config.reference)
    gen_dirs = [p for p in sorted(generated.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    captions = read_prompts(reference, config.prompts) if config.task == "text" else {}
    nets, notes = load_networks(config)

    items, skipped, features = _score_generated(gen_dirs, refs, captions, nets, config)
    if not items:
        raise ValueError(f"no generated item in {generated} could be evaluated against {reference}: "
                         + "; ".join(f"{s['uid']}: {s['reason']}" for s in skipped[:5]))

    rows, remarks, fvd_support = {}, [f"{s['uid']} skipped: {s['reason']}" for s in skipped], {}
    for kind in KINDS:
        group = [j for j, item in enumerate(items) if item.kind == kind]
        if not group:
            continue
        task = f"{TASKS[config.task]}, {KINDS[kind]}"
        group_features = [features[j] for j in group] if "fvd" in nets else None
        rows[task], task_notes, task_remarks, support = _task_row(task, [items[j] for j in group], group_features,
                                                                  captions, "clip" in nets, config)
        notes.update(task_notes)
        remarks.extend(task_remarks)
        if support is not None:
            fvd_support[task] = support

    out = Path(config.out)
    write_report(out, rows, notes, remarks, details={"fvd": fvd_support} if fvd_support else None)
    per_uid = [{"uid": i.uid, "kind": i.kind, "views": len(i.views), "generation_time_s": i.seconds,
                **{k: json_safe(v) for k, v in i.scores.items()}} for i in items]
    write_json_atomic(out / "per_uid.json", {"task": config.task, "items": per_uid, "skipped": skipped})
    return {"rows": rows, "notes": notes, "remarks": remarks, "items": per_uid, "skipped": skipped,
            "fvd_support": fvd_support}


def _reference_orbits(config: EvaluateConfig) -> dict[str, Path]:
    """uid → ground-truth orbit folder, once the task is known and both folders exist."""
    if config.task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {config.task!r}")
    generated, reference = Path(config.generated), Path(config.reference)
    for what, folder in (("generated", generated), ("reference", reference)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    refs = {p.name: p for p in sorted(reference.iterdir()) if p.is_dir() and is_orbit(p)}
    if not refs:
        raise FileNotFoundError(f"{reference}: no ground-truth orbits (<uid>/multi_frame0.png …)")
    return refs


def _score_generated(gen_dirs: list[Path], refs: dict[str, Path], captions: dict[str, str], nets: dict,
                     config: EvaluateConfig) -> tuple[list[Item], list[dict], list[tuple[torch.Tensor, ...]]]:
    """Load and score each generated folder against its ground truth → (items, skipped {"uid", "reason"}, per item
    the I3D features (generated [1, D], ground truth [1, D]) when there is an FVD network, else none)."""
    items, skipped, features = [], [], []
    for gen_dir in tqdm(gen_dirs, desc="evaluate", disable=not config.progress):
        uid = gen_dir.name
        if uid not in refs:
            skipped.append({"uid": uid, "reason": f"no ground-truth orbit {Path(config.reference) / uid}"})
            continue
        ref = layout.read_orbit(refs[uid])
        ref_pixels = layout.composite(ref.images)
        try:
            item = load_item(gen_dir, refs[uid], ref, ref_pixels, config)
        except (ValueError, FileNotFoundError) as exc:
            if is_orbit(gen_dir):  # a broken orbit or pairing is the user's error: stop and say so
                raise
            skipped.append({"uid": uid, "reason": str(exc)})  # not an orbit, and not a readable 4D asset
            continue
        score_item(item, ref_pixels, _clip_reference(nets, config.task, captions, uid, ref, ref_pixels), nets, config)
        if "fvd" in nets:
            from diffusion4d.evaluation.i3d import i3d_features

            # the generated and the ground-truth video in one batch; kept per item so each row takes its own
            gen_feat, ref_feat = i3d_features(nets["fvd"], [item.pixels, ref_pixels], config.i3d_size)
            features.append((gen_feat[None], ref_feat[None]))
        items.append(item)
    return items, skipped, features


def _clip_reference(nets: dict, task: str, captions: dict[str, str], uid: str, ref: layout.Orbit,
                    ref_pixels: torch.Tensor) -> torch.Tensor | None:
    """CLIP-F/CLIP-O's reference embedding: the prompt's for text-to-4D, else the ground truth's front view at τ0;
    None without a CLIP network or without the uid's caption."""
    if "clip" not in nets:
        return None
    if task == "text":
        return nets["clip"].text([captions[uid]])[0] if uid in captions else None
    return nets["clip"].images(ref_pixels[front_views(ref.c2w)[:1]])[0]


def _task_row(task: str, group: list[Item], features: list[tuple[torch.Tensor, ...]] | None,
              captions: dict[str, str], has_clip: bool, config: EvaluateConfig) -> tuple[dict, dict, list, dict | None]:
    """One row of the table (a task and kind of item): the group's mean scores, its FVD (``features`` None: no
    FVD network) and mean generation time → (row, notes, remarks, what the FVD rests on or None)."""
    notes, remarks, support = {}, [], None
    row = {key: _mean([i.scores[key] for i in group]) for key in ("clip_f", "clip_o", *PIXEL_METRICS)}
    row["fvd"] = None
    if features is not None and len(group) < 2:
        notes[f"{task}/fvd"] = f"FVD skipped: needs at least 2 videos per side, got {len(group)}"
    elif features is not None:
        fvd = fvd_result(torch.cat([gen for gen, _ in features]), torch.cat([ref for _, ref in features]))
        row["fvd"] = fvd.value
        # what the number rests on, in the report: at the paper's ~20 items the covariances are singular
        remarks.append(f"{task}: {fvd.describe()}")
        support = {"items": list(fvd.items), "dim": fvd.dim, "ranks": list(fvd.ranks)}
    seconds = [i.seconds for i in group]
    row["generation_time_s"] = _mean(seconds) if None not in seconds else None
    if None in seconds:
        lacking = [i.uid for i in group if i.seconds is None]
        notes[f"{task}/generation_time_s"] = (f"no timing.json in {len(lacking)} of {len(group)} generated "
                                              f"folders (e.g. {Path(config.generated) / lacking[0]})")
    if config.task == "text":
        _text_task_notes(task, group, captions, has_clip, notes, remarks)
    return row, notes, remarks, support


def _text_task_notes(task: str, group: list[Item], captions: dict[str, str], has_clip: bool, notes: dict,
                     remarks: list) -> None:
    """Text-to-4D's notes: no pixel metrics or FVD (not the paper's), and CLIP scores over the captioned uids."""
    for key in ("ssim", "psnr", "lpips", "fvd"):
        notes[f"{task}/{key}"] = "not a paper metric for text-to-4D (the prompt does not fix the appearance)"
    no_caption = [i.uid for i in group if i.uid not in captions]
    if no_caption and has_clip:
        remarks.append(f"{task}: CLIP-F/CLIP-O over {len(group) - len(no_caption)} of {len(group)} uids; "
                       f"no caption for {', '.join(no_caption[:5])}")
        if len(no_caption) == len(group):
            notes[f"{task}/clip_f"] = notes[f"{task}/clip_o"] = "no captions (manifest.jsonl, metadata.json "\
                                                                 "or --prompts) for these uids"
