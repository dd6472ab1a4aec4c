"""The latents of every training orbit, encoded once per run and kept on the device for the whole loop.

The training loop needs, per orbit, the VAE latents of the dynamic orbit V and of the static orbit V̄ (posterior
mean × scaling factor: deterministic, so encoding once is exact), V̄'s first view in pixels (the image prompt), the
cameras and m. Decoding 2·T PNGs and running the VAE encoder on them every step costs ten times the step of a small
UNet; here it happens once, before the loop, into ``RUN/latents.safetensors``.

File: safetensors with stacked tensors in the dataset's orbit order — ``video``, ``static`` [N, C, T, h, w] float32
(what `encode_video` returns), ``front`` [N, 3, H, W] in [−1, 1], ``cameras`` [N, T, 4, 4], ``m`` [N] — and metadata
``key`` (see `cache_key`), ``orbits`` (JSON list of the N orbit folders: the row of each orbit) and ``captions``.
A file whose key differs from the run's (another VAE, another manifest, other orbits or orbit files) is encoded
again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch.utils.data import DataLoader, Subset

from diffusion4d.data import layout
from diffusion4d.data.dataset import OrbitDataset, collate
from diffusion4d.io import write_bytes_atomic

CACHE_NAME = "latents.safetensors"


@torch.no_grad()
def encode_video(vae, video: torch.Tensor) -> torch.Tensor:
    """Frames [B, T, 3, H, W] in [−1, 1] → latents [B, C, T, h, w] (posterior mean × scaling factor)."""
    B, T = video.shape[:2]
    latents = vae.encode(video.flatten(0, 1).to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
    return latents.unflatten(0, (B, T)).permute(0, 2, 1, 3, 4).float()


def host_to_device(x: torch.Tensor, device) -> torch.Tensor:
    """A small host tensor on ``device`` without waiting for the device: a plain copy from pageable memory to a
    GPU synchronises its stream, so the host could not queue the next kernels while the GPU works."""
    device = torch.device(device)
    if x.device == device or device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


@dataclass
class OrbitLatents:
    """What the loop reads of the N training orbits, on one device (shapes in the module docstring)."""

    video: torch.Tensor
    static: torch.Tensor
    front: torch.Tensor
    cameras: torch.Tensor
    m: torch.Tensor
    captions: list[str]
    orbits: list[str]

    TENSORS = ("video", "static", "front", "cameras", "m")

    def __post_init__(self) -> None:
        # checked once here, so the training loop can skip the UNet's per-step value checks of m
        bad = [self.orbits[i] for i in torch.nonzero(~torch.isfinite(self.m) | (self.m < 0)).flatten().tolist()]
        if bad:
            raise ValueError(f"motion magnitude m must be finite and >= 0; not so for orbits {bad[:5]}")

    def __len__(self) -> int:
        return len(self.orbits)

    def batch(self, picks: list[int]) -> dict:
        """The orbits ``picks`` (dataset indices) as a batch: the tensors above with B = len(picks), and captions."""
        out = self.gather(host_to_device(torch.as_tensor(picks), self.video.device))
        out["caption"] = [self.captions[i] for i in picks]
        return out

    def gather(self, index: torch.Tensor) -> dict:
        """The tensors above at ``index`` [B] (on their device): no host work, so a CUDA graph can replay it."""
        return {name: getattr(self, name).index_select(0, index) for name in self.TENSORS}

    @classmethod
    def cat(cls, parts: list[OrbitLatents]) -> OrbitLatents:
        """Several sets of orbits as one, in order (e.g. every shard of a dataset)."""
        tensors = {name: torch.cat([getattr(p, name) for p in parts]) for name in cls.TENSORS}
        return cls(**tensors, captions=[c for p in parts for c in p.captions],
                   orbits=[o for p in parts for o in p.orbits])

    def to(self, device) -> OrbitLatents:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved.update({name: moved[name].to(device) for name in self.TENSORS})
        return OrbitLatents(**moved)


def vae_digest(vae) -> str:
    """A digest of what a VAE's latents depend on: its config (the scaling factor) and its weights."""
    h = hashlib.sha256()
    hash_vae(h, vae)
    return h.hexdigest()


def hash_vae(h, vae) -> None:
    """Feed the VAE's config and weights to the hash ``h``."""
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}  # _name_or_path: where it was read from
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def hash_orbit_files(h, folder: Path) -> None:
    """Feed the bytes of every file in an orbit folder to ``h`` (hashing is far cheaper than encoding them)."""
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f"{file.name}:{file.stat().st_size}:".encode())
        h.update(hashlib.sha256(file.read_bytes()).digest())


def cache_key(vae, dataset: OrbitDataset) -> str:
    """A digest of everything the cached values depend on: the VAE's weights and config (its scaling factor), the
    manifest, the orbits in order, the bytes of every file in their folders (frames re-rendered under an unchanged
    manifest are encoded again) and the background they are composited on."""
    h = hashlib.sha256()
    hash_vae(h, vae)
    h.update((dataset.root / layout.MANIFEST).read_bytes())
    h.update(json.dumps([[orbit["folder"] for _, orbit in dataset.items], list(dataset.background)]).encode())
    for _, orbit in dataset.items:
        hash_orbit_files(h, dataset.root / orbit["folder"])
    return h.hexdigest()


def encode_orbits(vae, dataset: OrbitDataset, workers: int = 0, indices: list[int] | None = None) -> OrbitLatents:
    """Encode every orbit of ``dataset`` (or those at ``indices``, in that order) on the VAE's device, one orbit per
    call (so an orbit's latents do not depend on which orbits share its batch: the CPU's convolutions differ in the
    last bit across batch sizes)."""
    if not dataset.load_static:
        raise ValueError("the latent cache needs the static orbits V̄ (OrbitDataset(load_static=True))")
    parts = {name: [] for name in OrbitLatents.TENSORS}
    captions, orbits = [], []
    items = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(items, batch_size=1, collate_fn=collate, num_workers=workers)
    for item in loader:
        parts["video"].append(encode_video(vae, item["video"].to(vae.device)))
        parts["static"].append(encode_video(vae, item["static"].to(vae.device)))
        parts["front"].append(item["static"][:, 0].to(vae.device))
        parts["cameras"].append(item["cameras"].to(vae.device))
        parts["m"].append(item["m"].to(vae.device))
        captions += item["caption"]
        orbits += item["orbit"]
    return OrbitLatents(**{name: torch.cat(values) for name, values in parts.items()}, captions=captions,
                        orbits=orbits)


def write_cache(path: str | Path, latents: OrbitLatents, key: str, metadata: dict[str, str] | None = None) -> Path:
    """Write ``latents`` to ``path`` atomically (a killed run leaves the old file or none); ``metadata``: more
    string entries for the file's header."""
    tensors = {name: getattr(latents, name).detach().cpu().contiguous() for name in OrbitLatents.TENSORS}
    metadata = {**(metadata or {}), "key": key, "orbits": json.dumps(latents.orbits),
                "captions": json.dumps(latents.captions)}
    write_bytes_atomic(path, save(tensors, metadata=metadata))
    return Path(path)


def read_cache(path: str | Path, key: str, device="cpu") -> OrbitLatents | None:
    """The cached latents if ``path`` holds them for ``key``; None when it is missing, stale or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        device = torch.device(device)
        # safetensors names the host "cpu" only: a process's "cpu:0" (accelerate's, in a multi-process CPU run) is
        # refused, which would throw away a good cache
        with safe_open(str(path), framework="pt", device="cpu" if device.type == "cpu" else str(device)) as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            tensors = {name: f.get_tensor(name) for name in OrbitLatents.TENSORS}
        return OrbitLatents(**tensors, captions=json.loads(meta["captions"]), orbits=json.loads(meta["orbits"]))
    except Exception as exc:  # noqa: BLE001  (a cache: a damaged one is encoded again, not fatal)
        warnings.warn(f"{path}: unreadable latent cache ({exc}); encoding the orbits again", stacklevel=2)
        return None


def load_or_encode(path: str | Path, vae, dataset: OrbitDataset, device, workers: int = 0,
                   write: bool = True) -> tuple[OrbitLatents, bool]:
    """The run's orbit latents on ``device``: read from ``path`` when its key matches, else encoded (and written
    if ``write``). Returns (latents, whether the file was reused)."""
    key = cache_key(vae, dataset)
    cached = read_cache(path, key, device)
    if cached is not None:
        return cached, True
    latents = encode_orbits(vae, dataset, workers).to(device)
    if write:
        write_cache(path, latents, key)
    return latents, False
