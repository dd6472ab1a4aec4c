"""Training the 4D-aware video diffusion model (paper Sec. 3.3), one flat loop on `accelerate`.

Two stages, as in the paper's lineage:
  --stage 3d  the 3D-aware base ε̄_θ: learns static orbits V̄ (no motion conditioning, L_ldm only);
  --stage 4d  the 4D-aware model ε_θ, initialised from the 3D-aware run: learns dynamic orbits V, conditioned on m,
              with L = L_ldm + ω·L_mr (Eq. 2).

Every random draw of a step (which samples, timesteps, noise, condition dropout) comes from a generator seeded by
(seed, step, micro-step, rank), so a resumed run continues exactly where the killed one would have gone, and the
same script runs on a CPU, one GPU, or many (`accelerate launch`).

The noise schedule travels with the model (schedule.py): a run takes its ``--init`` base's scheduler config
(flags that contradict it are refused), and saves the resolved one in ``RUN/scheduler`` for sampling.

The VAE latents of every training orbit are encoded once, before the loop, into ``RUN/latents.safetensors``
(latent_cache.py) and kept on the device: a step gathers its samples from there, with no data loading, and reads
nothing back to the host except at log steps. One call runs a whole step (train_step.py): the host draws its
randomness, the device does the rest — eagerly, or with ``cuda_graph`` replayed from one CUDA graph (graphed_step.py).

Data that does not fit on every device: ``diffusion4d encode`` writes the same values into shards (shards.py), and
``--data SHARDS`` streams them (stream.py): each process reads only its own shards, holds a bounded number of them
in host memory, and sends each micro-step's samples to the device. Which samples a micro-step trains on is then
a function of (seed, step, micro-step, rank) and the shards, as above, but drawn epoch by epoch without
replacement, where the cache's are drawn with replacement (StepBatches): the two sample different sequences.

Without a CLIP vision model, ``image_encoder: "learned"`` gives the image and static-3D models our own small image
encoder (models/image_tokens.py): trained with the UNet in stage 3d, carried frozen into stage 4d, saved in the run's
``image_encoder/``. ``text_states`` (a file from `diffusion4d encode-text`) replaces the text encoder in training.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from diffusion4d.data.dataset import OrbitDataset
from diffusion4d.diffusion.checkpoint import EMA, latest_checkpoint, resumed_step, save_checkpoint
from diffusion4d.diffusion.latent_cache import CACHE_NAME, OrbitLatents, host_to_device, load_or_encode
from diffusion4d.diffusion.schedule import (
    DEFAULT_SCHEDULE,
    build_scheduler,
    find_scheduler_config,
    read_schedule,
    resolve_schedule,
    schedule_of,
)
from diffusion4d.diffusion.seeding import step_generator
from diffusion4d.diffusion.shards import VAE_DIR, ShardIndex, check_vae, is_shard_dir, read_index
from diffusion4d.diffusion.train_step import (
    Trainee,
    check_step_device,
    make_optimizer,
    make_train_step,
    model_kind,
    step_handlers,
)
from diffusion4d.io import append_jsonl, write_json_atomic
from diffusion4d.models.image_tokens import LEARNED, LearnedImageEncoder, UNetWithImageEncoder

CONDITIONS = ("text", "image", "static")


@dataclass
class TrainConfig:
    data: str = ""  # orbit folder with manifest.jsonl (diffusion4d render + curate), or shards (diffusion4d encode)
    out: str = ""  # the run folder
    condition: str = "text"  # text | image | static
    preset: str = "tiny"  # tiny | small | full (ignored when --init gives the architecture)
    stage: str = "4d"  # 3d | 4d
    init: str | None = None  # one of our runs, or a local diffusers base model (pipeline or UNet folder)
    vae: str | None = None  # a diffusers AutoencoderKL folder; default: the init run's, else a fresh tiny one
    text_encoder: str | None = None  # local text model folder (CLIP or BERT-style) or "minilm" (text condition)
    text_states: str | None = None  # pre-computed text states (encode-text), used instead of running the encoder
    image_encoder: str | None = None  # local CLIP vision model folder, or "learned" (image and static conditions)
    max_steps: int = 1000
    batch_size: int = 2  # per process and micro-step
    grad_accum: int = 1
    lr: float = 3e-5  # the paper's constant learning rate
    mixed_precision: str = "no"  # no | bf16
    cond_dropout: float = 0.1  # probability of training a sample unconditionally (for CFG)
    ema_decay: float = 0.999
    omega: float = 1.0  # weight ω of L_mr
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    data_workers: int = 2  # processes decoding orbits for the one encoding pass of the latent cache
    # the noise schedule, as diffusers' DDIMScheduler names it; saved in RUN/scheduler, which sampling reads back.
    # None: not given — the --init base's (its scheduler config; schedule.py), else schedule.DEFAULT_SCHEDULE
    # (Stable Diffusion's). A given value that contradicts the base's is an error. The run's saved config holds
    # the resolved values.
    prediction_type: str | None = None  # epsilon | v_prediction
    num_train_timesteps: int | None = None  # default 1000
    beta_schedule: str | None = None  # scaled_linear (Stable Diffusion's) | squaredcos_cap_v2 | linear
    # zero terminal SNR (Lin et al. 2024): at t = T the latent holds no trace of the data, as at sampling's start
    # (pure noise). Without it a model learns to read the orbit's mean colour from z_T, which sampling cannot give.
    rescale_betas_zero_snr: bool | None = None
    timestep_spacing: str | None = None  # which timesteps sampling visits: leading; "trailing" starts at t = T − 1
    # condition every frame on its camera (models/embeddings.CameraEmbedding); an --init model without the layer
    # gets it, starting at zero output
    camera_embedding: bool = False
    # stop early (checkpointed, resumable to max_steps) once train() has run this long, its set-up (the latent
    # encoding, the graph capture) included: fits a fixed device budget (checked at log steps, so a run overshoots
    # by less than log_every steps and the final save)
    max_seconds: float | None = None
    # the orbit latents (latent_cache.py); default RUN/latents.safetensors. Runs on the same data and VAE may share one
    latent_cache: str | None = None
    # CUDA, one process, grad_accum 1: replay the whole step from one CUDA graph (graphed_step.py); the small UNets'
    # steps are bound by the host's kernel launches
    cuda_graph: bool = False
    # --data SHARDS (stream.py): position p of the global batch comes from lane p mod stream_lanes (default: one lane
    # per position; it must divide the global batch and be a multiple of the processes, and each process reads only
    # its lanes' shards); a lane shuffles stream_window shards at a time. They, the seed and the global batch fix
    # the order of the samples: keep them when resuming. Host memory: about 2 × window × lanes / processes shards.
    stream_lanes: int | None = None
    stream_window: int = 1
    # --data SHARDS: read every shard once onto the device and sample as from the latent cache (small data)
    in_memory: bool = False

    def validate(self) -> None:
        if not self.data or not self.out:
            raise ValueError("training needs --data DIR and --out RUN")
        if self.condition not in CONDITIONS:
            raise ValueError(f"--condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.stage not in ("3d", "4d"):
            raise ValueError(f"--stage must be 3d or 4d, got {self.stage!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"--mixed-precision must be no or bf16, got {self.mixed_precision!r}")
        if self.condition == "text" and not (self.text_encoder or self.text_states):
            raise ValueError("the text condition needs --text-encoder PATH|minilm or --text-states FILE")
        if self.condition != "text" and not self.image_encoder:
            raise ValueError(f"the {self.condition} condition needs --image-encoder PATH (a local CLIP vision model) "
                             f"or --image-encoder {LEARNED} (our own, trained with the 3D-aware stage)")
        if (self.stream_lanes is not None and self.stream_lanes < 1) or self.stream_window < 1:
            raise ValueError(f"--stream-lanes and --stream-window must be >= 1, got {self.stream_lanes} and "
                             f"{self.stream_window}")
        if self.cuda_graph and self.grad_accum != 1:
            raise ValueError("--cuda-graph replays one micro-step per step: it needs --grad-accum 1")
        if self.image_encoder == LEARNED and self.stage == "4d" and not self.init:
            raise ValueError(f"--image-encoder {LEARNED} in stage 4d takes the encoder of the 3D-aware run: give "
                             "--init RUN_3D")

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """A JSON config file (no code is executed), then non-None overrides (the command-line flags)."""
        known = {f.name for f in fields(cls)}
        values = json.loads(Path(path).read_text()) if path else {}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or continue) a training run; returns the run folder. See the module docstring."""
    # -- build: the schedule, the accelerator, the networks and their optimizer; a fresh run writes its run files,
    #    a resumed one loads its last checkpoint ------------------------------------------------------------------
    started = time.perf_counter()  # max_seconds counts from here: set-up under load can take minutes
    config.validate()
    schedule = run_schedule(config, resume)
    # what the loop, the checkpoints and train_config.json see: the schedule resolved, not the fields left unset
    config = replace(config, **{key: schedule[key] for key in DEFAULT_SCHEDULE})
    run = Path(config.out)
    accelerator = fresh_accelerator(config)
    data = training_index(config)
    nets = build_networks(config, data, accelerator.device)
    scheduler = build_scheduler(schedule)
    optimizer = make_optimizer(nets.model, config, accelerator.device)
    ema = EMA(nets.model, config.ema_decay)
    start_step = resumed_step(run, nets.model, ema, optimizer, resume, accelerator.print)
    if start_step is None and accelerator.is_main_process:  # a fresh run
        write_run_files(run, config, nets, scheduler, data, accelerator.num_processes)
    start_step = start_step or 0
    model, optimizer = accelerator.prepare(nets.model, optimizer)
    accelerator.init_trackers("train")

    # -- data: the latent cache or every shard on the device, or shards streamed -----------------------------------
    source, note = training_data(config, data, nets.vae, accelerator)
    accelerator.print(note)
    # one call per step (train_step.py): eager, or with --cuda-graph replayed from one CUDA graph
    alphas_cumprod = scheduler.alphas_cumprod.to(accelerator.device)
    step_fn = make_train_step(config, accelerator, source,
                              Trainee(model, nets.unet, optimizer, ema, nets.encoders, alphas_cumprod))

    # -- the loop: nothing is read back to the host except at log and checkpoint steps ------------------------------
    loss_log = LossLog(accelerator, run / "loss.jsonl", config.log_every, source.skipped)
    bar = tqdm(range(start_step, config.max_steps), initial=start_step, total=config.max_steps, desc="train",
               disable=not progress or not accelerator.is_main_process)
    checked = start_step  # the last step known to have finite losses
    for step in bar:
        # -- step: the draws on the host; forward, L = L_ldm + ω·L_mr, backward, optimizer, EMA on the device ------
        losses = step_fn(step)
        done = step + 1
        log_now = done % config.log_every == 0 or done == config.max_steps
        stop = log_now and out_of_time(accelerator, started, config.max_seconds)
        final = done == config.max_steps or stop
        save_now = accelerator.is_main_process and (done % config.checkpoint_every == 0 or final)
        if log_now or save_now:  # the host waits for the device here only
            checked = check_finite(step_fn.finite, checked, done)
        # -- log: the losses, averaged over the processes ------------------------------------------------------------
        if log_now:
            bar.set_postfix(loss=f"{loss_log.write(done, losses)['loss']:.4f}")
        # -- checkpoint ----------------------------------------------------------------------------------------------
        if save_now:
            save_checkpoint(run, done, accelerator.unwrap_model(model), ema, optimizer,
                            {"seed": config.seed, "config": asdict(config)})
        if stop:
            accelerator.print(f"stopped at step {done} of {config.max_steps}: --max-seconds {config.max_seconds} "
                              "reached (resume continues)")
            break
    source.close()

    # -- the model we ship: the EMA weights ------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_trained(run, accelerator.unwrap_model(model), ema, nets)
    accelerator.end_training()
    return run


# -- build ---------------------------------------------------------------------------------------------------------


def fresh_accelerator(config: TrainConfig):
    """The run's Accelerator. accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision; a process that trains several runs (the recipe, a notebook, the tests) starts each from a fresh one.
    The distributed set-up (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with="tensorboard",
                              project_dir=str(Path(config.out) / "logs"), kwargs_handlers=step_handlers(config))
    check_step_device(config, accelerator)
    return accelerator


def training_index(config: TrainConfig) -> OrbitDataset | ShardIndex:
    """What ``--data`` names: shards (diffusion4d encode), else the kept training orbits of an orbit folder."""
    data = read_index(config.data) if is_shard_dir(config.data) else OrbitDataset(config.data, split="train")
    if isinstance(data, OrbitDataset) and len(data) == 0:
        raise ValueError(f"{config.data}: no kept training orbits in manifest.jsonl")
    return data


@dataclass
class Networks:
    """The run's networks, built or loaded (`build_networks`)."""

    unet: torch.nn.Module
    model: torch.nn.Module  # what the optimizer trains: the UNet, and in stage 3d the learned image encoder with it
    vae: torch.nn.Module  # frozen, on the device
    encoders: dict  # the condition encoders: "text" and/or "image" (frozen, but for a learned one in stage 3d)
    learned: bool  # the image encoder is our own (models/image_tokens.py), saved with the run


def build_networks(config: TrainConfig, data: OrbitDataset | ShardIndex, device: torch.device) -> Networks:
    """The UNet (``--init``'s, else a fresh ``--preset``), the VAE and the condition encoders, in the order that
    draws a fresh run's initial weights from ``config.seed``."""
    from diffusion4d.diffusion.components import load_or_build_unet

    kind = model_kind(config.condition)
    torch.manual_seed(config.seed)  # the initial weights of a fresh model; every later draw uses step_generator
    unet = load_or_build_unet(kind, config.preset, config.init)
    if config.camera_embedding:
        unet.add_camera_embedding()
    vae = run_vae(config, data)
    encoders = condition_encoders(config, unet.config.cross_attention_dim, device)
    learned = kind == "image" and config.image_encoder == LEARNED
    model = UNetWithImageEncoder(unet, encoders["image"]) if learned and config.stage == "3d" else unet
    vae.requires_grad_(False)
    vae.to(device)
    model.train()
    return Networks(unet, model, vae, encoders, learned)


def run_vae(config: TrainConfig, data: OrbitDataset | ShardIndex):
    """``--vae``, else the shards' (their latents are of one VAE: a ``--vae`` must be the same), else the
    ``--init`` run's, else a fresh tiny one."""
    from diffusion4d.diffusion.components import load_or_build_vae

    shard_vae = str(data.root / VAE_DIR) if isinstance(data, ShardIndex) else None
    vae = load_or_build_vae(config.vae or shard_vae, config.init)
    if shard_vae:
        check_vae(data, vae, config.vae or shard_vae)
    return vae


def condition_encoders(config: TrainConfig, embed_dim: int, device: torch.device) -> dict:
    """The encoders of the condition: a text encoder or pre-computed text states; a CLIP vision model, or our
    learned image encoder (`learned_image_encoder`) of width ``embed_dim``."""
    from diffusion4d.diffusion.components import load_encoders
    from diffusion4d.diffusion.text_states import TextStates

    kind = model_kind(config.condition)
    encoders = load_encoders(None if config.text_states else config.text_encoder,
                             None if config.image_encoder == LEARNED else config.image_encoder, device)
    if config.text_states and kind == "text":
        encoders["text"] = TextStates(config.text_states, device)
    if kind == "image" and config.image_encoder == LEARNED:
        encoders["image"] = learned_image_encoder(config, embed_dim)
        if config.stage == "4d":  # frozen: ε̄ (the 3D-aware run) and ε share one embedding at sampling time
            encoders["image"].requires_grad_(False).eval().to(device)
    return encoders


def learned_image_encoder(config: TrainConfig, embed_dim: int) -> LearnedImageEncoder:
    """The ``--init`` run's encoder; stage 3d without one: a fresh encoder (seeded like the UNet). Stage 3d trains it
    (a run initialised from a trained 3D-aware run continues training its encoder), stage 4d keeps it frozen."""
    folder = Path(config.init) / "image_encoder" if config.init else None
    if config.stage == "3d" and (folder is None or not folder.is_dir()):
        return LearnedImageEncoder(embed_dim)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: --init has no learned image encoder (train its 3D-aware stage with "
                                f"--image-encoder {LEARNED})")
    encoder = LearnedImageEncoder.from_pretrained(folder)
    if encoder.embed_dim != embed_dim:
        raise ValueError(f"{folder}: embeddings of width {encoder.embed_dim}, the UNet attends to {embed_dim}")
    return encoder


# -- data ----------------------------------------------------------------------------------------------------------


class StepBatches:
    """Which samples each micro-step of this process trains on: drawn from (seed, step, micro), then split
    across processes, so the global batch is the same on 1 or N processes and after a resume."""

    def __init__(self, dataset_size: int, config: TrainConfig, start_step: int, rank: int, world: int):
        self.n, self.config, self.start, self.rank, self.world = dataset_size, config, start_step, rank, world

    def __iter__(self):
        for step in range(self.start, self.config.max_steps):
            for micro in range(self.config.grad_accum):
                yield self.picks(step, micro)

    def picks(self, step: int, micro: int) -> list[int]:
        """This process's samples (dataset indices) of one micro-step."""
        c = self.config
        picks = torch.randint(self.n, (c.batch_size * self.world,), generator=step_generator(c.seed, step, micro,
                                                                                             "data"))
        return picks[self.rank :: self.world].tolist()

    def __len__(self) -> int:
        return (self.config.max_steps - self.start) * self.config.grad_accum


class CachedSource:
    """The training data held whole on the device (the latent cache, or every shard read): a micro-step's samples
    (StepBatches) are gathered there from their indices, with no host work, so a CUDA graph can replay it. The
    streamed counterpart is stream.StreamSource."""

    def __init__(self, latents: OrbitLatents, config: TrainConfig, rank: int, world: int, skipped: int | None = None):
        self.latents, self.batches = latents, StepBatches(len(latents), config, 0, rank, world)
        self.video_shape = latents.video.shape[1:]  # [C, T, h, w]
        self.skipped = skipped  # shards left out at the start (missing or truncated), logged with the losses

    def draw(self, step: int, micro: int) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The step inputs that name the micro-step's samples ("index" [B], on the device), and their captions."""
        picks = self.batches.picks(step, micro)
        index = host_to_device(torch.as_tensor(picks), self.latents.video.device)
        return {"index": index}, [self.latents.captions[i] for i in picks]

    def gather(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.latents.gather(inputs["index"])

    def close(self) -> None:
        pass


def training_data(config: TrainConfig, data: OrbitDataset | ShardIndex, vae, accelerator):
    """The run's samples as a data source (CachedSource or stream.StreamSource), and a line saying where from.
    Orbits: the latent cache (the main process encodes or reads it first, the others then read it). Shards: streamed,
    those missing or truncated left out with a report, or with ``in_memory`` all read onto the device."""
    from diffusion4d.diffusion.shards import ShardError, check_shards, load_shard
    from diffusion4d.diffusion.stream import ShardStream, StreamSource

    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if isinstance(data, OrbitDataset):
        with accelerator.main_process_first():
            cache = Path(config.latent_cache) if config.latent_cache else Path(config.out) / CACHE_NAME
            latents, reused = load_or_encode(cache, vae, data, device, config.data_workers,
                                             write=accelerator.is_main_process)
        return CachedSource(latents, config, rank, world), \
            f"latents of {len(latents)} orbits {'read from' if reused else 'encoded into'} {cache}"
    entries, problems = check_shards(data)
    for line in problems:
        accelerator.print(f"shard left out: {line}")
    if not entries:
        raise ShardError(f"{data.path}: none of its {len(data.shards)} shards is readable")
    samples = sum(len(e["orbits"]) for e in entries)
    if config.in_memory:
        latents = OrbitLatents.cat([load_shard(data, e) for e in entries]).to(device)
        return CachedSource(latents, config, rank, world, len(problems)), \
            f"{samples} samples of {len(entries)} shards read from {data.root} onto the device " \
            f"({len(problems)} left out)"
    stream = ShardStream(data, entries, config, rank, world, pin=device.type == "cuda")
    lanes = stream.order.lanes
    return StreamSource(stream, data.video_shape, device, len(problems)), \
        f"streaming {samples} samples from {len(entries)} shards in {data.root} ({len(problems)} left out; " \
        f"{lanes} lanes, {lanes // world} per process, windows of {config.stream_window} shards)"


# -- log and checkpoint --------------------------------------------------------------------------------------------


def check_finite(finite: torch.Tensor, checked: int, done: int) -> int:
    """Raise if a loss of steps ``checked`` + 1 … ``done`` was not finite (``finite``: the step's device flag; the
    host waits for the device here). Returns ``done``, now checked."""
    if not finite.item():
        raise FloatingPointError(f"a non-finite loss in steps {checked + 1}..{done}; the last checkpoint "
                                 f"(≤ step {checked}) is intact — lower --lr")
    return done


class LossLog:
    """The rows of ``loss.jsonl`` (written by the main process) and of the trackers: each log step's losses, averaged
    over the processes (each saw its own share of the batch), the seconds per step since the last row, and with
    shards the number left out at the start."""

    def __init__(self, accelerator, path: Path, log_every: int, skipped: int | None):
        self.accelerator, self.path, self.log_every, self.skipped = accelerator, path, log_every, skipped
        self.last = time.perf_counter()

    def write(self, step: int, losses: torch.Tensor) -> dict:
        values = self.accelerator.reduce(losses, reduction="mean").tolist()
        logs = dict(zip(("loss", "l_ldm", "l_mr"), values))
        if self.skipped is not None:
            logs["skipped_shards"] = self.skipped
        now = time.perf_counter()
        logs["seconds_per_step"] = (now - self.last) / (step % self.log_every or self.log_every)
        self.last = now
        self.accelerator.log(logs, step=step)
        if self.accelerator.is_main_process:
            append_jsonl(self.path, {"step": step, **logs})
        return logs


def out_of_time(accelerator, start: float, max_seconds: float | None) -> bool:
    """Whether ``max_seconds`` have passed since ``start`` on any process (every process gets the same answer)."""
    if not max_seconds:
        return False
    late = torch.tensor([float(time.perf_counter() - start > max_seconds)], device=accelerator.device)
    if accelerator.num_processes > 1:
        late = accelerator.reduce(late, reduction="sum")
    return bool(late.item() > 0)


def write_run_files(run: Path, config: TrainConfig, nets: Networks, scheduler, data: OrbitDataset | ShardIndex,
                    num_processes: int) -> None:
    """What sampling needs besides the weights: the resolved config, VAE, scheduler, encoders, orbit size."""
    frame_shape = data.frame_shape if isinstance(data, ShardIndex) else data[0]["video"].shape  # [T, 3, H, W]
    run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run / "train_config.json", asdict(config))
    nets.vae.save_pretrained(run / "vae")
    scheduler.save_pretrained(run / "scheduler")
    write_json_atomic(run / "run.json", {
        "condition": config.condition, "stage": config.stage,
        # trained from pre-computed states: sampling runs the encoder that made them
        "text_encoder": config.text_encoder or getattr(nets.encoders.get("text"), "text_encoder", None),
        "image_encoder": config.image_encoder,
        "num_frames": int(frame_shape[0]), "image_size": int(frame_shape[-1]), "num_processes": num_processes,
    })


def save_trained(run: Path, trained: torch.nn.Module, ema: EMA, nets: Networks) -> None:
    """The model we ship: the EMA weights copied into ``trained`` (the unwrapped model), the UNet saved in
    ``RUN/unet``; a learned image encoder in ``RUN/image_encoder`` (stage 3d: its EMA weights; stage 4d: the
    3D-aware run's, unchanged)."""
    ema.copy_to(trained)
    nets.unet.save_pretrained(run / "unet")
    if nets.learned:
        nets.encoders["image"].save_pretrained(run / "image_encoder")


# -- the noise schedule -------------------------------------------------------------------------------------------


def given_schedule(config: TrainConfig) -> dict:
    """The schedule fields of ``config`` (None: not given, so the base's or our default)."""
    return {key: getattr(config, key) for key in DEFAULT_SCHEDULE}


def run_schedule(config: TrainConfig, resume: bool) -> dict:
    """The noise schedule this run trains with (schedule.py). A resumed run keeps the one it saved: its checkpoint
    was trained under it, whatever its base's says now. A fresh run takes its --init base's scheduler config (a
    diffusers pipeline, a bundle model, one of our runs), else our defaults. Fields given in ``config`` must agree
    with either."""
    run = Path(config.out)
    resuming = resume and latest_checkpoint(run) is not None
    if not resuming and config.init and Path(config.init).is_file():  # a VideoMV checkpoint: no config beside it
        from diffusion4d.models.videomv import scheduler_config

        kind = "text" if config.condition == "text" else "image"
        return resolve_schedule(given_schedule(config), schedule_of(scheduler_config(kind), config.init), config.init)
    source = find_scheduler_config(run if resuming else config.init)
    base = read_schedule(source) if source is not None else None
    return resolve_schedule(given_schedule(config), base, source)


def noise_scheduler(config: TrainConfig):
    """The DDIM scheduler of ``config``'s schedule fields alone, without a base: our defaults where unset
    (Stable Diffusion's betas 0.00085 … 0.012)."""
    return build_scheduler(resolve_schedule(given_schedule(config)))
