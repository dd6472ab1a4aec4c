"""Options of the 4D fit aimed at unseen views (issue 5's quality goal): their terms, hand-checked, tiny, CPU."""

from __future__ import annotations

import functools

import pytest
import torch

from diffusion4d.reconstruction.deformation import ControlPointField


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


def test_growth_learns_a_part_that_grows_which_rigid_transforms_cannot():
    torch.manual_seed(0)
    means = torch.rand(300, 3) - 0.5
    quats = torch.nn.functional.normalize(torch.randn(300, 4), dim=-1)
    log_scales = torch.full((300, 3), -3.0)
    target_means, target_log_scales = means * 1.4, log_scales + torch.log(torch.tensor(1.4))  # grown ×1.4 at t = 1
    errors = {}
    for growth in (False, True):
        torch.manual_seed(1)
        field = ControlPointField(num_points=32, width=64, depth=3, growth=growth)
        field.setup(means)
        opt = torch.optim.Adam(field.parameters(), lr=3e-3)
        for _ in range(200):
            m, _, s = field(means, quats, log_scales, 1.0)
            loss = (m - target_means).pow(2).sum(-1).mean() + (s - target_log_scales).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        errors[growth] = loss.item()
    # positions alone can be matched by translations; the Gaussians' scales only with growth
    assert errors[True] < 0.05 * errors[False], errors


def _skinned_pairwise(field: ControlPointField, means, quats, log_scales, t: float):
    """Reference LBS, one (Gaussian, neighbour) pair at a time: x_t = Σ_k w_k [g_k R_k (x − p_k) + p_k + t_k],
    q_t = normalize(Σ_k w_k q_k) ⊗ q, log s_t = log s + Σ_k w_k log g_k."""
    from diffusion4d.reconstruction.deformation import _residual_quat, quat_multiply, quat_to_rotmat

    out = field._outputs_at([t])[0]
    q, trans = _residual_quat(out[:, :4]), out[:, 4:7]
    gain = out[:, 7].exp() if field.config["growth"] else torch.ones(len(q))
    idx, w = field.skinning(means)
    p = field.points[idx]  # [N, K, 3]
    rotated = (quat_to_rotmat(q)[idx] @ (means[:, None] - p)[..., None])[..., 0]  # [N, K, 3]
    m = (w[..., None] * (gain[idx][..., None] * rotated + p + trans[idx])).sum(1)
    qt = quat_multiply(torch.nn.functional.normalize((w[..., None] * q[idx]).sum(1), dim=-1), quats)
    s = log_scales + (w * gain[idx].log()).sum(1, keepdim=True) if field.config["growth"] else log_scales
    return m, qt, s


@pytest.mark.parametrize("growth", [False, True])
def test_skinning_in_closed_form_equals_the_pairwise_sum_with_gradients(growth):
    torch.manual_seed(0)
    means = (torch.rand(200, 3) - 0.5).requires_grad_()
    quats = torch.nn.functional.normalize(torch.randn(200, 4), dim=-1).requires_grad_()
    log_scales = (torch.randn(200, 3) * 0.1 - 3).requires_grad_()
    field = ControlPointField(num_points=24, width=32, depth=2, growth=growth)
    field.setup(means.detach())
    with torch.no_grad():  # large rotations, translations and growth, not the near-identity start
        field.mlp[-1].weight.normal_(0, 0.5)
        field.mlp[-1].bias.normal_(0, 0.5)
    params = [means, quats, log_scales, field.log_radius, *field.mlp.parameters()]
    results = []
    for forward in (field, functools.partial(_skinned_pairwise, field)):
        m, q, s = forward(means, quats, log_scales, 0.7)
        loss = m.sin().sum() + (q * torch.arange(4.0)).sum() + s.pow(2).sum()
        results.append([m, q, s, *torch.autograd.grad(loss, params)])
    assert (results[1][0] - means).norm(dim=-1).mean() > 0.1  # the motion is not near the identity
    for fast, ref in zip(*results):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=5e-5)  # float32 sums in another order
