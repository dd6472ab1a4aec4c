"""Training data as shards: every kept training orbit's latents and condition inputs, encoded once by
`diffusion4d encode` into files of N samples, which `diffusion4d train --data SHARDS` streams (stream.py).

    SHARDS/
      shard_00000.safetensors …  the latent cache's format (latent_cache.py) for N orbits: video, static
                                 [n, C, T, h, w], front [n, 3, H, W], cameras [n, T, 4, 4], m [n]; metadata orbits,
                                 captions and key, plus vae (the VAE's digest) and uids
      vae/                       the VAE the latents were made with: train's VAE for these shards unless --vae
      index.json                 the format, the VAE (digest, where it came from), the data (folder, manifest
                                 digest, background), the sample shapes, and per shard its file, orbits, uids and
                                 byte size

The plan — which orbits go in which shard — is the training split's orbits in the dataset's order, N per shard, so
every process derives it from the manifest alone. Process R of W encodes the shards i with i mod W = R and needs no
coordination beyond the file system:
- every file is written atomically (temp + rename): a killed encode leaves whole shards behind;
- a rerun keeps each shard whose key matches — the VAE, the orbits' manifest entries and the bytes of their files,
  the latent cache's ingredients — and encodes the others (missing, truncated, unreadable, stale) again;
- a process whose shards are done writes the index if every planned shard is there (its header read: this VAE, the
  planned orbits, the file whole). Whichever process finishes last sees them all; two that finish together write the
  same bytes. Writing a shard first removes an index, which could otherwise describe files being replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open
from tqdm import tqdm

from diffusion4d.data import layout
from diffusion4d.data.dataset import OrbitDataset
from diffusion4d.diffusion.latent_cache import OrbitLatents, encode_orbits, hash_orbit_files, vae_digest, write_cache
from diffusion4d.io import write_json_atomic

INDEX_NAME = "index.json"
VAE_DIR = "vae"
FORMAT, VERSION = "diffusion4d-shards", 1


class ShardError(ValueError):
    """A shard that is missing, truncated, unreadable or not the one the index lists; the message names it."""


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def shard_plan(num_samples: int, shard_size: int) -> list[range]:
    """The dataset indices of each shard: consecutive runs of ``shard_size`` (the last one may be shorter)."""
    return [range(i, min(i + shard_size, num_samples)) for i in range(0, num_samples, shard_size)]


def is_shard_dir(path: str | Path) -> bool:
    """A folder `diffusion4d encode` wrote (its index, or the shards of an unfinished encode)."""
    path = Path(path)
    if (path / INDEX_NAME).is_file():
        return True
    return not (path / layout.MANIFEST).exists() and any(path.glob("shard_*.safetensors"))


def shard_key(vae_id: str, dataset: OrbitDataset, indices: range) -> str:
    """A digest of what a shard's values depend on: the VAE, the background, and per orbit its folder, its manifest
    entries (m, caption, number of views) and the bytes of its files."""
    h = hashlib.sha256(f"{vae_id}:{list(dataset.background)}".encode())
    for i in indices:
        row, orbit = dataset.items[i]
        h.update(json.dumps([orbit["folder"], orbit["m"], row.get("caption", ""), row.get("num_views")]).encode())
        hash_orbit_files(h, dataset.root / orbit["folder"])
    return h.hexdigest()


def shard_header(path: Path) -> dict[str, str]:
    """The metadata of a whole, readable shard, else ShardError naming it. safetensors checks that the file covers
    every tensor its header lists, so a truncated file fails here."""
    if not path.is_file():
        raise ShardError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types for a damaged file)
        raise ShardError(f"{path}: unreadable ({exc})") from None


@dataclass
class EncodeReport:
    """What one `encode_shards` call did, by shard file name."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # complete and valid already (a rerun)
    replaced: dict[str, str] = field(default_factory=dict)  # name → why the file there was encoded again
    pending: list[str] = field(default_factory=list)  # other processes' shards not there yet
    index: Path | None = None  # written by this call

    def summary(self) -> str:
        lines = [f"{len(self.written)} shards written, {len(self.kept)} kept from an earlier encode"]
        lines += [f"  encoded again: {name}: {why}" for name, why in self.replaced.items()]
        if self.index:
            lines.append(f"index: {self.index}")
        else:
            lines.append(f"no index yet: {len(self.pending)} shards of other processes missing (e.g. "
                         f"{self.pending[0]}); the last process to finish writes it, or rerun encode")
        return "\n".join(lines)


def encode_shards(data: str | Path, out: str | Path, vae, shard_size: int = 64, workers: int = 0, rank: int = 0,
                  world: int = 1, vae_source: str | None = None, progress: bool = True) -> EncodeReport:
    """Encode this process's shards (rank of world) of the training orbits in ``data`` into ``out`` with ``vae`` (on
    its device), then write the index if every shard is there; see the module docstring. ``vae_source`` says in the
    index where the VAE came from."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if not 0 <= rank < world:
        raise ValueError(f"--rank must be in 0..{world - 1} for --world {world}, got {rank}")
    dataset = OrbitDataset(data, split="train")
    if len(dataset) == 0:
        raise ValueError(f"{data}: no kept training orbits in manifest.jsonl")
    out = Path(out)
    vae_id = vae_digest(vae)
    save_vae(out / VAE_DIR, vae, vae_id)
    plan = shard_plan(len(dataset), shard_size)
    report = EncodeReport()
    for i in tqdm(range(rank, len(plan), world), desc=f"encode (process {rank} of {world})", disable=not progress):
        encode_shard(out / shard_name(i), vae, vae_id, dataset, plan[i], workers, report)
    report.index, report.pending = write_index_if_complete(out, dataset, plan, vae, vae_id, vae_source)
    return report


def encode_shard(path: Path, vae, vae_id: str, dataset: OrbitDataset, indices: range, workers: int,
                 report: EncodeReport) -> None:
    """Encode the orbits ``indices`` into ``path`` unless a shard with their key is there already."""
    key = shard_key(vae_id, dataset, indices)
    try:
        if shard_header(path).get("key") == key:
            report.kept.append(path.name)
            return
        report.replaced[path.name] = "made from other inputs (VAE, manifest or orbit files changed)"
    except ShardError as exc:
        if path.exists():
            report.replaced[path.name] = str(exc).removeprefix(f"{path}: ")
    (path.parent / INDEX_NAME).unlink(missing_ok=True)
    latents = encode_orbits(vae, dataset, workers, indices)
    uids = [dataset.items[i][0]["uid"] for i in indices]
    write_cache(path, latents, key, {"vae": vae_id, "uids": json.dumps(uids)})
    report.written.append(path.name)


def save_vae(folder: Path, vae, vae_id: str) -> None:
    """The VAE in ``folder`` (diffusers format, plus its digest), unless it holds this one already. Processes that
    race each write a copy under their own name and rename it into place: any of the copies is the same VAE."""
    digest = folder / "digest.txt"
    if digest.is_file() and digest.read_text().strip() == vae_id:
        return
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp)
    (tmp / "digest.txt").write_text(vae_id + "\n")
    shutil.rmtree(folder, ignore_errors=True)  # another VAE's
    try:
        os.rename(tmp, folder)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)


def write_index_if_complete(out: Path, dataset: OrbitDataset, plan: list[range], vae, vae_id: str,
                            vae_source: str | None) -> tuple[Path | None, list[str]]:
    """Write ``out/index.json`` if every planned shard is there, whole, with this VAE and its planned orbits.
    Returns (the index, or None; the shard files still missing or not yet right)."""
    entries, pending = [], []
    for i, indices in enumerate(plan):
        path = out / shard_name(i)
        orbits = [dataset.items[j][1]["folder"] for j in indices]
        try:
            header = shard_header(path)
        except ShardError:
            header = {}
        if header.get("vae") != vae_id or json.loads(header.get("orbits", "null")) != orbits:
            pending.append(path.name)
            continue
        entries.append({"file": path.name, "orbits": orbits, "uids": json.loads(header["uids"]),
                        "bytes": path.stat().st_size})
    if pending:
        return None, pending
    data = {"folder": str(dataset.root.resolve()), "split": "train", "background": list(dataset.background),
            "manifest_sha256": hashlib.sha256((dataset.root / layout.MANIFEST).read_bytes()).hexdigest()}
    return write_index(out, entries, vae, vae_id, vae_source, data, len(plan[0])), []


def write_index(out: Path, entries: list[dict], vae, vae_id: str, vae_source: str | None, data: dict,
                shard_size: int) -> Path:
    """``out/index.json`` for the shards ``entries`` (file, orbits, uids, bytes each), made by ``vae`` from
    ``data`` (where the samples came from); the sample shapes are read from the first shard."""
    with safe_open(str(out / entries[0]["file"]), framework="pt") as f:
        shapes = {name: f.get_slice(name).get_shape()[1:] for name in OrbitLatents.TENSORS}
    index = {
        "format": FORMAT, "version": VERSION,
        "vae": {"digest": vae_id, "source": vae_source or "a fresh tiny VAE (no --vae)",
                "scaling_factor": float(vae.config.scaling_factor)},
        "data": data, "num_samples": sum(len(e["orbits"]) for e in entries), "shard_size": shard_size,
        "shapes": shapes, "shards": entries,
    }
    write_json_atomic(out / INDEX_NAME, index)
    return out / INDEX_NAME


@dataclass
class ShardIndex:
    """A shard folder and its index.json (see the module docstring)."""

    root: Path
    info: dict

    @property
    def path(self) -> Path:
        return self.root / INDEX_NAME

    @property
    def vae_digest(self) -> str:
        return self.info["vae"]["digest"]

    @property
    def shards(self) -> list[dict]:
        return self.info["shards"]

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """The orbits' frames [T, 3, H, W] (what a run records for sampling)."""
        T, (C, H, W) = self.info["shapes"]["video"][1], self.info["shapes"]["front"]
        return T, C, H, W

    @property
    def video_shape(self) -> tuple[int, ...]:
        """One sample's latents [C, T, h, w]."""
        return tuple(self.info["shapes"]["video"])


def read_index(root: str | Path) -> ShardIndex:
    root = Path(root)
    path = root / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no index, the encode has not finished: run `diffusion4d encode` again with "
                                "the same arguments to finish it")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise ValueError(f"{path}: not a shard index of this package (format {info.get('format')!r}, version "
                         f"{info.get('version')!r}; expected {FORMAT!r}, {VERSION})")
    return ShardIndex(root, info)


def check_vae(index: ShardIndex, vae, source: str) -> None:
    """Refuse a run whose VAE is not the one the shards' latents were made with, naming both."""
    digest = vae_digest(vae)
    if digest != index.vae_digest:
        raise ValueError(f"{index.path}: the shards were encoded with the VAE {index.info['vae']['source']} (digest "
                         f"{index.vae_digest[:12]}), but this run's VAE is {source} (digest {digest[:12]}): train "
                         f"with the shards' VAE (--vae {index.root / VAE_DIR}, the default for --data SHARDS) or "
                         "encode again with this one")


def check_shards(index: ShardIndex) -> tuple[list[dict], list[str]]:
    """The index's shards that are there at their listed size, and one line naming each that is not (missing, or
    truncated: another size). One stat per shard; the bytes themselves are checked as a shard is read."""
    good, problems = [], []
    for entry in index.shards:
        path = index.root / entry["file"]
        size = path.stat().st_size if path.is_file() else None
        if size == entry["bytes"]:
            good.append(entry)
        elif size is None:
            problems.append(f"{path}: missing")
        else:
            problems.append(f"{path}: {size} bytes, the index lists {entry['bytes']} (truncated or rewritten)")
    return good, problems


def load_shard(index: ShardIndex, entry: dict) -> OrbitLatents:
    """One shard's samples in host memory; ShardError naming the file when it is damaged, or holds other samples
    or another VAE's latents than the index lists."""
    path = index.root / entry["file"]
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in OrbitLatents.TENSORS}
        if meta.get("vae") != index.vae_digest or json.loads(meta.get("orbits", "null")) != entry["orbits"]:
            raise ShardError("not the samples the index lists (encoded again since?)")
        return OrbitLatents(**tensors, captions=json.loads(meta["captions"]), orbits=entry["orbits"])
    except Exception as exc:  # noqa: BLE001  (safetensors' own error types; a bad m; the check above)
        raise ShardError(f"{path}: unreadable shard ({exc}); run `diffusion4d encode` again to rewrite it") from None
