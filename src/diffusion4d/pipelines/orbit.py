"""Prompt → orbit video: the trained 4D-aware model sampled with 3D-aware CFG (Eq. 3), decoded, written out.

    pipe = OrbitPipeline.from_run("runs/4d", base="runs/3d")
    frames = pipe(prompt="a red bird flaps its wings", motion=0.02, seed=0)      # uint8 [T, H, W, 3]
    write_orbit(frames, "out/")      # multi_frame{i}.png + multi{i}.json, orbit.mp4, orbit.gif
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.diffusion.acceleration import SamplerSpeedups, default_compile_cache
from diffusion4d.diffusion.components import load_base_unet, load_run_encoders, unet_class
from diffusion4d.diffusion.sampling import SamplerSettings, sample_latents
from diffusion4d.diffusion.schedule import check_eq3_pair, find_scheduler_config, read_schedule
from diffusion4d.io import write_videos_atomic
from diffusion4d.models.conditions import Condition
from diffusion4d.models.unets import first_view_image_latents

BACKGROUND = (1.0, 1.0, 1.0)  # the training background (data.layout.composite's default)
PAPER_GUIDANCE = (7.0, 0.5)  # w1, w2 of Eq. 3 (Sec. 4.1)


def load_image_prompt(path: str | Path, size: int, background=BACKGROUND) -> torch.Tensor:
    """Any image file → [3, size, size] in [−1, 1]: alpha composited on the training background, resized."""
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image: {exc}") from None
    notes = []
    if rgba[..., 3].min() < 255:
        notes.append("composited its transparency on the training background")
    rgb = layout.composite(rgba, background)
    if rgb.shape[-2:] != (size, size):
        notes.append(f"resized {rgb.shape[-1]}x{rgb.shape[-2]} → {size}x{size}")
        rgb = torch.nn.functional.interpolate(rgb[None], size=(size, size), mode="bicubic", antialias=True)[0]
    if notes:
        print(f"{path}: " + "; ".join(notes))
    return rgb.clamp(0, 1) * 2 - 1


def load_static_prompt(folder: str | Path, size: int, num_frames: int, background=BACKGROUND):
    """A static orbit V̄ in the official layout → (frames [T, 3, size, size] in [−1, 1], c2w [T, 4, 4])."""
    folder = Path(folder)
    orbit = layout.read_static_orbit(folder)
    if len(orbit.images) != num_frames:
        raise ValueError(f"{folder}: the model makes {num_frames}-view orbits, this one has {len(orbit.images)}")
    frames = layout.composite(orbit.images, background)
    if frames.shape[-1] != size:
        frames = torch.nn.functional.interpolate(frames, size=(size, size), mode="bicubic", antialias=True)
    return frames.clamp(0, 1) * 2 - 1, orbit.c2w


@dataclass
class OrbitPipeline:
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    encoders: dict
    condition: str  # what the model was trained on: text | image | static
    num_frames: int
    image_size: int
    base_unet: torch.nn.Module | None = None  # the frozen 3D-aware model ε̄ of Eq. 3
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    compile: bool = False  # GPU only: compile the UNet blocks (first sample on a machine pays minutes; then cached)
    # the guidance of Eq. 3 when a call names none: the paper's defaults, or what a bundle recommends for its models
    w1: float = PAPER_GUIDANCE[0]
    w2: float = PAPER_GUIDANCE[1]
    # k of `SamplerSettings(guidance_every=k)`: 1 evaluates Eq. 3's branches at every step; k > 1 reuses the guidance
    # term between every k-th step (fewer model calls, an approximation; benchmarks/bench_guidance_reuse.py)
    guidance_every: int = 1

    @classmethod
    def from_run(cls, run: str | Path, base: str | Path | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, compile: bool = False) -> OrbitPipeline:
        from diffusers import AutoencoderKL, DDIMScheduler

        run = Path(run)
        info_file = run / "run.json"
        if not info_file.exists():
            raise FileNotFoundError(f"{run}: not a trained run (run.json missing; train with `diffusion4d train`)")
        info = json.loads(info_file.read_text())
        kind = "text" if info["condition"] == "text" else "image"
        unet = unet_class(kind).from_pretrained(run / "unet").to(device, dtype).eval()
        scheduler = DDIMScheduler.from_pretrained(run / "scheduler")
        base_unet = None
        if base is not None:
            base_schedule = find_scheduler_config(base)  # None for a VideoMV file: it carries none
            if base_schedule is not None:
                check_eq3_pair(scheduler.config, read_schedule(base_schedule), str(run), str(base))
            base_unet = load_base_unet(kind, base).to(device, dtype).eval()  # a run, or a VideoMV file
        return cls(
            unet=unet, vae=AutoencoderKL.from_pretrained(run / "vae").to(device, dtype).eval(),
            scheduler=scheduler, encoders=load_run_encoders(run, info, device, dtype),
            condition=info["condition"], num_frames=info["num_frames"], image_size=info["image_size"],
            base_unet=base_unet, device=device, dtype=dtype, compile=compile,
        )

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[T, 3, H, W] in [−1, 1] → latents [1, C, T, h, w]."""
        z = self.vae.encode(frames.to(self.device, self.dtype)).latent_dist.mean * self.vae.config.scaling_factor
        return z.permute(1, 0, 2, 3)[None].float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [1, C, T, h, w] → uint8 frames [T, H, W, 3]."""
        z = latents[0].permute(1, 0, 2, 3).to(self.device, self.dtype) / self.vae.config.scaling_factor
        frames = torch.cat([self.vae.decode(z[i : i + 8]).sample for i in range(0, len(z), 8)])
        return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    def conditions(self, prompt: str | None, image: torch.Tensor | None, static: torch.Tensor | None,
                   motion: float, c2w=None) -> tuple[Condition, Condition, Condition]:
        """(y with m, unconditional, y for the 3D-aware base) for one sample; ``c2w`` [T, 4, 4] are the orbit's
        cameras (default: the official trajectory), given to the models built with a camera embedding."""
        m = torch.tensor([float(motion)])
        on, off = torch.ones(1), torch.zeros(1)
        views = self.orbit_cameras(c2w)
        own = views if _takes_cameras(self.unet) else None
        base = views if _takes_cameras(self.base_unet) else None
        if self.condition == "text":
            states = self.encoders["text"]([prompt or ""])
            empty = self.encoders["text"]([""])
            return (Condition(encoder_hidden_states=states, motion=m, motion_keep=on, cameras=own),
                    Condition(encoder_hidden_states=empty, motion=m, motion_keep=off, cameras=own),
                    Condition(encoder_hidden_states=states, motion=m, motion_keep=off, cameras=base))
        front = static[0] if static is not None else image
        embedding = self.encoders["image"](front[None].to(self.device, self.dtype)).float()
        static_latents = self.encode(static) if static is not None else None
        front_latent = static_latents[:, :, 0] if static is not None else self.encode(front[None])[:, :, 0]
        first = first_view_image_latents(front_latent, self.num_frames)
        latents = static_latents if static is not None else first
        return (Condition(image_embeddings=embedding, image_latents=latents, motion=m, motion_keep=on, cameras=own),
                Condition(image_embeddings=torch.zeros_like(embedding), image_latents=torch.zeros_like(latents),
                          motion=m, motion_keep=off, cameras=own),
                Condition(image_embeddings=embedding, image_latents=first, motion=m, motion_keep=off, cameras=base))

    def orbit_cameras(self, c2w=None) -> torch.Tensor:
        """Camera-to-world matrices [1, T, 4, 4] of the orbit to sample: ``c2w`` [T, 4, 4], else the official
        trajectory (``cameras.orbit_camera_to_world``)."""
        c2w = cameras.orbit_camera_to_world(self.num_frames) if c2w is None else c2w
        c2w = torch.as_tensor(np.asarray(c2w), dtype=torch.float32)
        if c2w.shape != (self.num_frames, 4, 4):
            raise ValueError(f"c2w must be [{self.num_frames}, 4, 4] (one camera per view); got {tuple(c2w.shape)}")
        return c2w[None]

    def _latent_hw(self) -> tuple[int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.image_size // factor, self.image_size // factor

    def __call__(self, prompt: str | None = None, image: torch.Tensor | None = None,
                 static: torch.Tensor | None = None, motion: float = 0.02, w1: float | None = None,
                 w2: float | None = None, steps: int = 50, seed: int = 0, progress: bool = True,
                 c2w=None) -> np.ndarray:
        """Sample one orbit; exactly one of prompt / image [3, H, W] / static [T, 3, H, W] matches the model.
        ``w1`` / ``w2`` default to the pipeline's own (``self.w1`` / ``self.w2``); ``c2w`` [T, 4, 4] are the views'
        cameras (default: the official orbit; a static prompt's own cameras where it has them)."""
        w1 = self.w1 if w1 is None else w1
        w2 = self.w2 if w2 is None else w2
        given = {"text": prompt is not None, "image": image is not None, "static": static is not None}
        if sum(given.values()) != 1 or not given[self.condition]:
            raise ValueError(f"this model takes a {self.condition} prompt (and only that)")
        if not np.isfinite(motion) or motion < 0:
            raise ValueError(f"motion magnitude must be a finite number ≥ 0, got {motion}")
        if self.condition == "text" and not prompt:
            print("empty prompt: sampling unconditionally")
        if w2 != 0 and self.base_unet is None:
            print("no 3D-aware base model given (--base): w2 set to 0")
            w2 = 0.0
        conditions = self.conditions(prompt, image, static, motion, c2w)
        cond, uncond, base_cond = (c.to(self.device, self.dtype) for c in conditions)
        on_gpu = torch.device(self.device).type == "cuda"
        if self.compile and on_gpu and not getattr(self.unet, "_d4d_blocks_compiled", 0):
            print(f"compiling the UNet blocks (once per machine; cached in {default_compile_cache()}) …")
        settings = SamplerSettings(
            steps=steps, w1=w1, w2=w2, guidance_every=self.guidance_every, device=self.device, dtype=self.dtype,
            progress=progress,
            # on a GPU: one CUDA graph per step with ε̄ on a second stream (bitwise equal to the plain loop)
            speedups=SamplerSpeedups(compile_blocks=self.compile) if on_gpu else None,
        )
        latents = sample_latents(
            self.unet, self.scheduler, cond, uncond,
            latent_shape=(self.vae.config.latent_channels, self.num_frames, *self._latent_hw()), seeds=[seed],
            base_model=self.base_unet, base_cond=base_cond, settings=settings,
        )
        return self.decode(latents)

    def sample_base(self, prompt: str | None = None, image: torch.Tensor | None = None, w1: float | None = None,
                    steps: int = 50, seed: int = 0, progress: bool = True, c2w=None) -> np.ndarray:
        """V̄′ of Sec. 3.4: a static orbit [T, H, W, 3] uint8 from the 3D-aware base ε̄ alone (plain CFG, w1, on its
        own condition: the prompt, or the first view ``image`` [3, H, W]), the coarse stage's extra supervision."""
        w1 = self.w1 if w1 is None else w1
        if self.base_unet is None:
            raise ValueError("sample_base needs the 3D-aware base model (base_unet)")
        if (prompt is None) == (image is None) or self.condition == "static":
            raise ValueError("sample_base takes exactly one of prompt (text models) or image (image models)")
        _, uncond, base_cond = (c.to(self.device, self.dtype) for c in self.conditions(prompt, image, None, 0.0, c2w))
        uncond.cameras = base_cond.cameras  # the base's own unconditional branch: its cameras, if it takes them
        on_gpu = torch.device(self.device).type == "cuda"
        settings = SamplerSettings(
            steps=steps, w1=w1, w2=0.0, guidance_every=self.guidance_every, device=self.device, dtype=self.dtype,
            progress=progress, speedups=SamplerSpeedups(compile_blocks=self.compile) if on_gpu else None,
        )
        latents = sample_latents(
            self.base_unet, self.scheduler, base_cond, uncond,
            latent_shape=(self.vae.config.latent_channels, self.num_frames, *self._latent_hw()), seeds=[seed],
            settings=settings,
        )
        return self.decode(latents)


def _takes_cameras(model) -> bool:
    """Whether ``model`` (or None, a model not loaded) was built with a camera embedding."""
    return model is not None and bool(model.config.camera_embedding)


def write_orbit(frames: np.ndarray, out_dir: str | Path, c2w: np.ndarray | None = None,
                fov_deg: float = cameras.DEFAULT_FOV_DEG, fps: int = 8) -> Path:
    """Frames [T, H, W, 3] → the official layout (multi_frame{i}.png + multi{i}.json), orbit.mp4 and orbit.gif."""
    out_dir = Path(out_dir)
    T, H, W = frames.shape[:3]
    c2w = cameras.orbit_camera_to_world(T) if c2w is None else c2w
    x_fov, y_fov = cameras.fov_xy(fov_deg, W, H)
    for i in range(T):
        layout.write_view(out_dir, layout.DYNAMIC, i, frames[i], c2w[i], x_fov, y_fov)
    write_videos_atomic(out_dir / "orbit", frames, fps)
    return out_dir
