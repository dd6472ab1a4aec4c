"""A faster way to run the sampler's per-step denoiser calls on a CUDA GPU (opt-in; see ``SamplerSpeedups``).

The plain loop in ``sampling.py`` is the reference: per DDIM step it launches, from Python, one call of the 4D-aware
model at batch 2B (conditional + unconditional branch) and one of the frozen 3D-aware model ε̄ at batch B, one
after the other. For the full-size UNets that loop is bound by the host: a step launches ~5,700 kernels, and on
the lent H100 it took 247 ms of wall time for 128 ms of GPU work. ``GuidedDenoiser`` here computes the same ε̂ of
Eq. (3) with:

* CUDA graphs: the step's kernels (both model calls and the guidance) are captured once into a graph that reads
  static input buffers (z_t, t and the conditions), and each step copies its z_t and t in and replays the graph:
  one launch instead of thousands, so the GPU never waits for Python (H100: 128 ms per step);
* a second CUDA stream for ε̄: its batch-B call runs concurrently with the batch-2B call and fills units that the
  latter leaves idle (H100: 115 ms per step).

Neither needs compilation. Warm-up + capture cost about 0.5 s per ``sample_latents`` call on the H100 (the
benchmark reports it). ``GuidedDenoiser`` is built from the functions of `guided_step`, and its reference twin,
`guided_step.PlainGuidedDenoiser`, makes the same calls op by op; ``GuidedDenoiser._forward`` is the eager twin of
its graph replay (``_replay``) on the same buffers.

A third, opt-in speed-up does compile: ``compile_blocks`` hands the UNet's repeated blocks (ResNet blocks, temporal
convolutions, spatial and temporal transformers, resamplers) to ``torch.compile`` one block at a time ("regional"
compilation), each through ``nn.Module.compile`` on the block object itself. Inductor fuses what eager mode runs as
separate kernels (GroupNorm statistics, SiLU, residual adds, layout transposes around the convolutions); blocks of
one shape share one compiled graph, and the artefacts are kept in a persistent cache (``TORCHINDUCTOR_CACHE_DIR``,
default ``~/.cache/diffusion4d/inductor``), so only the first sample on a machine pays the full compile time. The
compiled kernels are then captured in the step's CUDA graph like the eager ones. Nothing of diffusers is patched:
the temporal convolutions become `MatmulTemporalConv` modules, set on their parent blocks of our model instance by
attribute assignment, and dynamo's recompile limits are raised only while compiled blocks run
(`raised_recompile_limits`). Numerics are those of the plain path: the same kernels in the same order per branch
(the GPU test checks it; on the full model the output was bitwise equal).

Requirements: a CUDA device, and a denoiser whose forward makes no host synchronisation once its inputs are
checked. Our UNets check their conditions with host-synchronising ``_check_condition``: the first (eager, warm-up)
call runs it on the very tensors that the graph later reads, and it is skipped while capturing. Any other
denoiser that synchronises cannot be captured; it then falls back to the eager two-stream path with a warning.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from diffusion4d.diffusion.guidance import three_d_aware_cfg
from diffusion4d.diffusion.guided_step import (
    GuidanceBranches,
    conditional_and_unconditional,
    reused_guidance_prediction,
    three_d_aware_prediction,
)
from diffusion4d.models.checks import condition_checks_skipped
from diffusion4d.models.conditions import Condition


@dataclass(frozen=True)
class SamplerSpeedups:
    """What ``sample_latents(..., speedups=...)`` may use on a CUDA device (ignored on the CPU).

    Attributes:
        cuda_graphs: capture each step's model calls and guidance in a CUDA graph and replay it.
        concurrent_base: run the 3D-aware model ε̄ on a second CUDA stream, concurrently with the batch-2B call.
        warmup_calls: eager calls before capturing (the first also validates the conditions); 1 is enough for
            cuDNN/cuBLAS to pick their kernels.
        compile_blocks: compile the models' UNet blocks first (`compile_blocks`); the first sample on a machine then
            pays the compile time (minutes for the full-size UNets), later processes read the persistent cache.
    """

    cuda_graphs: bool = True
    concurrent_base: bool = True
    warmup_calls: int = 1
    compile_blocks: bool = False


def default_compile_cache() -> str:
    """Where compiled kernels persist between processes: $TORCHINDUCTOR_CACHE_DIR, else
    ~/.cache/diffusion4d/inductor."""
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "diffusion4d", "inductor")


def _group_norm_over_frames(h: torch.Tensor, norm: torch.nn.GroupNorm) -> torch.Tensor:
    """GroupNorm of a [B, C, T, h, w] video, computed on its frames-first layout h [B, T, C, hw] (no transpose)."""
    B, T, C, P = h.shape
    G = norm.num_groups
    x = h.float().view(B, T, G, C // G, P)
    var, mean = torch.var_mean(x, dim=(1, 3, 4), correction=0, keepdim=True)  # per (sample, group), as GroupNorm
    x = ((x - mean) * torch.rsqrt(var + norm.eps)).view(B, T, C, P)
    return (x * norm.weight.float().view(1, 1, C, 1) + norm.bias.float().view(1, 1, C, 1)).to(h.dtype)


def _conv_over_time(h: torch.Tensor, conv: torch.nn.Conv3d) -> torch.Tensor:
    """The (3, 1, 1) temporal convolution (padding 1) on h [B, T, C, hw] as one matrix product with K = 3C.

    out[t] = Σ_k W[:, :, k] · h[t + k − 1] (zero outside the clip): the three shifted copies are stacked on channels,
    so the product reads [C_out, 3C] × [3C, hw] per frame and the video never leaves its frames-first layout.
    """
    C_out, C = conv.weight.shape[:2]
    padded = torch.nn.functional.pad(h, (0, 0, 0, 0, 1, 1))  # zero frames before the first and after the last
    stacked = torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=2)  # [B, T, 3C, hw]
    weight = conv.weight[..., 0, 0].permute(0, 2, 1).reshape(C_out, 3 * C)  # [o, k·C + c] = W[o, c, k]
    return torch.matmul(weight, stacked) + conv.bias.view(1, 1, C_out, 1)


def temporal_conv_as_matmul(layer: torch.nn.Module, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
    """diffusers' ``TemporalConvLayer.forward`` without its two 5-D transposes and cuDNN Conv3d.

    hidden_states [B·T, C, h, w] → the same shape. The eager layer permutes to [B, C, T, h, w] and runs four
    GroupNorm → SiLU (→ Dropout) → Conv3d(3, 1, 1) stages; in bf16 on the H100 those convolutions and the layout
    changes around them were the largest item of a sampling step (22 ms of ~115). Here the stages run frames-first:
    GroupNorm statistics over (T, channels of the group, pixels), and each convolution as one matrix product. The
    stages' own Dropout modules run between (identity in eval mode), so it serves training as well.
    """
    BT, C, H, W = hidden_states.shape
    identity = hidden_states.view(BT // num_frames, num_frames, C, H * W)
    h = identity
    for stage in (layer.conv1, layer.conv2, layer.conv3, layer.conv4):
        norm, conv = stage[0], stage[-1]
        h = torch.nn.functional.silu(_group_norm_over_frames(h, norm))
        for dropout in stage[2:-1]:  # nn.Dropout in stages 2-4
            h = dropout(h)
        h = _conv_over_time(h, conv)
    return (identity + h).view(BT, C, H, W)


class MatmulTemporalConv(torch.nn.Module):
    """A diffusers ``TemporalConvLayer`` computed by `temporal_conv_as_matmul`.

    It adopts the layer's four stages: the same modules under the same names, so the parameters, state-dict keys
    and checkpoints are those of the layer it replaces. Built by `use_matmul_temporal_convs`.
    """

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.in_dim, self.out_dim = layer.in_dim, layer.out_dim
        self.conv1, self.conv2, self.conv3, self.conv4 = layer.conv1, layer.conv2, layer.conv3, layer.conv4
        self.train(layer.training)

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        return temporal_conv_as_matmul(self, hidden_states, num_frames)


def use_matmul_temporal_convs(model: torch.nn.Module, eval_only: bool = True) -> int:
    """Replace ``model``'s diffusers ``TemporalConvLayer`` modules by `MatmulTemporalConv`; returns how many.

    Each is set on its parent block by plain attribute assignment, on this model instance only (diffusers' class and
    every other model keep its forward). ``eval_only``: leave layers in training mode as they are (the sampler's
    choice; `temporal_conv_as_matmul` is valid in training too, as the tests check).
    """
    from diffusers.models.resnet import TemporalConvLayer

    layers = [(name, module) for name, module in model.named_modules()
              if name and isinstance(module, TemporalConvLayer) and not (eval_only and module.training)]
    for name, layer in layers:  # collected first: the module tree is not changed while it is walked
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, MatmulTemporalConv(layer))
    return len(layers)


def _region_types() -> tuple[type, ...]:
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
    from diffusers.models.upsampling import Upsample2D

    return (ResnetBlock2D, TemporalConvLayer, MatmulTemporalConv, Transformer2DModel, TransformerTemporalModel,
            Downsample2D, Upsample2D)


#: dynamo's limits on the compiled versions of one code object (the first two and the last two are one setting
#: under its old and new names; a torch version has one pair or both)
_RECOMPILE_LIMITS = ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                     "accumulated_cache_size_limit")


@contextlib.contextmanager
def raised_recompile_limits(at_least: int = 256) -> Iterator[None]:
    """torch._dynamo's recompile limits raised to at least ``at_least`` inside the block, restored on leaving it.

    Why raised: many compiled blocks run the same Python code (every block of a type shares its forward), and each
    block and input shape adds one compiled version of that code; past the default limit of 8 dynamo stops compiling
    it and runs the remaining blocks eagerly, without an error. Why scoped: the limits are process-wide settings, and
    only the calls that compile our blocks need them. Versions compiled inside the block still run outside it.
    """
    import torch._dynamo

    config = torch._dynamo.config
    names = [name for name in _RECOMPILE_LIMITS if hasattr(config, name)]
    with config.patch({name: max(getattr(config, name), at_least) for name in names}):
        yield


def recompile_limits_for(*models: object) -> contextlib.AbstractContextManager:
    """`raised_recompile_limits` where one of ``models`` (None entries allowed) has blocks compiled by
    `compile_blocks`; else a context that changes nothing."""
    if any(getattr(model, "_d4d_blocks_compiled", 0) for model in models if model is not None):
        return raised_recompile_limits()
    return contextlib.nullcontext()


def compile_blocks(model: torch.nn.Module, cache_dir: str | None = None) -> int:
    """Compile ``model``'s repeated UNet blocks in place with ``module.compile`` (static shapes); returns how many.

    Compilation itself is lazy: it happens on the first call of each block at each input shape (the sampler's warm-up
    call), and is read back from ``cache_dir`` (see `default_compile_cache`) when an earlier process compiled the same
    graphs. Run the model inside `recompile_limits_for(model)` (``sample_latents`` does), or its later blocks may stay
    eager. Calling it again on the same model does nothing. Outputs match the eager model up to floating-point
    reassociation in the fused kernels (not bitwise). The temporal convolutions of models in eval mode also become
    `MatmulTemporalConv` (`use_matmul_temporal_convs`), the same function in a layout that needs no transposes.
    """
    if getattr(model, "_d4d_blocks_compiled", 0):
        return 0
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir or default_compile_cache())
    use_matmul_temporal_convs(model, eval_only=True)
    regions = _region_types()
    count = 0
    for module in model.modules():
        if isinstance(module, regions):
            module.compile(dynamic=False)
            count += 1
    model._d4d_blocks_compiled = count  # read by recompile_limits_for, and by OrbitPipeline before compiling
    return count


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Let cuDNN time its convolution algorithms while warming up and capturing (the graph keeps the winners).

    Only with ``compile_blocks``: the plain CUDA-graph path keeps cuDNN's default choices, which is what makes it
    bitwise equal to the plain loop."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _private_copy(cond: Condition | None) -> Condition | None:
    return None if cond is None else Condition(**{k: v.clone() for k, v in cond.tensors().items()})


class GuidedDenoiser:
    """ε̂ of one sampling step from a CUDA graph: ``eps = GuidedDenoiser(...)(z_in, t, full)`` (float32).

    The fast twin of `guided_step.PlainGuidedDenoiser`, with the same call: ``z_in`` [B, C, T, h, w] is the
    model-dtype input of the step and ``t`` its integer timestep; ``full`` steps evaluate Eq. (3), the others
    (``branches`` with ``cond_only``) run the model once at batch B and add the guidance term kept from the last
    full call. Each kind of call has its own graph. The returned tensor is a buffer of this object when a graph is
    in use: read it (the scheduler step does) before the next call.
    """

    def __init__(self, branches: GuidanceBranches, sample_shape: tuple[int, ...], *, dtype: torch.dtype,
                 device: torch.device | str, speedups: SamplerSpeedups):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"GuidedDenoiser needs a CUDA device; got {device}")
        self.speedups = speedups
        if speedups.compile_blocks:
            for m in (branches.model, branches.base_model if branches.w2 != 0 else None):
                if isinstance(m, torch.nn.Module):
                    compile_blocks(m)
        # Private copies: the graph reads these addresses, whatever the caller later does with its tensors.
        self.branches = replace(branches, cond_in=_private_copy(branches.cond_in),
                                base_in=_private_copy(branches.base_in), cond_only=_private_copy(branches.cond_only))
        self.z = torch.empty(sample_shape, device=device, dtype=dtype)
        self.t = torch.empty(sample_shape[0], device=device, dtype=torch.long)
        # ε̂ − ε_θ(z, y, m) of the last full call, read by the reusing calls (a buffer outside both graphs' pools)
        self.guidance = torch.zeros(sample_shape, device=device) if branches.reuses_guidance else None
        self.side = torch.cuda.Stream(device) if speedups.concurrent_base and branches.w2 != 0 else None
        self.graph: dict[bool, torch.cuda.CUDAGraph | None] = {}  # full: its graph (None: capture failed)
        self.out: dict[bool, torch.Tensor] = {}
        self.capture_seconds = 0.0  # one-off time of warm-ups + captures (host wall clock, synchronised)
        self._capturing = False

    def _three_d_aware_on_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`guided_step.three_d_aware_prediction` (Eq. 3) on the static buffers; with a side stream, ε̄ is launched
        on it first, so that it overlaps the batch-2B call."""
        b, z, t = self.branches, self.z, self.t
        if self.side is None:
            return three_d_aware_prediction(b, z, t)
        main = torch.cuda.current_stream()
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            eps_3d = b.base_model(z, t, b.base_in).float()
        eps_cond, eps_uncond = conditional_and_unconditional(b, z, t)
        main.wait_stream(self.side)
        if not self._capturing:  # made on the side stream, read on the main one (capture keeps its own pool)
            eps_3d.record_stream(main)
        return three_d_aware_cfg(eps_cond, eps_uncond, eps_3d, b.w1, b.w2), eps_cond

    def _forward(self, full: bool = True) -> torch.Tensor:
        """The eager twin of `_replay`, on the same buffers: Eq. (3), keeping its guidance term where it is reused;
        or, not ``full``, the batch-B call plus the kept term."""
        if not full:
            return reused_guidance_prediction(self.branches, self.z, self.t, self.guidance)
        eps, eps_cond = self._three_d_aware_on_buffers()
        if self.guidance is not None:
            torch.sub(eps, eps_cond, out=self.guidance)
        return eps

    def _warm_up(self, full: bool) -> None:
        warm = torch.cuda.Stream(self.z.device)  # warm-up off the default stream, as torch.cuda.graph advises
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm), _cudnn_benchmark(self.speedups.compile_blocks):
            for _ in range(max(1, self.speedups.warmup_calls)):
                self._forward(full)
        torch.cuda.current_stream().wait_stream(warm)
        torch.cuda.synchronize()

    def _record(self, full: bool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor] | None:
        """`_forward(full)` captured in a CUDA graph, with its output buffer; None (and a warning) where the denoiser
        cannot be captured (e.g. it synchronises with the host)."""
        graph = torch.cuda.CUDAGraph()
        models = (self.branches.model, self.branches.base_model)
        rng = torch.cuda.default_generators[self.z.device.index or 0]
        rng_state = rng.clone_state()  # an aborted capture leaves the generator's state in capture mode
        self._capturing = True
        try:
            with (condition_checks_skipped(*models), _cudnn_benchmark(self.speedups.compile_blocks),
                  torch.cuda.graph(graph)):
                out = self._forward(full)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager path
            warnings.warn(
                f"could not capture the denoiser in a CUDA graph ({type(err).__name__}: {err}); "
                "sampling continues without CUDA graphs",
                RuntimeWarning,
                stacklevel=4,
            )
            torch.cuda.synchronize()
            # without this, the process's next CUDA random draw raises "Offset increment outside graph capture
            # encountered unexpectedly" (seen on the H200 after this fallback)
            rng.graphsafe_set_state(rng_state)
            return None
        finally:
            self._capturing = False
        return graph, out

    def _capture(self, full: bool) -> None:
        """Warm up, then record the graph of this kind of call (None where that failed), timing both."""
        torch.cuda.synchronize()
        start = time.perf_counter()
        self._warm_up(full)
        recorded = self._record(full)
        self.graph[full] = None if recorded is None else recorded[0]
        if recorded is not None:
            self.out[full] = recorded[1]
        torch.cuda.synchronize()
        self.capture_seconds += time.perf_counter() - start

    def _replay(self, full: bool) -> torch.Tensor:
        """The graph twin of `_forward(full)`: the captured kernels rerun on the buffers' current values; returns
        the graph's output buffer."""
        self.graph[full].replay()
        return self.out[full]

    def __call__(self, z_in: torch.Tensor, t: int, full: bool = True) -> torch.Tensor:
        if not full and not self.branches.reuses_guidance:
            raise ValueError("GuidedDenoiser: a call with full=False needs `cond_only`")
        self.z.copy_(z_in)
        self.t.fill_(int(t))
        if self.speedups.cuda_graphs and full not in self.graph:
            self._capture(full)  # tried once per kind of call (a failed capture is not retried)
        if self.graph.get(full) is None:
            return self._forward(full)
        return self._replay(full)
