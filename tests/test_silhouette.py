"""The silhouette chamfer of the fine stage: projection, mask sampling, the loss's values and gradients, and its use
in the fit — tiny, CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffusion4d import cameras
from diffusion4d.reconstruction import losses
from diffusion4d.reconstruction.densify import DensifyConfig
from diffusion4d.reconstruction.fit import FitConfig, fit
from diffusion4d.reconstruction.rasterize import project_gaussians, project_points, viewmats_from_c2w
from diffusion4d.reconstruction.views import mask_pixels, project

SIZE = 32


def _cameras(count=3):
    c2w = torch.as_tensor(cameras.orbit_camera_to_world(count, 0.0, 20.0, 2.0), dtype=torch.float32)
    x_fov, y_fov = cameras.fov_xy(39.6, SIZE, SIZE)
    K = torch.as_tensor(cameras.intrinsics(x_fov, y_fov, SIZE, SIZE), dtype=torch.float32).expand(count, 3, 3)
    return c2w, viewmats_from_c2w(c2w), K


def test_project_points_is_where_the_rasterizer_splats_for_shared_and_per_camera_points():
    c2w, viewmats, Ks = _cameras()
    g = torch.Generator().manual_seed(0)
    points = torch.rand(40, 3, generator=g) - 0.5
    quats = F.normalize(torch.randn(40, 4, generator=g), dim=-1)
    means2d, _, depths, _ = project_gaussians(points, quats, torch.full((40, 3), 0.01), torch.ones(40), viewmats,
                                              Ks, SIZE, SIZE)
    uv, z = project_points(points, viewmats, Ks)
    assert uv.shape == (3, 40, 2) and z.shape == (3, 40)
    torch.testing.assert_close(uv, means2d, atol=1e-4, rtol=0)
    torch.testing.assert_close(z, depths)
    uv_gl, depth_gl = project(points, c2w, Ks)  # the visual hull's projection, from c2w (OpenGL axes)
    torch.testing.assert_close(uv, uv_gl, atol=1e-4, rtol=0)
    torch.testing.assert_close(z, depth_gl, atol=1e-5, rtol=0)
    per_camera = points + torch.tensor([[0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])[:, None]  # [3, 40, 3]
    uv_c, _ = project_points(per_camera, viewmats, Ks)
    for c in range(3):
        torch.testing.assert_close(uv_c[c], project_points(per_camera[c], viewmats[c:c + 1], Ks[c:c + 1])[0][0])


def test_mask_pixels_are_pixel_centres_inside_the_mask_and_an_empty_mask_is_invalid():
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:4, 5:7] = True
    points, valid = mask_pixels(masks, 200)
    assert points.shape == (2, 200, 2) and valid.tolist() == [True, False]
    u, v = points[0].unbind(-1)
    assert set(u.tolist()) == {5.5, 6.5} and set(v.tolist()) == {2.5, 3.5}  # all four pixels drawn, nothing else
    assert torch.equal(points[1], torch.zeros(200, 2))
    assert torch.equal(mask_pixels(masks, 200)[0], points)  # a fixed draw


def test_chamfer_is_zero_on_the_targets_and_counts_neither_invalid_views_nor_transparent_cover():
    targets = torch.tensor([[[1.0, 1.0], [3.0, 1.0]]])
    ones = torch.ones(1, 2)
    valid = torch.tensor([True])
    assert losses.silhouette_chamfer(targets.clone(), ones, targets, valid, 4.0) == 0
    # one point on the first target, one 2 px off the second: inside = (0 + 2)/2, cover = (0 + 2)/2, in widths of 4
    points = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    torch.testing.assert_close(losses.silhouette_chamfer(points, ones, targets, valid, 4.0), torch.tensor(0.5))
    # the off point transparent: it neither needs to be inside nor covers the second target (nearest opaque: 2 px)
    half = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(losses.silhouette_chamfer(points, half, targets, valid, 4.0), torch.tensor(0.25))
    # an invalid second view adds nothing, however far its points are
    two = losses.silhouette_chamfer(torch.cat([points, points + 100]), ones.expand(2, 2), targets.expand(2, 2, 2),
                                    torch.tensor([True, False]), 4.0)
    torch.testing.assert_close(two, torch.tensor(0.5))


def test_chamfer_alone_recovers_a_translation_whose_silhouettes_do_not_overlap():
    """A blob displaced by far more than its size (no pixel overlap, so no photometric gradient) slides back onto
    its silhouettes in three views under the chamfer's gradient."""
    _, viewmats, Ks = _cameras()
    g = torch.Generator().manual_seed(1)
    blob = (torch.rand(200, 3, generator=g) - 0.5) * torch.tensor([0.15, 0.3, 0.1])
    truth = torch.tensor([0.25, -0.1, 0.15])
    target_uv, _ = project_points(blob + truth, viewmats, Ks)
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    for c in range(3):
        px = target_uv[c].floor().long().clamp(0, SIZE - 1)
        masks[c, px[:, 1], px[:, 0]] = True
    targets, valid = mask_pixels(masks, 256)
    shift = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.01)
    start = None
    for _ in range(300):
        uv, _ = project_points(blob + shift, viewmats, Ks)
        loss = losses.silhouette_chamfer(uv, torch.ones(3, 200), targets, valid, SIZE)
        start = float(loss.detach()) if start is None else start
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * start
    assert (shift.detach() - truth).norm() < 0.03, shift


@pytest.fixture(scope="module")
def orbit(tmp_path_factory):
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.render_job import RenderSettings, run_render_job

    root = tmp_path_factory.mktemp("silhouette")
    assets = write_procedural_dataset(root / "assets", count=1, seed=0, progress=False)
    report = run_render_job(assets, root / "orbits", RenderSettings(size=32, frames=6), workers=1, progress=False)
    assert not report.failed, report.summary()
    return root / "orbits" / assets[0].stem


def test_fit_adds_the_chamfer_in_the_fine_stage_only_and_rejects_bad_settings(orbit, tmp_path, monkeypatch):
    from diffusion4d.reconstruction import fit as fit_module

    config = FitConfig(coarse_iters=8, fine_iters=6, size=32, backend="torch", num_points=300, checkpoint_every=0,
                       views_per_step=2, densify=DensifyConfig(start=4, stop=6, every=4),
                       field={"num_points": 16, "width": 16, "depth": 2}, silhouette_weight=0.5,
                       silhouette_gaussians=50)
    calls = []
    real = losses.silhouette_chamfer

    def spy(points2d, weights, targets, valid, scale):
        calls.append((points2d.shape, targets.shape, scale))
        return real(points2d, weights, targets, valid, scale)

    monkeypatch.setattr(fit_module.losses, "silhouette_chamfer", spy)
    asset = fit(orbit, tmp_path / "a", "scgs", config, progress=False, log=lambda *_: None)
    assert len(calls) == 6  # every fine step, no coarse one
    assert all(shape == (2, 50, 2) and targets == (2, 512, 2) and scale == 32 for shape, targets, scale in calls)
    assert all(torch.isfinite(v).all() for v in asset.field.state_dict().values())
    for bad in ({"silhouette_weight": -1.0}, {"silhouette_gaussians": 0}):
        with pytest.raises(ValueError, match="silhouette_weight must be ≥ 0 and silhouette_gaussians ≥ 1"):
            fit(orbit, tmp_path / "b", "scgs", dataclasses.replace(config, **bad), progress=False)
