"""Training our own small VAE (a diffusers ``AutoencoderKL``) on the orbit renders, one flat loop on `accelerate`.

The images are single orbit frames — dynamic and static views of the kept training orbits — composited on the
training background (white). Loss: L1 + MSE reconstruction of the posterior sample, plus a small KL term that keeps
the posterior close to N(0, I) (LDM's KL-regularised autoencoder). At the end the latent scale is measured on the
data and written as the config's ``scaling_factor``, so the diffusion models see latents of unit variance.

Resumes exactly like ``train.py``: samples come from a generator seeded by (seed, step, micro, rank); checkpoints
(safetensors + JSON) through ``checkpoint.py``. The model is saved with ``save_pretrained`` in ``OUT/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from diffusion4d.data import layout
from diffusion4d.data.dataset import collate, read_manifest
from diffusion4d.diffusion.checkpoint import EMA, resumed_step, save_checkpoint
from diffusion4d.diffusion.seeding import step_generator
from diffusion4d.diffusion.train import StepBatches, out_of_time
from diffusion4d.io import append_jsonl, write_json_atomic

#: widths of our default VAE: ×8 downsampling (4 levels), 4 latent channels, ~1.7 M parameters; the first level is
#: narrow because at 128² its convolutions cost the most when decoding 24 frames on a CPU
SMALL_VAE_WIDTHS = (16, 32, 64, 96)


@dataclass
class VAEConfig:
    data: str = ""  # orbit folder with manifest.jsonl (diffusion4d render + curate)
    out: str = ""  # the output folder: the VAE (config.json + safetensors), checkpoints/, loss.jsonl
    size: int = 128  # frames are resized to size² when rendered at another size
    max_steps: int = 2000
    batch_size: int = 16  # frames per process and micro-step
    grad_accum: int = 1
    lr: float = 1e-3
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 1e-5  # on the KL per latent element: a light regulariser (LDM's is lighter still)
    mixed_precision: str = "no"  # no | bf16
    ema_decay: float = 0.99
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    data_workers: int = 2
    widths: tuple[int, ...] = SMALL_VAE_WIDTHS  # block_out_channels of the 4 levels
    max_seconds: float | None = None  # stop early (checkpointed, resumable) once the loop has run this long

    def validate(self) -> None:
        if not self.data or not self.out:
            raise ValueError("train-vae needs --data DIR and --out DIR")
        if len(self.widths) != 4 or any(w % 8 for w in self.widths):
            raise ValueError(f"widths must be 4 multiples of 8 (×8 downsampling, 8 norm groups); got {self.widths}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")
        if self.size < 8 or self.size % 8:
            raise ValueError(f"--size must be a multiple of 8 (the VAE downsamples ×8), got {self.size}")

    @classmethod
    def from_overrides(cls, **overrides) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in overrides.items() if v is not None and k in known})


class FrameDataset(Dataset):
    """Every view of every kept training orbit (dynamic and static) → {"image": [3, size, size] in [−1, 1]}."""

    def __init__(self, root: str | Path, size: int, split: str = "train"):
        self.root, self.size = Path(root), size
        self.frames: list[Path] = []
        for row in read_manifest(self.root):
            if "orbits" not in row or not row.get("kept") or row.get("split") != split:
                continue
            for orbit in row["orbits"]:
                folder = self.root / orbit["folder"]
                for kind in (layout.DYNAMIC, layout.STATIC):
                    n = layout.count_views(folder, kind)
                    self.frames += [layout.frame_path(folder, kind, i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        rgb = layout.composite(layout.read_rgba(self.frames[index]))  # [3, H, W] in [0, 1] on white
        if rgb.shape[-1] != self.size or rgb.shape[-2] != self.size:
            rgb = F.interpolate(rgb[None], size=(self.size, self.size), mode="bicubic", antialias=True)[0]
        return {"image": rgb.clamp(0, 1) * 2 - 1}


def build_vae(widths: tuple[int, ...] = SMALL_VAE_WIDTHS):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=tuple(widths),
                         latent_channels=4, layers_per_block=1, norm_num_groups=8)


def vae_loss(recon: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             config: VAEConfig) -> tuple[torch.Tensor, dict]:
    """L = w1·|x̂ − x|₁ + w2·|x̂ − x|² + w_kl·KL(N(μ, σ²) ‖ N(0, I)), each a mean over its elements."""
    l1 = (recon - target).abs().mean()
    mse = (recon - target).pow(2).mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = config.l1_weight * l1 + config.mse_weight * mse + config.kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


@torch.no_grad()
def latent_std(vae, dataset: Dataset, count: int = 256, seed: int = 0) -> float:
    """The standard deviation of posterior means over ``count`` random frames (for ``scaling_factor``)."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(dataset), generator=g)[:count].tolist()
    device, dtype = vae.device, vae.dtype
    latents = [vae.encode(collate([dataset[i] for i in picks[j : j + 32]])["image"].to(device, dtype))
               .latent_dist.mean.float() for j in range(0, len(picks), 32)]
    return torch.cat(latents).std().item()


def train_vae(config: VAEConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or continue) VAE training; returns the output folder (a diffusers AutoencoderKL folder)."""
    from accelerate import Accelerator

    config.validate()
    out = Path(config.out)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    dataset = FrameDataset(config.data, config.size)
    if len(dataset) == 0:
        raise ValueError(f"{config.data}: no kept training orbits in manifest.jsonl")
    torch.manual_seed(config.seed)
    vae = build_vae(config.widths)
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    ema = EMA(vae, config.ema_decay)
    start_step = resumed_step(out, vae, ema, optimizer, resume, accelerator.print)
    if start_step is None and accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_vae_config.json", asdict(config))
    start_step = start_step or 0  # None: a fresh run
    vae, optimizer = accelerator.prepare(vae, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    batches = iter(DataLoader(dataset, batch_sampler=StepBatches(len(dataset), config, start_step, rank, world),
                              collate_fn=collate, num_workers=config.data_workers,
                              persistent_workers=config.data_workers > 0))
    bar = tqdm(range(start_step, config.max_steps), initial=start_step, total=config.max_steps, desc="train-vae",
               disable=not progress or not accelerator.is_main_process)
    done = start_step
    last = loop_start = time.perf_counter()
    for step in bar:
        logs = _optimizer_step(accelerator, vae, optimizer, batches, step, rank, config)
        ema.update(accelerator.unwrap_model(vae))
        done = step + 1
        stop = out_of_time(accelerator, loop_start, config.max_seconds)
        final = done == config.max_steps or stop
        if accelerator.is_main_process and (done % config.log_every == 0 or final):
            now = time.perf_counter()
            logs["seconds_per_step"] = (now - last) / (done % config.log_every or config.log_every)
            last = now
            append_jsonl(out / "loss.jsonl", {"step": done, **logs})
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
        if accelerator.is_main_process and (done % config.checkpoint_every == 0 or final):
            save_checkpoint(out, done, accelerator.unwrap_model(vae), ema, optimizer, {"config": asdict(config)})
        if stop:
            accelerator.print(f"stopped at step {done} of {config.max_steps}: max_seconds reached")
            break
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_trained_vae(out, accelerator.unwrap_model(vae), ema, dataset, done, config.seed)
    accelerator.end_training()
    return out


def _optimizer_step(accelerator, vae, optimizer, batches, step: int, rank: int, config: VAEConfig) -> dict:
    """One optimizer step over ``config.grad_accum`` micro-batches → the loss terms averaged over them."""
    optimizer.zero_grad(set_to_none=True)
    logs = {"loss": 0.0, "l1": 0.0, "mse": 0.0, "kl": 0.0}
    for micro in range(config.grad_accum):
        g = step_generator(config.seed, step, micro, rank)
        images = next(batches)["image"].to(accelerator.device)
        with accelerator.autocast():
            posterior = accelerator.unwrap_model(vae).encode(images).latent_dist
            eps = torch.randn(posterior.mean.shape, generator=g).to(posterior.mean.device, posterior.mean.dtype)
            recon = accelerator.unwrap_model(vae).decode(posterior.mean + posterior.std * eps).sample
        loss, terms = vae_loss(recon.float(), images, posterior.mean.float(), posterior.logvar.float(), config)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: VAE loss is {loss.item()}; the last checkpoint is intact — "
                                     "lower --lr")
        accelerator.backward(loss / config.grad_accum)
        for k, v in terms.items():
            logs[k] += v / config.grad_accum
    accelerator.clip_grad_norm_(vae.parameters(), 1.0)
    optimizer.step()
    return logs


def _save_trained_vae(out: Path, model, ema: EMA, dataset: Dataset, steps: int, seed: int) -> None:
    """The VAE we ship: the EMA weights, with the scaling_factor that gives its latents unit standard deviation."""
    ema.copy_to(model)
    model.eval()
    # diffusion sees z · scaling_factor: measured so those latents have unit standard deviation
    std = latent_std(model, dataset, seed=seed)
    model.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    model.save_pretrained(out)
    write_json_atomic(out / "vae_report.json", {"latent_std": std, "steps": steps, "frames": len(dataset)})


def reconstruction_error(vae_dir: str | Path, data: str | Path, size: int, count: int = 16) -> float:
    """Mean absolute error (in [−1, 1] units) of encoding + decoding ``count`` frames (posterior means)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    dataset = FrameDataset(data, size)
    images = collate([dataset[i] for i in range(min(count, len(dataset)))])["image"]
    with torch.no_grad():
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample
    return (recon - images).abs().mean().item()


def read_losses(out: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "loss.jsonl").read_text().splitlines() if line.strip()]
