"""Gaussians, the PyTorch reference rasterizer and PLY export: hand-computed values, a dense per-pixel reference,
gradients, camera conventions and round trips (all on the CPU, tiny images)."""

import math

import numpy as np
import pytest
import torch

from diffusion4d import cameras
from diffusion4d.data import layout
from diffusion4d.reconstruction import (
    Gaussians,
    intrinsics_matrix,
    project_gaussians,
    quat_multiply,
    quat_to_rotmat,
    rasterize,
    render_gaussians,
    viewmats_from_c2w,
)
from diffusion4d.reconstruction.gaussians import rows
from diffusion4d.reconstruction.rasterize import ALPHA_MAX, ALPHA_MIN, EPS2D, T_MIN

FRONT = cameras.orbit_camera_to_world(24)[:1]  # camera at (0, 0, 2) looking down −Z; +X is image right


def one(means, scales, opacities, colors, quats=None, dtype=torch.float32):
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = len(means)
    if quats is None:
        quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=dtype)
    return dict(means=means, quats=torch.as_tensor(quats, dtype=dtype).reshape(n, 4),
                scales=torch.as_tensor(scales, dtype=dtype).reshape(n, 3),
                opacities=torch.as_tensor(opacities, dtype=dtype).reshape(n),
                colors=torch.as_tensor(colors, dtype=dtype).reshape(n, 3))


def cams(c2w, width, height, fov_deg=39.6, dtype=torch.float32):
    x_fov, y_fov = cameras.fov_xy(fov_deg, width, height)
    viewmats = viewmats_from_c2w(torch.as_tensor(c2w, dtype=dtype))
    Ks = intrinsics_matrix(x_fov, y_fov, width, height).to(dtype)[None].expand(len(viewmats), 3, 3)
    return dict(viewmats=viewmats, Ks=Ks, width=width, height=height), (x_fov, y_fov)


def dense_reference(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds=None):
    """Every Gaussian at every pixel, one Gaussian at a time in depth order: gsplat's per-pixel loop, transcribed."""
    means2d, conics, depths, radii = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
    v, u = torch.meshgrid(torch.arange(height, dtype=means.dtype) + 0.5, torch.arange(width, dtype=means.dtype) + 0.5,
                          indexing="ij")
    images, alphas, depth_maps = [], [], []
    for c in range(len(viewmats)):
        T = torch.ones(height, width, dtype=means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        rgb = torch.zeros(height, width, 3, dtype=means.dtype)
        zsum = torch.zeros(height, width, dtype=means.dtype)
        visible = torch.nonzero((radii[c] > 0).any(-1)).squeeze(1)
        for i in visible[torch.argsort(depths[c, visible])].tolist():
            dx, dy = u - means2d[c, i, 0], v - means2d[c, i, 1]
            a, b, cc = conics[c, i]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp(opacities[i] * torch.exp(-sigma), max=ALPHA_MAX)
            skip = (sigma < 0) | (alpha < ALPHA_MIN) | done
            next_T = T * (1 - alpha)
            stop = ~skip & (next_T <= T_MIN)
            done = done | stop
            use = ~skip & ~stop
            w = torch.where(use, alpha * T, torch.zeros_like(T))
            rgb = rgb + w[..., None] * colors[i]
            zsum = zsum + w * depths[c, i]
            T = torch.where(use, next_T, T)
        bg = torch.ones(3, dtype=means.dtype) if backgrounds is None else backgrounds[c]
        images.append(rgb + T[..., None] * bg)
        alphas.append(1 - T)
        depth_maps.append(zsum / (1 - T).clamp_min(1e-10))
    return torch.stack(images), torch.stack(alphas)[..., None], torch.stack(depth_maps)[..., None]


# -- quaternions and the Gaussians container ------------------------------------------------------------------
def test_quat_to_rotmat_known_rotation_and_normalisation():
    half = math.radians(90) / 2  # 90° about +Z, given with length 3
    R = quat_to_rotmat(3 * torch.tensor([[math.cos(half), 0, 0, math.sin(half)]]))[0]
    assert torch.allclose(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)


def test_quat_multiply_composes_rotations():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-5)


def test_gaussians_helpers_and_state_dict_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    g = Gaussians.init_random(50, radius=0.4, seed=3, opacity=0.2)
    assert g.num == 50 and g.means.norm(dim=-1).max() <= 0.4 + 1e-6
    assert torch.allclose(g.opacities, torch.full((50,), 0.2))
    assert torch.allclose(g.scales, g.log_scales.exp()) and g.rgb.min() >= 0 and g.rgb.max() <= 1
    save_file(g.state_dict(), tmp_path / "g.safetensors")
    back = Gaussians.from_state_dict(load_file(tmp_path / "g.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(g.parameters().values(), back.parameters().values()))
    g.requires_grad_()
    assert all(t.requires_grad and t.is_leaf for t in g.parameters().values())
    assert not any(t.requires_grad for t in g.detach().parameters().values())


def test_init_from_points_scale_is_nearest_neighbour_distance():
    points = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0]])
    g = Gaussians.init_from_points(points, torch.full((4, 3), 0.25))
    # mean distance to the 3 nearest: end points (0.1 + 0.2 + 0.3)/3, inner ones (0.1 + 0.1 + 0.2)/3
    expected = torch.tensor([0.2, 0.4 / 3, 0.4 / 3, 0.2])
    assert torch.allclose(g.scales[:, 0], expected, atol=1e-6)
    assert torch.allclose(g.rgb, torch.full((4, 3), 0.25), atol=1e-6)


def test_gaussians_shape_error_names_field():
    g = Gaussians.init_random(4)
    with pytest.raises(ValueError, match=r"sh0 must have shape \[4, 3\].*\[4, 2\]"):
        Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, torch.zeros(4, 2))


# -- one Gaussian, by hand -----------------------------------------------------------------------------------------
def test_single_gaussian_head_on_matches_hand_computation():
    W = H = 33  # odd: the image centre (16.5, 16.5) is the centre of pixel (16, 16)
    camera, (x_fov, y_fov) = cams(FRONT, W, H)
    s, o, color, bg = 0.05, 0.8, torch.tensor([0.2, 0.6, 0.9]), torch.tensor([[0.1, 0.3, 0.5]])
    theta = math.radians(30)  # anisotropic, rotated about the viewing axis: exercises the off-diagonal term
    quat = [math.cos(theta / 2), 0, 0, math.sin(theta / 2)]
    scene = one([0, 0, 0], [2 * s, s, s], [o], color, quats=[quat])
    out = rasterize(**scene, **camera, backgrounds=bg, backend="torch")

    uv, depth = cameras.project(np.zeros((1, 3)), FRONT[0], x_fov, y_fov, W, H)
    assert torch.allclose(out.means2d[0, 0], torch.as_tensor(uv[0], dtype=torch.float32), atol=1e-4)
    assert out.alpha[0, 16, 16, 0].item() == pytest.approx(o, abs=1e-5)  # peak α = opacity (fp32)
    assert torch.allclose(out.rgb[0, 16, 16], color * o + bg[0] * (1 - o), atol=1e-5)
    assert out.depth[0, 16, 16, 0].item() == pytest.approx(depth[0], abs=1e-5)

    # footprint: −2 ln(α/o) = dᵀ Σ⁻¹ d; fit (a, b, c) by least squares and compare with the analytic Σ_2D
    f = W / 2 / math.tan(x_fov / 2)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    flip = np.diag([1.0, -1.0])  # world +Y is image up, pixel rows grow down
    sigma_img = (f / depth[0]) ** 2 * flip @ rot @ np.diag([(2 * s) ** 2, s**2]) @ rot.T @ flip + EPS2D * np.eye(2)
    alpha = out.alpha[0, ..., 0].double().numpy()
    v, u = np.mgrid[0:H, 0:W] + 0.5
    dx, dy, keep = u - uv[0, 0], v - uv[0, 1], alpha > 0.05
    A = np.stack([dx[keep] ** 2, 2 * dx[keep] * dy[keep], dy[keep] ** 2], -1)
    a, b, c = np.linalg.lstsq(A, -2 * np.log(alpha[keep] / o), rcond=None)[0]
    assert np.allclose(np.linalg.inv([[a, b], [b, c]]), sigma_img, rtol=2e-3)
    assert out.radii[0, 0].item() == math.ceil(math.sqrt(2 * math.log(255 * o)) * math.sqrt(sigma_img.diagonal().max()))


def test_two_gaussians_nearer_occludes_with_hand_computed_transmittance():
    W = H = 17
    camera, _ = cams(FRONT, W, H)
    near, far = ([0, 0, 0.5], 0.6, [1.0, 0, 0]), ([0, 0, -0.5], 0.7, [0, 0, 1.0])  # camera depths 1.5 and 2.5
    for first, second in ((near, far), (far, near)):  # input order must not matter: compositing sorts by depth
        scene = one([first[0], second[0]], [[0.1] * 3] * 2, [first[1], second[1]], [first[2], second[2]])
        out = rasterize(**scene, **camera, backend="torch")
        T1, T2 = 1 - 0.6, (1 - 0.6) * (1 - 0.7)
        expected = 0.6 * torch.tensor([1.0, 0, 0]) + T1 * 0.7 * torch.tensor([0, 0, 1.0]) + T2 * torch.ones(3)
        assert torch.allclose(out.rgb[0, 8, 8], expected, atol=1e-5)
        assert out.alpha[0, 8, 8, 0].item() == pytest.approx(1 - T2, abs=1e-5)
        assert out.depth[0, 8, 8, 0].item() == pytest.approx((0.6 * 1.5 + T1 * 0.7 * 2.5) / (1 - T2), abs=1e-5)


def test_opaque_front_gaussian_stops_compositing():
    camera, _ = cams(FRONT, 9, 9)
    scene = one([[0, 0, 0.5], [0, 0, -0.5]], [[0.2] * 3] * 2, [0.9999, 0.95], [[1.0, 0, 0], [0, 1.0, 0]])
    out = rasterize(**scene, **camera, backend="torch")
    # red's α clamps to 0.999 → T = 1e-3; green would take T to 5e-5 ≤ 1e-4, so the pixel stops before it
    assert torch.allclose(out.rgb[0, 4, 4], torch.tensor([0.999, 0, 0]) + 1e-3, atol=1e-5)


# -- the tiled renderer against the dense reference; gradients ------------------------------------------------------
def random_scene(n, seed, dtype=torch.float32, radius=0.5, scale=0.08):
    gen = torch.Generator().manual_seed(seed)
    return dict(means=(torch.rand(n, 3, generator=gen) * 2 - 1).to(dtype) * radius,
                quats=torch.randn(n, 4, generator=gen).to(dtype),
                scales=(scale * torch.exp(0.5 * torch.randn(n, 3, generator=gen))).to(dtype),
                opacities=(0.05 + 0.9 * torch.rand(n, generator=gen)).to(dtype),
                colors=torch.rand(n, 3, generator=gen).to(dtype))


@pytest.mark.parametrize("tile_size", [8, 16])
def test_tiled_matches_dense_reference_with_gradients(tile_size):
    c2w = cameras.orbit_camera_to_world(24, elevation_deg=20)[[0, 7]]
    camera, _ = cams(c2w, 40, 29)
    scene = {k: v.requires_grad_() for k, v in random_scene(60, seed=1).items()}
    bg = torch.tensor([[1.0, 1, 1], [0.2, 0.4, 0.6]])
    out = rasterize(**scene, **camera, backgrounds=bg, backend="torch", tile_size=tile_size)
    rgb, alpha, depth = dense_reference(**scene, **camera, backgrounds=bg)
    assert out.rgb.shape == (2, 29, 40, 3) and out.alpha.shape == out.depth.shape == (2, 29, 40, 1)
    for got, want in ((out.rgb, rgb), (out.alpha, alpha), (out.depth, depth)):
        assert (got - want).abs().max().item() < 2e-5
    weights = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(0))
    loss_of = lambda r, a, d: (r * weights).sum() + a.sum() + 0.1 * d.sum()  # noqa: E731
    grads = torch.autograd.grad(loss_of(out.rgb, out.alpha, out.depth), list(scene.values()))
    grads_ref = torch.autograd.grad(loss_of(rgb, alpha, depth), list(scene.values()))
    for name, g, r in zip(scene, grads, grads_ref):
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-4 * r.abs().max().item()), name


def test_rows_is_indexing_with_an_index_order_backward(two_threads):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=gen, requires_grad=True)
    index = torch.randint(0, 500, (300, 40), generator=gen)  # 36,000 gradient values: above torch's grain size
    upstream = torch.randn(300, 40, 3, generator=gen)
    assert torch.equal(rows(x, index), x[index])
    assert torch.equal(rows(x[:, 0], index), x[:, 0][index])
    grads = [torch.autograd.grad((rows(x, index) * upstream).sum(), x)[0] for _ in range(4)]
    assert all(torch.equal(g, grads[0]) for g in grads[1:])
    want = torch.zeros(500, 3, dtype=torch.float64).index_add_(0, index.flatten(), upstream.reshape(-1, 3).double())
    assert torch.allclose(grads[0].double(), want, atol=1e-5)


def test_torch_backend_gradients_are_the_same_run_to_run(two_threads):
    """The CPU fit is reproducible only if the rasterizer's backward is (BENCHMARKS.md, session 20: before, two fits
    of one orbit in one process differed by up to 0.06 in opacity logits after 100 iterations)."""
    c2w = cameras.orbit_camera_to_world(24, elevation_deg=20)[[0, 7]]
    camera, _ = cams(c2w, 96, 96)
    scene = {k: v.requires_grad_() for k, v in random_scene(3000, seed=3, scale=0.05).items()}
    weights = torch.rand(2, 96, 96, 3, generator=torch.Generator().manual_seed(0))

    def grads():
        out = rasterize(**scene, **camera, backend="torch")
        return torch.autograd.grad((out.rgb * weights).sum() + out.alpha.sum(), list(scene.values()))

    first = grads()
    for _ in range(2):
        for name, a, b in zip(scene, first, grads()):
            assert torch.equal(a, b), name


def test_gradcheck_float64():
    # big, semi-transparent Gaussians over a tiny image: every pixel sees every Gaussian above the 1/255 cut and
    # T stays well above 1e-4, so the image is a smooth function of all parameters
    camera, _ = cams(FRONT, 10, 8, dtype=torch.float64)
    scene = one([[0.05, 0.02, 0.1], [-0.04, 0.0, -0.1], [0.0, -0.05, 0.3]],
                [[0.15, 0.1, 0.12], [0.12, 0.14, 0.1], [0.1, 0.1, 0.2]], [0.5, 0.6, 0.4],
                [[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.3, 0.7]],
                quats=[[0.9, 0.1, 0.2, 0.3], [0.8, -0.3, 0.1, 0.2], [1.0, 0.0, 0.3, -0.1]], dtype=torch.float64)
    names = list(scene)
    gen = torch.Generator().manual_seed(0)
    w_rgb, w_alpha, w_depth = (torch.randn(2, 1, 8, 10, k, generator=gen, dtype=torch.float64) for k in (3, 1, 1))

    def f(*tensors):  # a few random projections of the images: every input's gradient, far fewer backward passes
        out = rasterize(**dict(zip(names, tensors)), **camera, backend="torch", tile_size=8)
        return torch.cat([(w_rgb * out.rgb).sum((1, 2, 3, 4)), (w_alpha * out.alpha).sum((1, 2, 3, 4)),
                          (w_depth * out.depth).sum((1, 2, 3, 4))])

    inputs = tuple(t.clone().requires_grad_() for t in scene.values())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_means2d_retain_grad():
    camera, _ = cams(FRONT, 24, 24)
    scene = {k: v.requires_grad_() for k, v in random_scene(20, seed=2).items()}
    out = rasterize(**scene, **camera, backend="torch")
    out.means2d.retain_grad()
    out.rgb.sum().backward()
    assert out.means2d.grad.shape == (1, 20, 2)
    visible = out.radii[0] > 0
    assert out.means2d.grad[0, visible].abs().sum() > 0 and out.means2d.grad[0, ~visible].abs().sum() == 0


def per_camera_copies(scene, count, seed):
    """Camera c's own copy of a scene (means, quats, scales [C, N, ·] moved per camera; opacities, colors shared)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (count, *scene["means"].shape)
    return {**scene, "means": scene["means"] + 0.05 * torch.randn(shape, generator=gen),
            "quats": scene["quats"] + 0.2 * torch.randn(count, *scene["quats"].shape, generator=gen),
            "scales": scene["scales"] * torch.exp(0.2 * torch.randn(shape, generator=gen))}


def test_per_camera_gaussians_equal_one_render_per_camera_with_gradients():
    c2w = cameras.orbit_camera_to_world(24, elevation_deg=20)[[0, 7, 13]]
    camera, _ = cams(c2w, 24, 20)
    scene = {k: v.requires_grad_() for k, v in per_camera_copies(random_scene(40, seed=3), 3, seed=4).items()}
    bg = torch.tensor([[1.0, 1, 1], [0.2, 0.4, 0.6], [0.0, 0.0, 0.0]])
    out = rasterize(**scene, **camera, backgrounds=bg, backend="torch")
    assert out.rgb.shape == (3, 20, 24, 3) and out.means2d.shape == (3, 40, 2) and out.radii.shape == (3, 40)
    singles = [rasterize(**{k: v[c] if v.dim() == 3 else v for k, v in scene.items()},
                         viewmats=camera["viewmats"][c:c + 1], Ks=camera["Ks"][c:c + 1], width=24, height=20,
                         backgrounds=bg[c:c + 1], backend="torch") for c in range(3)]
    for name in ("rgb", "alpha", "depth", "means2d", "radii"):
        torch.testing.assert_close(getattr(out, name), torch.cat([getattr(o, name) for o in singles]), atol=1e-6,
                                   rtol=1e-6, msg=name)
    assert (out.radii > 0).sum() > 60
    weights = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(0))
    loss_of = lambda r, a, d: (r * weights).sum() + a.sum() + 0.1 * (d * a).sum()  # noqa: E731
    grads = torch.autograd.grad(loss_of(out.rgb, out.alpha, out.depth), [*scene.values(), out.means2d])
    cat = lambda name: torch.cat([getattr(o, name) for o in singles])  # noqa: E731
    grads_ref = torch.autograd.grad(loss_of(cat("rgb"), cat("alpha"), cat("depth")),
                                    [*scene.values(), *(o.means2d for o in singles)])
    grads_ref = [*grads_ref[:5], torch.cat(grads_ref[5:])]
    for name, g, r in zip([*scene, "means2d"], grads, grads_ref):
        assert r.abs().max() > 0, name
        torch.testing.assert_close(g, r, atol=1e-6 * r.abs().max().item(), rtol=1e-4, msg=name)
    # identical copies render as the shared Gaussians do
    shared = random_scene(40, seed=3)
    copies = {**shared, **{k: shared[k].expand(3, *shared[k].shape) for k in ("means", "quats", "scales")}}
    a, b = (rasterize(**s, **camera, backend="torch") for s in (shared, copies))
    for name in ("rgb", "alpha", "depth", "means2d", "radii"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-6, rtol=1e-6, msg=name)


# -- camera conventions -------------------------------------------------------------------------------------------
def test_projection_matches_cameras_project():
    c2w = cameras.orbit_camera_to_world(24, start_deg=33, elevation_deg=15)
    x_fov, y_fov = cameras.fov_xy(39.6, 64, 48)
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (30, 3))
    scene = one(points, [[0.01] * 3] * 30, [0.5] * 30, [[0.5] * 3] * 30)
    camera, _ = cams(c2w, 64, 48)
    means2d, _, depths, _ = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["opacities"],
                                              camera["viewmats"], camera["Ks"], 64, 48)
    for i in range(len(c2w)):
        uv, depth = cameras.project(points, c2w[i], x_fov, y_fov, 64, 48)
        assert np.allclose(means2d[i].numpy(), uv, atol=1e-3)
        assert np.allclose(depths[i].numpy(), depth, atol=1e-5)


def test_orbit_read_from_disk_renders_where_cameras_project_says(tmp_path):
    c2w = cameras.orbit_camera_to_world(5, start_deg=90.0)
    x_fov, y_fov = cameras.fov_xy(39.6, 32, 32)
    for i in range(5):  # a tiny orbit folder in the official layout
        layout.write_view(tmp_path, layout.DYNAMIC, i, np.zeros((32, 32, 4), np.uint8), c2w[i], x_fov, y_fov)
    orbit = layout.read_orbit(tmp_path)
    point = np.array([[0.3, 0.1, -0.2]])
    g = Gaussians.init_from_points(torch.tensor(point, dtype=torch.float32), torch.tensor([[1.0, 0.0, 0.0]]),
                                   opacity=0.9, scale=0.02)
    out = render_gaussians(g, orbit.c2w, orbit.x_fov, orbit.y_fov, 32, 32, backend="torch")
    for i in range(5):
        uv, _ = cameras.project(point, orbit.c2w[i], orbit.x_fov, orbit.y_fov, 32, 32)
        assert np.allclose(out.means2d[i, 0].numpy(), uv[0], atol=1e-3)
        row, col = np.unravel_index(out.alpha[i, ..., 0].argmax().item(), (32, 32))
        assert abs(col + 0.5 - uv[0, 0]) <= 1 and abs(row + 0.5 - uv[0, 1]) <= 1


def test_front_camera_axes():
    camera, _ = cams(FRONT, 32, 32)  # camera at +Z: world +X appears right, world +Y appears up
    scene = one([[0.3, 0, 0], [0, 0.3, 0], [0, 0, 3.0]], [[0.01] * 3] * 3, [0.5] * 3, [[0.5] * 3] * 3)
    out = rasterize(**scene, **camera, backend="torch")
    assert out.means2d[0, 0, 0] > 16 and abs(out.means2d[0, 0, 1] - 16) < 1e-4
    assert out.means2d[0, 1, 1] < 16 and abs(out.means2d[0, 1, 0] - 16) < 1e-4
    assert out.radii[0, 2] == 0  # behind the camera: culled


# -- bad input -------------------------------------------------------------------------------------------------------
def test_shape_mismatch_names_the_argument():
    camera, _ = cams(FRONT, 8, 8)
    scene = random_scene(5, seed=0)
    with pytest.raises(ValueError, match=r"opacities must have shape \[5\].*got \[5, 1\]"):
        rasterize(**{**scene, "opacities": scene["opacities"][:, None]}, **camera)
    with pytest.raises(ValueError, match=r"Ks must have shape \[1, 3, 3\].*got \[2, 3, 3\]"):
        rasterize(**scene, **{**camera, "Ks": camera["Ks"].repeat(2, 1, 1)})
    with pytest.raises(ValueError, match=r"backgrounds must have shape \[1, 3\]"):
        rasterize(**scene, **camera, backgrounds=torch.ones(3))
    per_camera = {**scene, "means": scene["means"][None]}  # [1, 5, 3]: quats and scales must follow
    with pytest.raises(ValueError, match=r"quats must have shape \[1, 5, 4\].*per-camera Gaussians.*got \[5, 4\]"):
        rasterize(**per_camera, **camera)
    with pytest.raises(ValueError, match=r"means must have shape \[1, 5, 3\].*C = 1 cameras.*got \[2, 5, 3\]"):
        rasterize(**{**scene, **{k: scene[k].expand(2, *scene[k].shape) for k in ("means", "quats", "scales")}},
                  **camera)


def test_nan_means_is_a_clear_error():
    camera, _ = cams(FRONT, 8, 8)
    scene = random_scene(5, seed=0)
    scene["means"][2, 1] = float("nan")
    with pytest.raises(ValueError, match="means contains NaN"):
        rasterize(**scene, **camera)


def test_gsplat_backend_on_cpu_is_a_clear_error():
    camera, _ = cams(FRONT, 8, 8)
    with pytest.raises(ValueError, match="gsplat backend needs CUDA"):
        rasterize(**random_scene(3, seed=0), **camera, backend="gsplat")


# -- export ------------------------------------------------------------------------------------------------------
STANDARD_HEADER = (
    "ply\nformat binary_little_endian 1.0\nelement vertex 7\n"
    + "".join(f"property float {n}\n" for n in
              ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
               "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    + "end_header\n"
)


def test_ply_round_trip_is_bitwise_and_header_is_standard(tmp_path):
    from diffusion4d.reconstruction import read_ply, write_ply

    g = Gaussians.init_random(7, seed=5)
    g.quats.copy_(torch.randn(7, 4))  # unnormalised quaternions survive as they are
    path = write_ply(tmp_path / "asset.ply", g)
    raw = path.read_bytes()
    assert raw.startswith(STANDARD_HEADER.encode())
    assert len(raw) == len(STANDARD_HEADER) + 7 * 17 * 4
    back = read_ply(path)
    for name, t in g.parameters().items():
        assert torch.equal(back.parameters()[name], t), name
    # the per-vertex record is (x y z, zero normals, f_dc, opacity logit, log scales, quaternion w x y z)
    first = np.frombuffer(raw[len(STANDARD_HEADER):], "<f4", count=17)
    assert np.array_equal(first[3:6], np.zeros(3))
    assert first[9] == g.opacity_logits[0].item() and np.array_equal(first[13:], g.quats[0].numpy())


def test_ply_with_zero_sh_rest_reads_back(tmp_path):
    from diffusion4d.reconstruction import read_ply, write_ply

    g = Gaussians.init_random(3, seed=1)
    raw = write_ply(tmp_path / "a.ply", g, sh_rest_zeros=True).read_bytes()
    assert b"property float f_rest_44\nproperty float opacity\n" in raw
    assert torch.equal(read_ply(tmp_path / "a.ply").means, g.means)


def test_read_ply_rejects_non_3dgs_files(tmp_path):
    from diffusion4d.reconstruction import read_ply

    mesh = tmp_path / "mesh.ply"
    mesh.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                     b"property float z\nproperty uchar red\nend_header\n" + bytes(13))
    with pytest.raises(ValueError, match=r"mesh\.ply: vertex property 'uchar red' is not a float"):
        read_ply(mesh)
    points = tmp_path / "points.ply"
    points.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                       b"property float y\nproperty float z\nend_header\n" + bytes(12))
    with pytest.raises(ValueError, match=r"points\.ply: not a 3DGS PLY \(missing vertex properties \['f_dc_0'"):
        read_ply(points)
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match=r"ascii\.ply: only binary_little_endian"):
        read_ply(ascii_ply)
    with pytest.raises(FileNotFoundError, match="nothere.ply"):
        read_ply(tmp_path / "nothere.ply")


def test_render_orbit_video_writes_mp4_and_gif(tmp_path):
    import imageio.v3 as iio

    from diffusion4d.reconstruction import render_orbit_video

    g = Gaussians.init_random(200, radius=0.5, seed=0, opacity=0.5)
    seen = []

    def render_fn(c2w, x_fov, y_fov, width, height, t):
        seen.append(t)
        return render_gaussians(g, c2w, x_fov, y_fov, width, height, backend="torch").rgb[0]

    mp4, gif = render_orbit_video(render_fn, tmp_path / "orbit.mp4", times=[0.0, 1.0], num_views=4, size=32)
    assert mp4.name == "orbit.mp4" and gif.name == "orbit.gif" and mp4.stat().st_size > 0
    assert seen == [0.0] * 4 + [1.0] * 4
    frames = iio.imread(gif)
    assert frames.shape[0] == 8 and frames.shape[1:3] == (32, 32)
