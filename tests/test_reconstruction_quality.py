"""Options of the 4D fit aimed at unseen views (issue 5's quality goal): their terms, hand-checked, tiny, CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion4d.reconstruction.deformation import ControlPointField, trajectory_smoothness
from diffusion4d.reconstruction.fit import FitConfig, _pick, _State
from diffusion4d.reconstruction.gaussians import Gaussians


def test_trajectory_smoothness_is_the_mean_squared_second_difference():
    before = torch.tensor([[0.0, 0, 0], [1, 1, 1]])
    now = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    after = torch.tensor([[2.0, 0, 0], [1, 2, 3]])  # point 0 moves linearly (0); point 1: Δ² = (0, 1, 2)
    assert trajectory_smoothness(before, now, after).item() == pytest.approx((0 + 1 + 4) / 2)
    now = now.clone().requires_grad_()
    trajectory_smoothness(before, now, after).backward()
    # ∂/∂now of mean_i ‖b − 2n + a‖² = −4 (b − 2n + a) / M
    torch.testing.assert_close(now.grad, -4 * (before - 2 * now.detach() + after) / 2)


def test_control_point_regularizer_adds_the_smoothness_of_t_minus_and_plus_delta():
    torch.manual_seed(0)
    field = ControlPointField(num_points=16, width=32, depth=3, smooth_weight=0.5, smooth_delta=0.1)
    field.setup(torch.rand(200, 3) - 0.5)
    with torch.no_grad():
        for p in field.mlp.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a field that moves: the zero-initialised one is the identity
    terms = field.regularizer(0.4, 0.9)
    expected = trajectory_smoothness(field.control_points_at(0.3), field.control_points_at(0.4),
                                     field.control_points_at(0.5))
    assert expected > 0
    torch.testing.assert_close(terms["trajectory_smooth"], 0.5 * expected)
    off = ControlPointField(num_points=16, width=32, depth=3)
    off.load_state_dict(field.state_dict())
    assert set(off.regularizer(0.4, 0.9)) == {"arap"}  # weight 0: no term, no extra times evaluated
    torch.testing.assert_close(off.regularizer(0.4, 0.9)["arap"], terms["arap"])


def _state(config: FitConfig) -> _State:
    return _State(Gaussians.init_random(10, seed=0), ControlPointField(num_points=4), config)


def test_fine_views_come_from_the_static_orbit_at_the_configured_rate():
    base = FitConfig(views_per_step=4000)
    state = _state(base)
    reference = torch.Generator().manual_seed(base.seed)
    assert _pick(state, 24, 48, base, in_coarse=False) == torch.randint(24, (4000,), generator=reference).tolist()
    pick = torch.tensor(_pick(state, 24, 48, dataclasses.replace(base, fine_static_fraction=0.25), False))
    assert pick.min() >= 0 and pick.max() < 48
    assert abs((pick >= 24).float().mean().item() - 0.25) < 0.03
    assert set(_pick(state, 24, 48, dataclasses.replace(base, fine_static_fraction=1.0), False)) <= set(range(24, 48))
    coarse = torch.tensor(_pick(state, 24, 48, dataclasses.replace(base, fine_static_fraction=1.0), True))
    assert (coarse < 24).any() and (coarse >= 24).any()  # the coarse stage draws from its whole pool


def test_growth_scales_each_neighbourhood_about_its_control_point_and_the_gaussians_scales():
    torch.manual_seed(0)
    means, quats = torch.rand(100, 3) - 0.5, torch.nn.functional.normalize(torch.randn(100, 4), dim=-1)
    log_scales = torch.randn(100, 3) * 0.1 - 3
    field = ControlPointField(num_points=16, width=16, depth=2, growth=True)
    field.setup(means)
    g = 0.3
    with torch.no_grad():  # no rotation, no translation, log-growth g everywhere
        field.mlp[-1].bias.copy_(torch.tensor([0, 0, 0, 0, 0, 0, 0, g]))
    m, q, s = field(means, quats, log_scales, 0.5)
    idx, w = field.skinning(means)
    anchor = (w[..., None] * field.points[idx]).sum(1)  # Σ_k w_k a_k
    torch.testing.assert_close(m, torch.exp(torch.tensor(g)) * means + (1 - torch.exp(torch.tensor(g))) * anchor)
    torch.testing.assert_close(s, log_scales + g)
    torch.testing.assert_close(q, quats)
    ms, _, ss = field(means, quats, log_scales, [0.2, 0.5])  # the batched path gives the same, per time
    torch.testing.assert_close(ms[1], m)
    assert ss.shape == (2, 100, 3)
    fresh = ControlPointField(num_points=16, width=16, depth=2, growth=True)
    fresh.setup(means)
    m0, _, s0 = fresh(means, quats, log_scales, 0.5)  # zero-initialised output: the identity
    torch.testing.assert_close(m0, means)
    torch.testing.assert_close(s0, log_scales)


def test_fine_time_warmup_grows_the_window_of_views_from_the_first_ones_to_all():
    config = FitConfig(coarse_iters=100, fine_iters=200, views_per_step=2000, fine_time_warmup=0.5)
    state = _state(config)
    for it, window in ((100, 2), (150, 13), (199, 24), (299, 24)):  # window = ceil((it − 100 + 1) / 100 · 24) ≥ 2
        state.iteration = it
        pick = torch.tensor(_pick(state, 24, 24, config, in_coarse=False))
        assert pick.max().item() == window - 1 and pick.min().item() == 0, it
    state.iteration = 0
    assert max(_pick(state, 24, 24, config, in_coarse=True)) == 23  # the coarse stage: everything


def test_opacity_entropy_is_the_binary_entropy_and_pushes_opacities_away_from_one_half():
    from diffusion4d.reconstruction.losses import opacity_entropy

    logits = torch.tensor([0.0, 2.0, -3.0, 60.0], requires_grad=True)
    p = torch.sigmoid(logits.detach()[:3])
    expected = torch.cat([-(p * p.log() + (1 - p) * (1 - p).log()), torch.zeros(1)]).mean()  # σ(60) = 1: none
    torch.testing.assert_close(opacity_entropy(logits), expected)
    assert opacity_entropy(torch.zeros(1)).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # maximum
    opacity_entropy(logits).backward()
    assert torch.isfinite(logits.grad).all()
    # dH/dx = −x σ(x)(1 − σ(x)) / N: descent moves x away from 0, towards saturation
    s = torch.sigmoid(logits.detach())
    torch.testing.assert_close(logits.grad, -logits.detach() * s * (1 - s) / 4)


def _one_camera_views(mask: torch.Tensor):
    """Views of one camera at z = 2 looking down −z (OpenGL axes), 16², whose object mask is ``mask`` [16, 16]."""
    from diffusion4d.reconstruction.views import Views

    c2w = torch.eye(4)
    c2w[2, 3] = 2.0
    K = torch.tensor([[16.0, 0, 8], [0, 16, 8], [0, 0, 1]])
    alpha = mask.float()[None, None]
    return Views(torch.ones(1, 3, 16, 16), alpha, True, c2w[None], K[None], torch.zeros(1), 0.9, 0.9)


def test_prune_outside_hull_drops_gaussians_outside_the_static_masks_with_their_adam_moments():
    from diffusion4d.reconstruction.fit import prune_outside_hull

    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:, :8] = True  # the left half of the image: x < 0 in the world
    views = _one_camera_views(mask)
    state = _state(FitConfig())
    with torch.no_grad():
        state.params["means"].copy_(torch.tensor([[-0.3 + 0.03 * i, 0.0, 0.0] for i in range(10)]))  # x −0.3…−0.03 in
        state.params["means"][[2, 5, 7], 0] = 0.3  # three on the right: out
    sum((v * torch.arange(1.0, 11.0).view(-1, *[1] * (v.dim() - 1))).sum() for v in state.params.values()).backward()
    state.opt_gauss.step()  # Adam moments exist, one row per Gaussian
    moments = state.opt_gauss.state[state.params["sh0"]]["exp_avg"].clone()
    assert prune_outside_hull(state, views, 1.0) == 3
    keep = torch.tensor([i not in (2, 5, 7) for i in range(10)])
    assert len(state.params["means"]) == 7 and (state.params["means"][:, 0] < 0).all()
    torch.testing.assert_close(state.opt_gauss.state[state.params["sh0"]]["exp_avg"], moments[keep])
    assert len(state.stats.grad) == 7
    assert prune_outside_hull(state, _one_camera_views(torch.zeros(16, 16, dtype=torch.bool)), 1.0) == 0  # never all
    assert len(state.params["means"]) == 7
