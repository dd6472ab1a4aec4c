"""Deformation fields, losses, the coarse-to-fine fit (resume, NaN guard, bad input), Asset4D and the CLI — tiny,
CPU."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusion4d.data import layout
from diffusion4d.reconstruction.asset import Asset4D
from diffusion4d.reconstruction.deformation import FIELDS, ControlPointField, HexPlaneField, arap_loss
from diffusion4d.reconstruction.densify import DensifyConfig
from diffusion4d.reconstruction.fit import PRESETS, FitConfig, FitDiverged, fit
from diffusion4d.reconstruction.gaussians import Gaussians, quat_to_rotmat
from diffusion4d.reconstruction.losses import depth_smoothness, ssim

TINY = FitConfig(coarse_iters=60, fine_iters=40, size=32, backend="torch", num_points=400, checkpoint_every=20,
                 densify=DensifyConfig(start=20, stop=50, every=20, max_gaussians=800),
                 field={"resolution": 8, "time_resolution": 4, "width": 32})
TINY_SCGS = dataclasses.replace(TINY, field={"num_points": 32, "width": 32, "depth": 3})


@pytest.fixture(scope="module")
def orbits(tmp_path_factory):
    """One procedural asset rendered at 32², 8 views: front orbit + static orbit + one random-start orbit."""
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.render_job import RenderSettings, run_render_job

    root = tmp_path_factory.mktemp("recon")
    assets = write_procedural_dataset(root / "assets", count=2, seed=0, progress=False)[1:]  # a spinning top
    report = run_render_job(assets, root / "orbits", RenderSettings(size=32, frames=8), workers=1, progress=False)
    assert not report.failed, report.summary()
    uid = assets[0].stem
    other = next(p for p in (root / "orbits").iterdir() if p.name.startswith(uid + "_az"))
    return root / "orbits" / uid, other


def _points(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) - 0.5
    quats = F.normalize(torch.randn(n, 4, generator=g), dim=-1)
    return means, quats, torch.randn(n, 3, generator=g) * 0.1 - 3


@pytest.mark.parametrize("field", [HexPlaneField(resolution=8, time_resolution=4), ControlPointField(num_points=32)],
                         ids=["4dgs", "scgs"])
def test_fields_start_as_identity_with_right_shapes(field):
    means, quats, log_scales = _points()
    field.setup(means)
    for t in (0.0, 0.4, 1.0):
        m, q, s = field(means, quats, log_scales, t)
        assert m.shape == (300, 3) and q.shape == (300, 4) and s.shape == (300, 3)
        torch.testing.assert_close(m, means, atol=1e-6, rtol=0)
        torch.testing.assert_close(q, quats, atol=1e-6, rtol=0)
        torch.testing.assert_close(s, log_scales)
    terms = field.regularizer(0.2, 0.8)
    assert terms and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())


def test_bound_skinning_equals_searching_it_and_survives_a_state_dict_round_trip():
    means, quats, log_scales = _points()
    field = ControlPointField(num_points=32)
    field.setup(means)  # binds to these means
    with torch.no_grad():
        field.mlp[-1].weight.normal_(0, 0.1)  # a non-trivial motion
    bound = field(means, quats, log_scales, 0.7)
    assert field.skin_index.shape == (300, 4)
    fresh = ControlPointField(num_points=32)
    old_weights = {k: v for k, v in field.state_dict().items() if k != "skin_index"}  # saved before binding existed
    fresh.load_state_dict(old_weights)
    assert fresh.skin_index.shape == (0, 4)  # unbound: searches every call
    for a, b in zip(bound, fresh(means, quats, log_scales, 0.7)):
        assert torch.equal(a, b)
    fresh.load_state_dict(field.state_dict())
    assert torch.equal(fresh.skin_index, field.skin_index)
    # a different number of Gaussians than bound: searched, not the stale binding
    torch.testing.assert_close(field(means[:100], quats[:100], log_scales[:100], 0.7)[0], bound[0][:100])


def test_scgs_fine_stage_searches_skinning_neighbours_only_when_the_gaussians_change(orbits, tmp_path, monkeypatch):
    from diffusion4d.reconstruction import deformation

    calls = []
    real_knn = deformation.knn
    monkeypatch.setattr(deformation, "knn", lambda *a, **k: calls.append(len(a[0])) or real_knn(*a, **k))
    config = dataclasses.replace(TINY_SCGS, coarse_iters=20, fine_iters=30,
                                 densify=DensifyConfig(start=5, stop=12, every=5, max_gaussians=800))
    fit(orbits[0], tmp_path, "scgs", config, progress=False, log=lambda *_: None)
    # setup: the control points' ARAP graph + the binding; fine-stage densifications at stage iterations 5 and 10
    assert len(calls) == 4, calls


def _perturbed(field, seed=1, scale=0.1):
    """The field with every parameter moved off its (identity) initialisation: a non-trivial motion."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(torch.randn_like(p) * scale)
    return field


@pytest.mark.parametrize("make", [lambda: HexPlaneField(resolution=8, time_resolution=4, width=32),
                                  lambda: ControlPointField(num_points=32, width=32, depth=3)],
                         ids=["4dgs", "scgs"])
def test_fields_at_a_sequence_of_times_equal_one_call_per_time_with_gradients(make):
    means, quats, log_scales = (t.requires_grad_() for t in _points())
    field = make()
    field.setup(means.detach())
    _perturbed(field)
    times = [0.0, 0.37, 1.0, 0.37]  # a repeated time too (the fit draws views with replacement)
    batched = field(means, quats, log_scales, times)
    single = [field(means, quats, log_scales, t) for t in times]
    for k, shape in enumerate([(4, 300, 3), (4, 300, 4), (4, 300, 3)]):
        assert batched[k].shape == shape and single[0][k].shape == shape[1:]
        torch.testing.assert_close(batched[k], torch.stack([s[k] for s in single]), atol=1e-6, rtol=1e-6)
    assert not torch.equal(batched[0][0], batched[0][1])  # the times differ, so do the Gaussians
    # one weighted loss of all outputs: gradients with respect to the field and to the canonical Gaussians
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(o.shape, generator=gen) for o in batched]
    inputs = [means, quats, log_scales, *field.parameters()]
    loss_of = lambda outs: sum((w * o).sum() for w, o in zip(weights, outs))  # noqa: E731
    grads = torch.autograd.grad(loss_of(batched), inputs, allow_unused=True)
    grads_ref = torch.autograd.grad(loss_of([torch.stack([s[k] for s in single]) for k in range(3)]), inputs,
                                    allow_unused=True)
    for g, r in zip(grads, grads_ref):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sequence of times is empty"):
        field(means, quats, log_scales, [])


def test_fine_stage_anchored_on_the_static_orbit_renders_its_views_at_tau0(orbits, tmp_path, monkeypatch):
    from diffusion4d.reconstruction import fit as fit_module

    config = dataclasses.replace(TINY_SCGS, coarse_iters=10, fine_iters=6, views_per_step=3, fine_static_views=2)
    fine_batches = []
    real_render = fit_module.render_views

    def render(g, views, backend):
        if g["means"].dim() == 3:  # the fine stage: per-view deformed Gaussians
            fine_batches.append(list(views.times))
        return real_render(g, views, backend)

    monkeypatch.setattr(fit_module, "render_views", render)
    fit(orbits[0], tmp_path, "scgs", config, progress=False, log=lambda *_: None)
    assert len(fine_batches) == 6 and all(len(times) == 5 for times in fine_batches)
    assert all(times[3:] == [0.0, 0.0] for times in fine_batches)  # the two V̄ views, at τ0
    assert any(t > 0 for times in fine_batches for t in times[:3])  # V's views at their own times
    with pytest.raises(ValueError, match="fine_static_views must be ≥ 0"):
        fit(orbits[0], tmp_path / "b", "scgs", dataclasses.replace(config, fine_static_views=-1), progress=False)


def _training_views(count=6, size=16, seed=0):
    """Synthetic targets (random images and alphas) on a real orbit of cameras, times i/(T−1)."""
    from diffusion4d import cameras
    from diffusion4d.reconstruction.views import TrainingViews, Views

    gen = torch.Generator().manual_seed(seed)
    x_fov, y_fov = cameras.fov_xy(39.6, size, size)
    K = torch.as_tensor(cameras.intrinsics(x_fov, y_fov, size, size), dtype=torch.float32)
    views = Views(torch.rand(count, 3, size, size, generator=gen), torch.rand(count, 1, size, size, generator=gen),
                  True, torch.as_tensor(cameras.orbit_camera_to_world(count), dtype=torch.float32),
                  K.expand(count, 3, 3).clone(), torch.linspace(0, 1, count), x_fov, y_fov)
    return TrainingViews.from_views(views, "cpu")


def _per_view_fine_loss(state, pool, pick, t_other, config):
    """The fine stage as it was before batching, the reference: one field call and one render per picked view,
    the mean of their losses, the regulariser once. Returns (loss, the renders)."""
    from diffusion4d.reconstruction.fit import render_views, view_loss

    g = dict(state.params.items())
    loss, outs = 0.0, []
    for k in pick:
        view = pool.take([k])
        means, quats, log_scales = state.field(g["means"], g["quats"], g["log_scales"], view.times[0])
        out = render_views({**g, "means": means, "quats": quats, "log_scales": log_scales}, view, config.backend)
        outs.append(out)
        loss = loss + view_loss(out, view, config, None) / len(pick)
    return loss + sum(state.field.regularizer(pool.times[pick[0]], t_other).values()), outs


@pytest.mark.parametrize("method", ["4dgs", "scgs"])
def test_batched_fine_step_equals_the_per_view_loop(method):
    from diffusion4d.reconstruction.densify import GradientStats
    from diffusion4d.reconstruction.fit import _State, _step
    from diffusion4d.reconstruction.gaussians import Gaussians

    config = dataclasses.replace(TINY if method == "4dgs" else TINY_SCGS, views_per_step=4, coarse_iters=10,
                                 densify=DensifyConfig(start=0, stop=100, every=50))
    pool = _training_views()
    field = FIELDS[method](**config.field)
    gaussians = Gaussians.init_random(150, radius=0.3, seed=0, opacity=0.5)
    gaussians.log_scales += torch.randn(150, 3, generator=torch.Generator().manual_seed(3))  # anisotropic: quats count
    state = _State(gaussians, field, config)
    state.iteration = config.coarse_iters  # the first fine step
    field.setup(state.params["means"].detach())
    _perturbed(field)
    params = list(state.params.values()) + list(field.parameters())

    # the reference, on the same state and the same random draws (a copy of the fit's generator)
    gen = torch.Generator()
    gen.set_state(state.generator.get_state())
    pick = torch.randint(len(pool), (config.views_per_step,), generator=gen).tolist()
    t_other = float(torch.rand((), generator=gen))
    loss_ref, outs = _per_view_fine_loss(state, pool, pick, t_other, config)
    grads = torch.autograd.grad(loss_ref, params + [o.means2d for o in outs])
    grads_ref, means2d_grads = grads[:len(params)], grads[len(params):]
    stats_ref = GradientStats(len(state.params["means"]))
    for g, o in zip(means2d_grads, outs):
        stats_ref.add(g, o.radii, *pool.size)

    loss, _ = _step(state, pool, pool, config, None)  # one field call, one rasterizer call
    assert torch.equal(state.generator.get_state(), gen.get_state())  # the same draws, in the same order
    torch.testing.assert_close(loss, loss_ref.detach(), atol=1e-6, rtol=1e-6)
    for p, r in zip(params, grads_ref):  # .grad is what the optimizers stepped with
        torch.testing.assert_close(p.grad, r, atol=1e-6 * r.abs().max().item(), rtol=1e-4)
    assert all(r.abs().max() > 0 for r in grads_ref[:5])  # every Gaussian parameter takes part
    torch.testing.assert_close(state.stats.count, stats_ref.count, atol=0, rtol=0)
    torch.testing.assert_close(state.stats.grad, stats_ref.grad, atol=1e-9, rtol=1e-4)
    assert state.stats.count.max() > 1  # seen by several of the views


def _rigid(means, angle=0.4, shift=(0.1, -0.05, 0.08)):
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return means @ R.T + torch.tensor(shift), R


def _fit_field(field, means, quats, log_scales, target, iters):
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(iters):
        loss = (field(means, quats, log_scales, 1.0)[0] - target).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return field(means, quats, log_scales, 1.0)


def test_control_point_field_recovers_a_rigid_motion():
    torch.manual_seed(0)
    means, quats, log_scales = _points(400)
    target, R = _rigid(means)
    field = ControlPointField(num_points=32, width=64, depth=3)
    field.setup(means)
    m, q, _ = _fit_field(field, means, quats, log_scales, target, 300)
    assert (m - target).norm(dim=-1).mean() < 0.01  # from 0.2 at the start
    # the Gaussians' rotations follow the motion: R(q_t) ≈ R · R(q)
    err = (quat_to_rotmat(q) - R @ quat_to_rotmat(quats)).abs().mean()
    assert err < 0.05
    # the control points moved rigidly too, so ARAP between t = 0 and t = 1 is small
    assert field.regularizer(0.0, 1.0)["arap"] < 1e-5


def test_hexplane_field_reduces_the_error_of_a_rigid_motion():
    torch.manual_seed(0)
    means, quats, log_scales = _points(400)
    target, _ = _rigid(means)
    field = HexPlaneField(resolution=8, time_resolution=4, width=32)
    before = (means - target).norm(dim=-1).mean()
    m, _, _ = _fit_field(field, means, quats, log_scales, target, 150)
    assert (m - target).norm(dim=-1).mean() < 0.3 * before


def test_arap_is_zero_for_rigid_motion_and_positive_otherwise():
    square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    neighbours = torch.tensor([[1, 3], [0, 2], [1, 3], [0, 2]])
    moved, _ = _rigid(square, angle=1.0, shift=(3.0, 2.0, 1.0))
    assert arap_loss(square, moved, neighbours) < 1e-10
    stretched = square * torch.tensor([2.0, 1.0, 1.0])  # edges along x double: 4 of 8 pairs change by 1
    assert arap_loss(square, stretched, neighbours).item() == pytest.approx(0.5)


def test_ssim_loss_matches_the_metric_and_depth_smoothness_is_edge_aware():
    from diffusion4d.metrics import ssim as metric_ssim

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 24, 24, generator=g), torch.rand(2, 3, 24, 24, generator=g)
    torch.testing.assert_close(ssim(x, y), metric_ssim(x, y), atol=1e-5, rtol=0)
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16)
    flat, edges = torch.zeros(1, 3, 16, 16), ramp.expand(1, 3, 16, 16) * 3
    assert depth_smoothness(ramp, flat).item() == pytest.approx(1 / 15)  # |∂x D| = 1/15 everywhere, ∂y D = 0
    assert depth_smoothness(ramp, edges).item() == pytest.approx(math.exp(-3 / 15) / 15)  # damped by the image


def _scores(asset, folder, kind):
    orbit = layout.read_orbit(folder, kind)
    target = layout.composite(layout.read_orbit(folder, layout.DYNAMIC).images)
    pred = torch.stack([asset.render(c, orbit.x_fov, orbit.y_fov, 32, 32, t, backend="torch").permute(2, 0, 1)
                        for c, t in zip(orbit.c2w, orbit.timestamps)])
    return float(-10 * torch.log10((pred - target).pow(2).mean()))


def test_fit_learns_the_orbit_and_beats_copying_tau0_on_held_out_views(orbits, tmp_path):
    front, other = orbits
    asset = fit(front, tmp_path, "4dgs", TINY, progress=False, log=lambda *_: None)
    train = _scores(asset, front, layout.DYNAMIC)
    orbit = layout.read_orbit(other, layout.DYNAMIC)
    target = layout.composite(orbit.images)
    pred = torch.stack([asset.render(c, orbit.x_fov, orbit.y_fov, 32, 32, t, backend="torch").permute(2, 0, 1)
                        for c, t in zip(orbit.c2w, orbit.timestamps)])
    held_out = float(-10 * torch.log10((pred - target).pow(2).mean()))
    copy = float(-10 * torch.log10((layout.composite(layout.read_orbit(other, layout.STATIC).images) - target)
                                   .pow(2).mean()))
    blank = float(-10 * torch.log10((1 - target).pow(2).mean()))  # an empty white render
    assert train > blank + 8
    assert held_out > copy, (held_out, copy)


def test_resume_after_an_interruption_gives_the_same_result(orbits, tmp_path):
    front, _ = orbits
    config = dataclasses.replace(TINY_SCGS, coarse_iters=30, fine_iters=30, checkpoint_every=10)
    full = fit(front, tmp_path / "full", "scgs", config, progress=False, log=lambda *_: None)
    fit(front, tmp_path / "cut", "scgs", config, progress=False, stop_after=47, log=lambda *_: None)  # "killed"
    resumed = fit(front, tmp_path / "cut", "scgs", config, resume=True, progress=False, log=lambda *_: None)
    for name, value in full.canonical.state_dict().items():
        assert torch.equal(value, resumed.canonical.state_dict()[name]), name
    for name, value in full.field.state_dict().items():
        assert torch.equal(value, resumed.field.state_dict()[name]), name
    with pytest.raises(ValueError, match="another method or settings"):
        fit(front, tmp_path / "cut", "scgs", dataclasses.replace(config, seed=1), resume=True, progress=False)


def test_saved_configs_naming_removed_experiments_load_with_a_warning_that_ignores_them(orbits, tmp_path):
    """FitConfig's ``track`` and the SC-GS field's ``time_knots`` / ``knot_smooth_weight`` (removed experiments) in a
    saved config, an asset.json and a checkpoint: each is named in a warning, ignored, and the rest loads as saved."""
    import safetensors.torch
    from safetensors import safe_open

    with pytest.warns(UserWarning, match=r"^FitConfig: the saved field 'track' belongs to a removed experiment and "
                                         r"is ignored$"):
        assert FitConfig.from_json({**TINY_SCGS.to_json(), "track": 0.5}) == TINY_SCGS

    means, quats, log_scales = _points()
    field = ControlPointField(num_points=32, width=32, depth=3)
    field.setup(means)
    asset = Asset4D(Gaussians.init_from_points(means, torch.rand(len(means), 3)), _perturbed(field), "scgs", 8)
    meta_path = asset.save(tmp_path / "asset") / "asset.json"
    meta = json.loads(meta_path.read_text())
    old_field_config = {**meta["field_config"], "time_knots": 0, "knot_smooth_weight": 10.0}
    meta_path.write_text(json.dumps({**meta, "field_config": old_field_config}))
    with pytest.warns(UserWarning) as warned:
        loaded = Asset4D.load(tmp_path / "asset")
    assert [str(w.message) for w in warned] == [
        f"{meta_path}: the saved field '{name}' belongs to a removed experiment and is ignored"
        for name in ("time_knots", "knot_smooth_weight")]
    assert loaded.field.config == field.config
    for name in ("means", "quats", "log_scales"):
        assert torch.equal(getattr(asset.at(0.6), name), getattr(loaded.at(0.6), name)), name

    front, _ = orbits
    config = dataclasses.replace(TINY_SCGS, coarse_iters=10, fine_iters=10, checkpoint_every=5)
    full = fit(front, tmp_path / "full", "scgs", config, progress=False, log=lambda *_: None)
    fit(front, tmp_path / "cut", "scgs", config, progress=False, stop_after=17, log=lambda *_: None)
    path = tmp_path / "cut" / "checkpoint" / "checkpoint.safetensors"
    with safe_open(path, framework="pt") as f:
        state = json.loads(f.metadata()["state"])
    state["config"]["track"] = 0.5  # as a fit of then wrote it
    safetensors.torch.save_file(safetensors.torch.load_file(path), path, metadata={"state": json.dumps(state)})
    with pytest.warns(UserWarning, match="'track' belongs to a removed experiment and is ignored"):
        resumed = fit(front, tmp_path / "cut", "scgs", config, resume=True, progress=False, log=lambda *_: None)
    for name, value in full.field.state_dict().items():
        assert torch.equal(value, resumed.field.state_dict()[name]), name
    for name, value in full.canonical.state_dict().items():
        assert torch.equal(value, resumed.canonical.state_dict()[name]), name


def _checkpoint_tensors(folder):
    import safetensors.torch

    return safetensors.torch.load_file(folder / "checkpoint" / "checkpoint.safetensors")


def test_nan_parameters_stop_within_the_guard_window_keeping_the_last_good_state(orbits, tmp_path):
    # a NaN learning rate makes the means NaN in the first update; the losses stay finite (NaN Gaussians are culled),
    # so it is the parameter check every guard_every steps that must stop it, with the initial state kept
    config = dataclasses.replace(TINY, lr_means=float("nan"))
    with pytest.raises(FitDiverged, match=r"parameters became NaN/inf during iterations 0\.\.4; the last good "
                                          r"state \(iteration 0\)"):
        fit(orbits[0], tmp_path, "4dgs", config, progress=False, guard_every=5, log=lambda *_: None)
    saved = _checkpoint_tensors(tmp_path)
    assert all(torch.isfinite(v).all() for k, v in saved.items() if k.startswith("gauss."))


def test_nan_loss_is_named_at_its_iteration_and_the_snapshot_before_it_is_kept(orbits, tmp_path):
    calls = []

    def perceptual(pred, target):  # the only loss term we can poison: NaN from the 8th step (iteration 7) on
        calls.append(1)
        return pred.new_full((len(pred),), math.nan if len(calls) > 7 else 0.0)

    config = dataclasses.replace(TINY, checkpoint_every=0)
    with pytest.raises(FitDiverged, match=r"the loss became NaN/inf at iteration 7; the last good state "
                                          r"\(iteration 5\)"):
        fit(orbits[0], tmp_path, "4dgs", config, perceptual=perceptual, progress=False, guard_every=5,
            log=lambda *_: None)
    assert len(calls) == 10  # stopped at the first look after the NaN, not at the end of the fit
    saved = _checkpoint_tensors(tmp_path)
    assert all(torch.isfinite(v).all() for k, v in saved.items() if k.startswith("gauss."))
    # the kept state is exactly the one a clean run has after 5 iterations
    clean = fit(orbits[0], tmp_path / "clean", "4dgs", config, perceptual=lambda p, t: p.new_zeros(len(p)),
                progress=False, stop_after=5, log=lambda *_: None)
    for name, value in clean.canonical.state_dict().items():
        assert torch.equal(value, saved[f"gauss.{name}"]), name


def test_fully_transparent_frame_is_an_error_naming_it(orbits, tmp_path):
    folder = tmp_path / "orbit"
    shutil.copytree(orbits[0], folder)
    orbit = layout.read_orbit(orbits[0])
    layout.write_view(folder, layout.DYNAMIC, 3, np.zeros((32, 32, 4), np.uint8), orbit.c2w[3], orbit.x_fov,
                      orbit.y_fov)
    with pytest.raises(ValueError, match="multi_frame3.png: the frame is fully transparent"):
        fit(folder, tmp_path / "out", "4dgs", TINY, progress=False)


def test_asset_save_load_round_trip_renders_identically(orbits, tmp_path):
    config = dataclasses.replace(TINY_SCGS, coarse_iters=10, fine_iters=10)
    asset = fit(orbits[0], tmp_path / "fit", "scgs", config, progress=False, log=lambda *_: None)
    asset.save(tmp_path / "asset")
    loaded = Asset4D.load(tmp_path / "asset")
    c2w = layout.read_orbit(orbits[0]).c2w[2]
    for t in (0.0, 0.6):
        a = asset.render(c2w, 0.7, 0.7, 32, 32, t, backend="torch")
        assert torch.equal(a, loaded.render(c2w, 0.7, 0.7, 32, 32, t, backend="torch"))


def test_cli_reconstruct_end_to_end(orbits, tmp_path, monkeypatch, capsys):
    from diffusion4d.cli import main

    monkeypatch.setitem(PRESETS["cpu"], "scgs", dataclasses.replace(TINY_SCGS, coarse_iters=20, fine_iters=10))
    out = tmp_path / "asset"  # no --method: the default, SC-GS
    assert main(["-q", "reconstruct", str(orbits[0]), "--out", str(out), "--preset", "cpu", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (out / "ply").iterdir()) == [f"time_{i:02d}.ply" for i in range(8)]
    for name in ("asset.json", "canonical.safetensors", "deformation.safetensors", "renders/orbit_t0.50.mp4",
                 "renders/orbit_t0.50.gif"):
        assert (out / name).stat().st_size > 0, name
    assert Asset4D.load(out).num_views == 8 and json.loads((out / "asset.json").read_text())["method"] == "scgs"
    assert main(["reconstruct", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("views_per_step, silhouette", [(1, 0.0), (3, 0.0), (3, 0.5)])
def test_fit_on_cuda(orbits, tmp_path, views_per_step, silhouette):
    """The same tiny fit on CUDA with backend auto (gsplat where it is installed, else the torch rasterizer on the
    GPU): it learns the orbit and renders back on the CPU.
    Several views per step: the fine stage's per-camera Gaussians through gsplat's batch layout; with the
    silhouette chamfer (its subset and mask points on the device)."""
    config = dataclasses.replace(TINY, backend="auto", views_per_step=views_per_step, silhouette_weight=silhouette)
    asset = fit(orbits[0], tmp_path, "scgs", dataclasses.replace(config, field=TINY_SCGS.field), device="cuda",
                progress=False, log=lambda *_: None)
    front = layout.read_orbit(orbits[0])
    target = layout.composite(front.images)
    pred = torch.stack([asset.render(c, front.x_fov, front.y_fov, 32, 32, t).permute(2, 0, 1).cpu()
                        for c, t in zip(front.c2w, front.timestamps)])
    psnr_fit = float(-10 * torch.log10((pred - target).pow(2).mean()))
    assert psnr_fit > float(-10 * torch.log10((1 - target).pow(2).mean())) + 8


@pytest.mark.gpu
def test_nan_guard_on_cuda(orbits, tmp_path):
    """The rasterizer's finiteness check is off in the fit (backend auto, as above): NaN Gaussians must reach the
    rasterizer harmlessly, and the guard must stop the fit within its window with the last good state saved."""
    config = dataclasses.replace(TINY_SCGS, backend="auto", lr_means=float("nan"))
    # gsplat may cull the NaN Gaussians (finite loss, caught by the parameter check) or render NaN (the loss check)
    with pytest.raises(FitDiverged, match=r"(parameters became NaN/inf during iterations 0\.\.4|loss became NaN/inf "
                                          r"at iteration [1-4]); the last good state \(iteration 0\)"):
        fit(orbits[0], tmp_path, "scgs", config, device="cuda", progress=False, guard_every=5, log=lambda *_: None)
    saved = _checkpoint_tensors(tmp_path)
    assert all(torch.isfinite(v).all() for k, v in saved.items() if k.startswith("gauss."))


def test_default_method_is_one_name_everywhere():
    """fit(), generate() and both CLI commands fall back to the same field (the CLI spells it out to stay torch-free
    while parsing)."""
    import inspect

    from diffusion4d.cli import build_parser
    from diffusion4d.pipelines.generate import GenerateSettings
    from diffusion4d.reconstruction.fit import DEFAULT_METHOD, PRESETS

    assert all(DEFAULT_METHOD in methods for methods in PRESETS.values())
    assert inspect.signature(fit).parameters["method"].default == DEFAULT_METHOD
    assert GenerateSettings().method == DEFAULT_METHOD
    parser = build_parser()
    assert parser.parse_args(["reconstruct", "orbit", "--out", "o"]).method == DEFAULT_METHOD
    assert parser.parse_args(["generate", "--prompt", "a fox", "--out", "o"]).method == DEFAULT_METHOD


@pytest.mark.parametrize("make", [lambda: HexPlaneField(resolution=8, time_resolution=4),
                                  lambda: ControlPointField(num_points=256)], ids=["4dgs", "scgs"])
def test_field_gradients_are_the_same_run_to_run_on_two_threads(make, two_threads):
    """The fields' gathers sum their gradients in index order (a reproducible CPU fit, BENCHMARKS.md session 20)."""
    gen = torch.Generator().manual_seed(0)
    means = (torch.rand(3000, 3, generator=gen) - 0.5).requires_grad_()
    quats, log_scales = torch.randn(3000, 4, generator=gen), torch.full((3000, 3), -3.0)
    torch.manual_seed(0)
    field = make()
    field.setup(means.detach())
    with torch.no_grad():  # away from the identity start, where many gradients are exactly zero
        for p in field.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    inputs = [means, *field.parameters()]

    def grads():
        m, q, s = field(means, quats, log_scales, [0.25, 0.75])  # S = 2 times: 6,000 points' gathers
        return torch.autograd.grad(m.pow(2).sum() + q.sum() + s.sum(), inputs, allow_unused=True)

    first = grads()
    for _ in range(2):
        assert all(a is None and b is None or torch.equal(a, b) for a, b in zip(first, grads()))
