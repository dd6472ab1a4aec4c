"""One training step of train.py, behind one call: ``losses = step_fn(step)``.

The host draws every random value of the step from (seed, step, micro-step, rank) (`StepParts.draw`); the device
does the rest — forward diffusion, the condition, L = L_ldm + ω·L_mr (Eq. 2, losses.py), backward
(`StepParts.micro_step`), gradient clipping, the optimizer step and the EMA update (`StepParts.update`) — and the
step returns [L, L_ldm, L_mr] as a device tensor, with nothing read back to the host.

`make_train_step` gives the loop one of two twins with that signature:
  EagerStep     ``grad_accum`` micro-steps as ordinary PyTorch calls, then the update;
  ReplayedStep  ``cuda_graph``: the whole step replayed from one CUDA graph (graphed_step.py) — the small UNets'
                steps are bound by the host's kernel launches.
Both keep ``finite``, a device flag that turns False at the first non-finite loss: the loop reads it at log and
checkpoint steps only. What a CUDA graph asks of the rest of the set-up is here too: accelerate's autocast without
its weight-cast cache (`step_handlers`), one process on a CUDA device (`check_step_device`), a capturable optimizer
(`make_optimizer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from diffusion4d.diffusion.checkpoint import EMA
from diffusion4d.diffusion.graphed_step import GraphedStep
from diffusion4d.diffusion.latent_cache import host_to_device
from diffusion4d.diffusion.losses import diffusion4d_loss, noised_latents
from diffusion4d.diffusion.seeding import step_generator
from diffusion4d.models.checks import condition_checks_skipped
from diffusion4d.models.conditions import Condition
from diffusion4d.models.unets import first_view_image_latents

if TYPE_CHECKING:
    from diffusion4d.diffusion.train import TrainConfig

Inputs = dict[str, torch.Tensor]


def model_kind(condition: str) -> str:
    """The UNet a condition trains: the text model, or the image model (image and static conditions)."""
    return "text" if condition == "text" else "image"


def stage_condition(config: TrainConfig) -> str:
    """The condition this stage trains under. The 3D-aware base of the image and static-3D models is
    image-conditioned (VideoMV's image-to-3D model): with V̄ as both condition and target, the static stage would
    learn to copy."""
    return "image" if config.stage == "3d" and model_kind(config.condition) == "image" else config.condition


def step_noise(shape: torch.Size, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """ε ~ N(0, I) of one micro-step, from ``g``. On an accelerator the draw happens there, from a generator seeded
    by ``g``: drawing megabytes on the host and copying them over every step costs as much as a small UNet's step."""
    if device.type == "cpu":
        return torch.randn(shape, generator=g)
    seed = int(torch.randint(2**62, (1,), generator=g))
    return torch.randn(shape, generator=torch.Generator(device).manual_seed(seed), device=device)


def prompt_states(encoder, captions: list[str], keep: torch.Tensor) -> torch.Tensor:
    """The text condition's states [B, L, D]: each caption where keep [B] (host) is 1, the empty prompt where 0."""
    return encoder([c if k else "" for c, k in zip(captions, keep.tolist())])


def build_condition(kind: str, condition: str, batch: dict, z0_static: torch.Tensor, z0: torch.Tensor,
                    inputs: dict, encoders: dict, use_cameras: bool) -> Condition:
    """The condition y of each sample; where ``inputs["keep"]`` is 0 the sample is unconditional (ε_θ(z_t, t) of
    Eq. 3), where ``inputs["motion_keep"]`` is 0 m is dropped. ``inputs`` holds the step's device tensors: those two
    [B] and, for text, ``"text"``, the prompts' states (`prompt_states`). ``batch["front"]`` [B, 3, H, W] is V̄'s
    first view, read by the image and static conditions only."""
    cond = Condition(motion=batch["m"], motion_keep=inputs["motion_keep"])
    if use_cameras:
        cond.cameras = batch["cameras"]
    if kind == "text":
        cond.encoder_hidden_states = inputs["text"]
        return cond
    front = batch["front"]  # the front view at τ0: the image prompt (and V̄'s first view)
    k = inputs["keep"].view(-1, 1)
    cond.image_embeddings = encoders["image"](front) * k
    if condition == "static":
        latents = z0_static  # V̄'s latents, concatenated on channels (Sec. 3.3)
    else:  # the first view's latent, then I2VGen-XL's frame-position masks
        latents = first_view_image_latents(z0_static[:, :, 0], z0.shape[2])
    cond.image_latents = latents * k.view(-1, 1, 1, 1, 1)
    return cond


@dataclass
class Trainee:
    """What a step runs and updates."""

    model: torch.nn.Module  # prepared by accelerate: the UNet, in stage 3d with the learned image encoder
    unet: torch.nn.Module  # the bare UNet, whose condition checks the step skips after the first step
    optimizer: torch.optim.Optimizer
    ema: EMA
    encoders: dict  # the condition encoders: "text" and/or "image"
    alphas_cumprod: torch.Tensor  # ᾱ_t of the run's schedule, on the device


class StepParts:
    """The pieces both twins are made of: `draw` (the host's part of a micro-step), `micro_step` and `update` (the
    device's). ``source`` is the run's data (train.CachedSource or stream.StreamSource); ``autocast`` makes the
    forward pass's autocast context."""

    def __init__(self, config: TrainConfig, accelerator, source, trainee: Trainee, autocast: Callable):
        self.config, self.accelerator, self.source, self.trainee, self.autocast = \
            config, accelerator, source, trainee, autocast
        self.kind, self.condition = model_kind(config.condition), stage_condition(config)
        self.omega = config.omega if config.stage == "4d" else 0.0  # the 3D-aware stage has no motion to rebuild
        self.use_cameras = bool(accelerator.unwrap_model(trainee.model).config.camera_embedding)
        self.finite = torch.ones((), dtype=torch.bool, device=accelerator.device)

    def draw(self, step: int, micro: int) -> Inputs:
        """The host's part of a micro-step: every random draw, from (seed, step, micro, rank), as device tensors.
        This process's share of the global batch (the source's: indices into the cache, or the streamed samples),
        timesteps, ε, and which samples keep their condition (CFG dropout) and m."""
        c, device = self.config, self.accelerator.device
        g = step_generator(c.seed, step, micro, self.accelerator.process_index)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))  # dropout etc. in the models, too
        inputs, captions = self.source.draw(step, micro)
        B = len(captions)
        inputs["t"] = host_to_device(torch.randint(c.num_train_timesteps, (B,), generator=g), device)
        inputs["noise"] = step_noise(torch.Size((B, *self.source.video_shape)), g, device)
        keep = (torch.rand(B, generator=g) >= c.cond_dropout).float()  # on the host: prompts pick from it
        inputs["keep"] = host_to_device(keep, device)
        inputs["motion_keep"] = inputs["keep"] if c.stage == "4d" else torch.zeros_like(inputs["keep"])
        if self.kind == "text":
            inputs["text"] = prompt_states(self.trainee.encoders["text"], captions, keep)
        return inputs

    def micro_step(self, inputs: Inputs, check: bool) -> torch.Tensor:
        """Forward diffusion, L = L_ldm + ω·L_mr (Eq. 2), backward; returns [L, L_ldm, L_mr] (no host sync).
        Latents: stage 3d learns V̄ itself; stage 4d learns V, with z̄0 for L_mr and the static condition. The UNet's
        value checks sync the host with the device: with ``check`` only (the first step; later conditions are built
        by the same code from the validated data)."""
        c, t = self.config, self.trainee
        batch = self.source.gather(inputs)
        z0_static = batch["static"]
        z0 = z0_static if c.stage == "3d" else batch["video"]
        z_t = noised_latents(z0, inputs["noise"], inputs["t"], t.alphas_cumprod)
        cond = build_condition(self.kind, self.condition, batch, z0_static, z0, inputs, t.encoders, self.use_cameras)
        checks = contextlib.nullcontext() if check else condition_checks_skipped(t.unet)
        with self.autocast(), checks:
            output = t.model(z_t, inputs["t"], cond).float()
        loss, l_ldm, l_mr = diffusion4d_loss(output, z0, z0_static, inputs["noise"], inputs["t"], t.alphas_cumprod,
                                             prediction_type=c.prediction_type, omega=self.omega)
        self.finite &= torch.isfinite(loss)
        self.accelerator.backward(loss / c.grad_accum)
        return torch.stack([loss, l_ldm, l_mr]).detach() / c.grad_accum

    def update(self) -> None:
        """Clipping, the optimizer step, EMA."""
        t = self.trainee
        self.accelerator.clip_grad_norm_(t.model.parameters(), 1.0)
        t.optimizer.step()
        t.ema.update(self.accelerator.unwrap_model(t.model))

    def zero_grad(self) -> None:
        self.trainee.optimizer.zero_grad(set_to_none=True)


class TrainStep:
    """``losses = step_fn(step)``: one whole training step, [L, L_ldm, L_mr] on the device (averaged over the
    micro-steps; read it before the next call). ``finite`` (a device bool) is False once any step's L was not."""

    def __init__(self, parts: StepParts):
        self.parts = parts

    @property
    def finite(self) -> torch.Tensor:
        return self.parts.finite

    def __call__(self, step: int) -> torch.Tensor:
        raise NotImplementedError


class EagerStep(TrainStep):
    """``grad_accum`` micro-steps, then the update; the UNet's value checks in the first call only."""

    def __init__(self, parts: StepParts, grad_accum: int):
        super().__init__(parts)
        self.grad_accum, self.first = grad_accum, True

    def __call__(self, step: int) -> torch.Tensor:
        p = self.parts
        p.zero_grad()
        losses = sum(p.micro_step(p.draw(step, micro), self.first) for micro in range(self.grad_accum))
        p.update()
        self.first = False
        return losses


class ReplayedStep(TrainStep):
    """One micro-step and the update, replayed from one CUDA graph after GraphedStep's eager warm-up calls: each
    call copies the step's drawn inputs into the graph's buffers and replays the whole step on the device."""

    def __init__(self, parts: StepParts):
        super().__init__(parts)
        self.graphed = GraphedStep(self.whole_step, parts.zero_grad, models=(parts.trainee.unet,))

    def whole_step(self, inputs: Inputs, check: bool) -> torch.Tensor:
        losses = self.parts.micro_step(inputs, check)
        self.parts.update()
        return losses

    def __call__(self, step: int) -> torch.Tensor:
        return self.graphed(self.parts.draw(step, 0))


def make_train_step(config: TrainConfig, accelerator, source, trainee: Trainee) -> TrainStep:
    """The loop's step function: replayed from a CUDA graph with ``config.cuda_graph``, else eager."""
    if config.cuda_graph:  # a capture cannot keep autocast's weight casts
        autocast = partial(torch.autocast, "cuda", torch.bfloat16, enabled=config.mixed_precision == "bf16",
                           cache_enabled=False)
        return ReplayedStep(StepParts(config, accelerator, source, trainee, autocast))
    return EagerStep(StepParts(config, accelerator, source, trainee, accelerator.autocast), config.grad_accum)


def step_handlers(config: TrainConfig) -> list:
    """accelerate's kwargs handlers for the step: prepare() wraps the model's forward in autocast, whose weight-cast
    cache a CUDA graph cannot capture."""
    from accelerate.utils import AutocastKwargs

    return [AutocastKwargs(cache_enabled=False)] if config.cuda_graph else []


def check_step_device(config: TrainConfig, accelerator) -> None:
    """A CUDA graph replays one process's step on its CUDA device."""
    if config.cuda_graph and (accelerator.device.type != "cuda" or accelerator.num_processes != 1):
        raise ValueError("--cuda-graph needs one process on a CUDA device (got "
                         f"{accelerator.num_processes} on {accelerator.device.type})")


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW without weight decay. Fused on CUDA: one kernel per step rather than a foreach chain per parameter
    group (the small UNets are launch-bound on a GPU). Capturable (its step counts on the device) for a CUDA graph."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0, fused=device.type == "cuda",
                             capturable=config.cuda_graph)
