"""Coarse-to-fine 4D construction (paper Sec. 3.4): orbit V (+ static orbit V̄) → canonical Gaussians + deformation.

* Coarse stage: canonical Gaussians, no deformation, on V̄ ∪ V — the paper merges the static orbit (all at τ0) with
  the dynamic one. Gaussians start on the visual hull carved from V̄'s masks.
* Fine stage: on V only, each view i at τ_i = i/(T−1), through a deformation field (4DGS or SC-GS; SC-GS's control
  points are farthest-point sampled from the coarse Gaussians at the stage change).
* Loss (Eq. of Sec. 3.4): L1 + λ_lpips LPIPS when a perceptual net is given (the paper's; losses.
  perceptual_from_files), else (1 − 0.2) L1 + 0.2 D-SSIM; + λ_depth edge-aware depth smoothness (+ the field's
  regularisers: plane TV / temporal smoothness, or ARAP) + λ_α |α − α̂| where the images have alpha.

Checkpoints (every ``checkpoint_every`` iterations, atomically) hold everything the loop depends on — Gaussians,
field, both optimizers' moments, the gradient statistics of densification, the iteration and the RNG — so that
``resume=True`` continues bit for bit on the CPU.

The steady-state step never waits for the device: losses stay tensors, and every ``guard_every`` iterations (and
before each checkpoint) one host read checks them and the parameters for NaN/inf, refreshes the progress bar and
takes an on-device snapshot — the state a divergence falls back to.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from diffusion4d.data import layout
from diffusion4d.reconstruction import losses
from diffusion4d.reconstruction.asset import Asset4D
from diffusion4d.reconstruction.checkpoint import CHECKPOINT, load_checkpoint, snapshot, write_snapshot
from diffusion4d.reconstruction.deformation import FIELDS, drop_removed_fields
from diffusion4d.reconstruction.densify import DensifyConfig, GradientStats, densify_and_prune, reset_opacity
from diffusion4d.reconstruction.gaussians import Gaussians, sh0_to_rgb
from diffusion4d.reconstruction.rasterize import project_points, rasterize
from diffusion4d.reconstruction.views import TrainingViews, Views, has_orbit, random_points, read_views, visual_hull


@dataclass(frozen=True)
class FitConfig:
    coarse_iters: int = 600
    fine_iters: int = 400
    size: int = 128  # training resolution (images are resampled to size²)
    backend: str = "auto"  # rasterizer: auto (gsplat on CUDA) | torch | gsplat
    views_per_step: int = 1
    num_points: int = 4000  # initial Gaussians (visual hull)
    # coarse stage on the paper's V̄ ∪ V (False: V̄ + V's τ0 view): 0.3–0.4 dB better without anchor views in the fine
    # stage (BENCHMARKS.md, "Host overheads of the fit removed"); the anchored presets turn it off ("Session 8")
    coarse_dynamic: bool = True
    lr_means: float = 1.6e-3  # decays ×0.01 over each stage; the fine stage starts at lr_means·fine_means_scale
    fine_means_scale: float = 0.1
    lr_quats: float = 1e-3
    lr_scales: float = 5e-3
    lr_opacity: float = 5e-2
    lr_sh0: float = 5e-3
    lr_field: float = 1e-3  # decays ×0.1 over the fine stage
    # Each fine step also renders this many views of V̄ (at τ0, through the field), so that the static orbit keeps
    # holding the τ0 state from every side while V's single views pull on the motion. 0: the fine stage sees V only.
    fine_static_views: int = 0
    # Fine stage: weight of losses.silhouette_chamfer between the projected Gaussian centres (a random subset of
    # silhouette_gaussians per step) and each view's object pixels: a gradient for parts that moved off their
    # target entirely, where the photometric loss has none. 0: off.
    silhouette_weight: float = 0.0
    silhouette_gaussians: int = 4096
    dssim_weight: float = 0.2
    lpips_weight: float = 0.2  # used only when a perceptual network is given (it then replaces D-SSIM)
    depth_weight: float = 0.05
    alpha_weight: float = 0.1
    densify: DensifyConfig = DensifyConfig()
    field: dict = field(default_factory=dict)  # constructor overrides of the deformation field
    checkpoint_every: int = 200
    seed: int = 0

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> FitConfig:
        d = drop_removed_fields(d, REMOVED_FIELDS, "FitConfig")
        return cls(**{**d, "densify": DensifyConfig(**d["densify"])})


#: fields of removed experiments, still in configs saved before their removal: read, warned about and ignored
REMOVED_FIELDS = ("track",)


def _densify_schedule(coarse: int) -> dict:
    return dict(start=min(100, coarse // 10), stop=int(coarse * 0.6), every=max(coarse // 12, 25))


def _preset(coarse: int, fine: int, size: int, backend: str, **kw) -> FitConfig:
    densify = DensifyConfig(**_densify_schedule(coarse), **kw.pop("densify", {}))
    return FitConfig(coarse_iters=coarse, fine_iters=fine, size=size, backend=backend, densify=densify, **kw)


def with_iterations(config: FitConfig, coarse: int, fine: int) -> FitConfig:
    """The config with other stage lengths, the densification schedule rescaled as the presets scale it."""
    densify = dataclasses.replace(config.densify, **_densify_schedule(coarse))
    return dataclasses.replace(config, coarse_iters=coarse, fine_iters=fine, densify=densify)


#: the field when none is named (fit, `diffusion4d reconstruct`, `generate`): SC-GS beat 4DGS wherever both were
#: measured, and follows articulated motion (BENCHMARKS.md, "Quality experiments (session 3, CPU)", "Session 9")
DEFAULT_METHOD = "scgs"

#: preset → method → config. gpu: the paper's schedules; fast: the issue's ≤ 7.5 s per asset on an H100 with gsplat;
#: cpu: ≤ 2 minutes at 128² on a 2-core CPU. Measurements: BENCHMARKS.md, "4D construction (issue 5)", sessions named.
PRESETS: dict[str, dict[str, FitConfig]] = {
    # the paper's schedules (4DGS 5k + 2k, SC-GS 16k + 4k) for its recipe; `fast` scored better ("Session 11")
    "gpu": {"4dgs": _preset(5000, 2000, 256, "auto", num_points=20000, checkpoint_every=1000),
            "scgs": _preset(16000, 4000, 256, "auto", num_points=20000, checkpoint_every=2000)},
    "fast": {
        # host-bound steps: 16 views per step, few steps ("Fit with batched views"); SC-GS's recipe below gave 4DGS
        # nothing ("Session 9")
        "4dgs": _preset(200, 120, 256, "auto", num_points=15000, views_per_step=16, checkpoint_every=0),
        # a clean τ0 canonical held by 4 V̄ anchor views, 3 time octaves (6 fit each moment's one view alone), the
        # silhouette chamfer, 240 fine steps: +0.8 dB over the speed-first schedule ("Session 8", "Session 9")
        "scgs": _preset(200, 240, 256, "auto", num_points=15000, views_per_step=16, checkpoint_every=0,
                        coarse_dynamic=False, fine_static_views=4, silhouette_weight=1.0,
                        field={"time_frequencies": 3})},
    "cpu": {
        # not remeasured with SC-GS's CPU recipe below ("Session 10")
        "4dgs": _preset(400, 250, 128, "torch", num_points=2000, checkpoint_every=200,
                        densify={"max_gaussians": 5000}),
        # the fast recipe at CPU scale: the second view per step is what pays; no anchor view, as it cost too much
        # of image → 4D's 120 s ("Session 10")
        "scgs": _preset(150, 200, 128, "torch", num_points=2000, checkpoint_every=200,
                        densify={"max_gaussians": 5000}, coarse_dynamic=False, views_per_step=2,
                        silhouette_weight=1.0, field={"time_frequencies": 3})},
}


MAX_LOG_SCALE = math.log(0.05)


class FitDiverged(RuntimeError):
    """The loss went NaN/inf; the message names the iteration and where the last good state was saved."""


# -- data --------------------------------------------------------------------------------------------------------


def load_orbits(orbit_dir: Path, static_dir: Path | None, size: int, log=print) -> tuple[Views, Views | None]:
    """(V, V̄ or None). ``static_dir`` None: the static orbit beside V in ``orbit_dir``, if there is one."""
    orbit_dir = Path(orbit_dir)
    dynamic = read_views(orbit_dir, layout.DYNAMIC, size)
    folder = Path(static_dir) if static_dir is not None else orbit_dir
    if has_orbit(folder, layout.STATIC):
        static = read_views(folder, layout.STATIC, size)
        if len(static) != len(dynamic):
            raise ValueError(f"{folder}: static orbit has {len(static)} views, the dynamic one {len(dynamic)}")
        return dynamic, static
    if static_dir is not None:
        raise FileNotFoundError(f"{layout.frame_path(folder, layout.STATIC, 0)}: no static orbit there")
    log(f"note: {orbit_dir} has no static orbit (multi_static_frame*.png): the coarse stage uses V only")
    return dynamic, None


def coarse_views(dynamic: Views, static: Views | None, include_dynamic: bool) -> Views:
    """V̄ ∪ V (the paper), or V̄ plus V's τ0 view; V alone without a static orbit."""
    if static is None:
        return dynamic
    return Views.cat([static, dynamic if include_dynamic else dynamic.subset([0])])


def initial_gaussians(dynamic: Views, static: Views | None, count: int, generator: torch.Generator) -> Gaussians:
    """Gaussians on the visual hull of V̄ (exact: one instant) or, without V̄, of 80 % of V's masks."""
    hull_views, fraction = (static, 1.0) if static is not None else (dynamic, 0.8)
    points, colours = visual_hull(hull_views, count, generator, fraction)
    if len(points) < min(count, 64):  # masks that carve (almost) everything away: fall back to the cube
        points, colours = random_points(count, generator)
    return Gaussians.init_from_points(points, colours, opacity=0.1)


# -- one render ------------------------------------------------------------------------------------------------


def render_views(g: dict[str, torch.Tensor], views: TrainingViews, backend: str):
    """Render Gaussian tensors (means, quats, log_scales, opacity_logits, sh0) into the V views: means, quats and
    log_scales [N, ·] (one time, every view) or [V, N, ·] (view v's own deformed copy), the others [N, ·].

    No finiteness check in the rasterizer (it would sync every call): the fit's guard checks every few steps."""
    W, H = views.size
    # Gaussians wider than 0.05 (σ, unit cube) are not needed and make the tiled rasterizer 5-15x slower
    scales = g["log_scales"].clamp(max=MAX_LOG_SCALE).exp()
    return rasterize(g["means"], g["quats"], scales, g["opacity_logits"].sigmoid(), sh0_to_rgb(g["sh0"]),
                     views.viewmats, views.Ks, W, H, backend=backend, check_finite=False)


def view_loss(out, views: TrainingViews, config: FitConfig, perceptual: Callable | None) -> torch.Tensor:
    pred = out.rgb.permute(0, 3, 1, 2)
    loss = losses.photometric(pred, views.rgb, config.dssim_weight, perceptual, config.lpips_weight)
    loss = loss + config.depth_weight * losses.edge_aware_smoothness(out.depth.permute(0, 3, 1, 2), views.edges)
    if views.has_alpha and config.alpha_weight > 0:
        loss = loss + config.alpha_weight * losses.l1(out.alpha.permute(0, 3, 1, 2), views.alpha)
    return loss


def _psnr(out, views: TrainingViews) -> torch.Tensor:
    mse = (out.rgb.detach().permute(0, 3, 1, 2) - views.rgb).pow(2).mean().clamp_min(1e-10)
    return -10 * torch.log10(mse)


# -- the loop ----------------------------------------------------------------------------------------------------


class _State:
    """Everything a checkpoint holds: parameters, field, optimizers, densification statistics, iteration, RNG."""

    def __init__(self, gaussians: Gaussians, field: nn.Module, config: FitConfig):
        self.params = nn.ParameterDict({k: nn.Parameter(v.detach().clone()) for k, v in
                                        gaussians.parameters().items()})
        self.field = field
        lrs = {"means": config.lr_means, "quats": config.lr_quats, "log_scales": config.lr_scales,
               "opacity_logits": config.lr_opacity, "sh0": config.lr_sh0}
        # on CUDA one fused kernel per optimizer step instead of a dozen foreach launches (and step counts on the
        # device: the foreach path reads CPU step counts)
        fused = self.params["means"].is_cuda
        self.opt_gauss = torch.optim.Adam([{"params": [self.params[k]], "lr": lr, "name": k}
                                           for k, lr in lrs.items()], eps=1e-15, fused=fused)
        self.opt_field = torch.optim.Adam(field.parameters(), lr=config.lr_field, fused=fused)
        self.stats = GradientStats(len(self.params["means"]), self.params["means"].device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.iteration = 0

    def gaussians(self) -> Gaussians:
        return Gaussians(**{k: v.detach().clone() for k, v in self.params.items()})

    def finite_flags(self) -> torch.Tensor:
        """[P] bool on the device, one per parameter tensor: all its values finite (no host sync here)."""
        tensors = list(self.params.values()) + list(self.field.parameters())
        return torch.stack([torch.isfinite(t).all() for t in tensors])


def _set_learning_rates(state: _State, config: FitConfig) -> None:
    """Exponential decay of the means' lr over each stage (3DGS), and of the field's lr over the fine stage."""
    it = state.iteration
    if it < config.coarse_iters:
        frac, base = it / max(config.coarse_iters, 1), config.lr_means
    else:
        frac, base = (it - config.coarse_iters) / max(config.fine_iters, 1), config.lr_means * config.fine_means_scale
        for group in state.opt_field.param_groups:
            group["lr"] = config.lr_field * 0.1**frac
    for group in state.opt_gauss.param_groups:
        if group["name"] == "means":
            group["lr"] = base * 0.01**frac


def _pick(state: _State, pool_size: int, config: FitConfig, anchors: list[int] | None) -> list[int]:
    """The step's views: ``views_per_step`` uniform over the pool's views before the ``anchors`` (V̄'s indices at
    the end of the fine stage's pool, if given), then ``fine_static_views`` uniform over the anchors."""
    others = pool_size - len(anchors or [])
    pick = torch.randint(others, (config.views_per_step,), generator=state.generator).tolist()
    if anchors:
        pick += [anchors[i] for i in torch.randint(len(anchors), (config.fine_static_views,),
                                                   generator=state.generator).tolist()]
    return pick


def _step(state: _State, coarse: TrainingViews, dynamic: TrainingViews, config: FitConfig, perceptual,
          measure: bool = False, anchors: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step on random views (:func:`_pick`; the fine stage's pool ``dynamic`` is V, then V̄ if it
    anchors), rendered in one rasterizer call (fine stage: after one field call at all their times); returns (loss
    [], PSNR [] of the rendered views if ``measure`` else None) as device tensors: nothing here waits for the device.
    A non-finite loss is not skipped — the guard in :func:`fit` sees it within ``guard_every`` steps and falls back
    to its last good snapshot."""
    in_coarse = state.iteration < config.coarse_iters
    pool = coarse if in_coarse else dynamic
    pick = _pick(state, len(pool), config, None if in_coarse else anchors)
    g = dict(state.params.items())
    batch = pool.take(pick)
    loss = 0.0
    if not in_coarse:  # each view at its own τ: one field call over all of them, then per-camera Gaussians
        means, quats, log_scales = state.field(g["means"], g["quats"], g["log_scales"], batch.times)  # [V, N, ·]
        g = {**g, "means": means, "quats": quats, "log_scales": log_scales}
        t_other = float(torch.rand((), generator=state.generator))
        loss = loss + sum(state.field.regularizer(pool.times[pick[0]], t_other).values())
    if not in_coarse and config.silhouette_weight > 0:
        loss = loss + config.silhouette_weight * _silhouette_term(state, g, batch, config)
    out = render_views(g, batch, config.backend)  # one rasterizer call for all the picked views
    out.means2d.retain_grad()
    loss = loss + view_loss(out, batch, config, perceptual)
    state.opt_gauss.zero_grad(set_to_none=True)
    state.opt_field.zero_grad(set_to_none=True)
    if not loss.requires_grad:  # nothing rendered depends on the parameters (all culled: NaN ones, say)
        return loss.detach(), None
    loss.backward()
    stage_it = state.iteration - (0 if in_coarse else config.coarse_iters)
    if stage_it < config.densify.stop and out.means2d.grad is not None:
        # [C, N, 2] whatever layout the backend's means2d has (gsplat's per-camera one is [C, 1, N, 2])
        state.stats.add(out.means2d.grad.reshape(*out.radii.shape, 2), out.radii, *pool.size)
    state.opt_gauss.step()
    if not in_coarse:
        state.opt_field.step()
    return loss.detach(), _psnr(out, batch) if measure else None


def _silhouette_term(state: _State, g: dict[str, torch.Tensor], batch: TrainingViews, config: FitConfig):
    """losses.silhouette_chamfer of the step's views on a random subset of the (deformed) Gaussians."""
    n = g["means"].shape[-2]
    subset = torch.randperm(n, generator=state.generator)[: config.silhouette_gaussians].to(g["means"].device)
    uv, _ = project_points(g["means"][..., subset, :], batch.viewmats, batch.Ks)
    weights = g["opacity_logits"][subset].detach().sigmoid().expand(len(uv), -1)
    return losses.silhouette_chamfer(uv, weights, batch.mask_points, batch.mask_valid, max(batch.size))


def _density_control(state: _State, config: FitConfig) -> None:
    d = config.densify
    stage_it = state.iteration if state.iteration < config.coarse_iters else state.iteration - config.coarse_iters
    if d.start <= stage_it < d.stop and stage_it > 0 and stage_it % d.every == 0:
        densify_and_prune(state.params, state.opt_gauss, state.stats, d, state.generator,
                          prune_large=stage_it > d.start)
        state.stats = GradientStats(len(state.params["means"]), state.params["means"].device)
        if state.iteration >= config.coarse_iters:  # new Gaussians: the field's per-Gaussian layout (SC-GS's KNN)
            state.field.bind(state.params["means"].detach())
    if d.reset_every and stage_it > 0 and stage_it % d.reset_every == 0 and stage_it < d.stop:
        reset_opacity(state.params, state.opt_gauss)


def _diverged(window: list[torch.Tensor], start: int, state: _State) -> str | None:
    """One host sync for a window of steps: None if its losses (iterations start, start+1, …) and the current
    parameters are all finite, else what went wrong first."""
    losses_ok = torch.isfinite(torch.stack(window)) if window else torch.ones(0, dtype=torch.bool)
    flags = torch.cat([losses_ok.to(state.params["means"].device), state.finite_flags()]).tolist()
    bad_loss = [i for i, ok in enumerate(flags[:len(window)]) if not ok]
    if bad_loss:
        return f"the loss became NaN/inf at iteration {start + bad_loss[0]}"
    if not all(flags[len(window):]):
        return f"the parameters became NaN/inf during iterations {start}..{state.iteration - 1}"
    return None


class _Guard:
    """The fit's only host reads in the steady state: at each look, one read of the window's losses and of the
    parameters. A divergence writes the last good state as the checkpoint and raises FitDiverged; otherwise the state
    becomes the last good one (an on-device snapshot), written out when a checkpoint is due, and the bar refreshes."""

    def __init__(self, state: _State, method: str, config: FitConfig, ckpt_dir: Path, bar: tqdm):
        self.method, self.config, self.ckpt_dir, self.bar = method, config, ckpt_dir, bar
        self.good = snapshot(state, method, config)  # the last state that passed the guard
        self.window, self.window_start, self.psnr = [], state.iteration, None

    def look(self, state: _State, step_psnr: torch.Tensor | None, checkpoint_due: bool) -> None:
        problem = _diverged(self.window, self.window_start, state)
        if problem is not None:
            path = write_snapshot(self.ckpt_dir, self.good)
            raise FitDiverged(f"{problem}; the last good state (iteration {self.good.iteration}): {path}")
        self.good = snapshot(state, self.method, self.config)
        if checkpoint_due:
            write_snapshot(self.ckpt_dir, self.good)
        self.psnr = step_psnr if step_psnr is not None else self.psnr
        self.bar.set_postfix(loss=f"{float(torch.stack(self.window).mean()):.4f}",
                             psnr=f"{float(self.psnr):.2f}" if self.psnr is not None else "-",
                             n=len(state.params["means"]))
        self.window, self.window_start = [], state.iteration


def _train(state: _State, coarse: TrainingViews, fine: TrainingViews, anchors: list[int] | None, config: FitConfig,
           perceptual: Callable | None, guard: _Guard, guard_every: int, stop_after: int | None) -> None:
    """The steps from ``state.iteration`` to the end of the fine stage (or to ``stop_after``), the guard looking
    every ``guard_every`` steps, before each checkpoint and at the end."""
    total = config.coarse_iters + config.fine_iters
    while state.iteration < total:
        if stop_after is not None and state.iteration >= stop_after:
            return
        if state.iteration == config.coarse_iters:  # the stage change: place the field on the coarse result
            state.field.setup(state.params["means"].detach())
        _set_learning_rates(state, config)
        checkpoint_due = bool(config.checkpoint_every) and (state.iteration + 1) % config.checkpoint_every == 0
        look = (state.iteration + 1) % guard_every == 0 or checkpoint_due or state.iteration + 1 == total
        loss, step_psnr = _step(state, coarse, fine, config, perceptual, measure=look, anchors=anchors)
        guard.window.append(loss)
        state.iteration += 1
        _density_control(state, config)
        guard.bar.update(1)
        if look:
            guard.look(state, step_psnr, checkpoint_due)


def _checked_config(method: str, config: FitConfig | None, guard_every: int) -> FitConfig:
    """``config`` (default: the cpu preset of ``method``) once its values are known to be usable."""
    if method not in FIELDS:
        raise ValueError(f"unknown method {method!r}: choose one of {sorted(FIELDS)}")
    if guard_every < 1:
        raise ValueError(f"guard_every must be ≥ 1, got {guard_every}")
    config = config or PRESETS["cpu"][method]
    if config.silhouette_weight < 0 or config.silhouette_gaussians < 1:
        raise ValueError(f"FitConfig: silhouette_weight must be ≥ 0 and silhouette_gaussians ≥ 1, got "
                         f"{config.silhouette_weight} and {config.silhouette_gaussians}")
    if config.fine_static_views < 0:
        raise ValueError(f"FitConfig.fine_static_views must be ≥ 0, got {config.fine_static_views}")
    return config


def _start_state(ckpt_dir: Path, resume: bool, method: str, config: FitConfig, field_module: nn.Module,
                 dynamic: Views, static: Views | None, device: str, log) -> _State:
    """The checkpoint's state when resuming from one, else Gaussians on the visual hull and a fresh field."""
    if resume and (ckpt_dir / CHECKPOINT).exists():
        state = load_checkpoint(ckpt_dir, method, config, field_module, _State, device)
        log(f"resuming from iteration {state.iteration} ({ckpt_dir})")
        return state
    generator = torch.Generator().manual_seed(config.seed)
    state = _State(initial_gaussians(dynamic, static, config.num_points, generator).to(device), field_module, config)
    state.generator = generator
    return state


def _training_views(coarse: Views, dynamic: Views, static: Views | None, config: FitConfig,
                    device: str) -> tuple[TrainingViews, TrainingViews, list[int] | None]:
    """(the coarse stage's views, the fine stage's pool — V, then V̄ when it anchors —, V̄'s indices in that pool or
    None) on the device, once: the steps only slice them."""
    anchors = None
    if config.fine_static_views and static is not None:
        num_views = len(dynamic)
        dynamic, anchors = Views.cat([dynamic, static]), list(range(num_views, num_views + len(static)))
    return TrainingViews.from_views(coarse, device), TrainingViews.from_views(dynamic, device), anchors


def fit(orbit_dir: str | Path, out_dir: str | Path, method: str = DEFAULT_METHOD, config: FitConfig | None = None,
        static_dir: str | Path | None = None, resume: bool = False, device: str = "cpu",
        perceptual: Callable | None = None, progress: bool = True, stop_after: int | None = None,
        guard_every: int = 50, log=print) -> Asset4D:
    """Fit a 4D asset to an orbit in the official layout; checkpoints go to ``out_dir/checkpoint``.

    ``perceptual``: LPIPS (losses.perceptual_from_files) for the paper's L1 + LPIPS image term; None: L1 + D-SSIM.
    ``stop_after``: return after this many iterations (simulates a run killed midway; the tests use it).
    ``guard_every``: how often (iterations) the host looks at the losses and parameters — the only device syncs of
    the steady state; it is also the progress bar's refresh. A divergence stops the fit within that many
    iterations, writing the last state that passed the check (a rolling on-device snapshot) as the checkpoint.
    Raises FitDiverged (NaN loss), FileNotFoundError / ValueError (bad orbits, naming the file).
    """
    config = _checked_config(method, config, guard_every)
    ckpt_dir = Path(out_dir) / "checkpoint"
    torch.manual_seed(config.seed)  # the field's plane initialisation
    dynamic, static = load_orbits(orbit_dir, static_dir, config.size, log)
    coarse = coarse_views(dynamic, static, config.coarse_dynamic)
    field_module = FIELDS[method](**config.field).to(device)
    state = _start_state(ckpt_dir, resume, method, config, field_module, dynamic, static, device, log)
    coarse, fine, anchors = _training_views(coarse, dynamic, static, config, device)
    total = config.coarse_iters + config.fine_iters
    with tqdm(total=total, initial=state.iteration, disable=not progress, desc=f"fit {method}", leave=False) as bar:
        guard = _Guard(state, method, config, ckpt_dir, bar)
        _train(state, coarse, fine, anchors, config, perceptual, guard, guard_every, stop_after)
    return Asset4D(state.gaussians(), state.field, method, len(dynamic))
