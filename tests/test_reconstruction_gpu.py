"""gsplat backend vs our PyTorch reference on the same scene (CUDA only; run with ``-s`` to see the differences).

    TORCH_CUDA_ARCH_LIST=9.0 python3 -m pytest -m gpu -s tests/test_reconstruction_gpu.py
"""

import pytest
import torch

from diffusion4d import cameras
from diffusion4d.reconstruction import Gaussians, intrinsics_matrix, rasterize, render_gaussians, viewmats_from_c2w

pytestmark = pytest.mark.gpu

W, H = 128, 96


def scene(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(means=(torch.rand(n, 3, generator=gen) * 2 - 1) * 0.5,
                quats=torch.randn(n, 4, generator=gen),
                scales=0.04 * torch.exp(0.5 * torch.randn(n, 3, generator=gen)),
                opacities=0.05 + 0.9 * torch.rand(n, generator=gen),
                colors=torch.rand(n, 3, generator=gen))


def per_camera_copies(params, count, seed):
    """Camera c's own copy of a scene, as the fit's fine stage renders: means, quats, scales [C, N, ·] moved per
    camera (each view deformed to its own time), opacities and colors shared."""
    gen = torch.Generator().manual_seed(seed)
    shape = (count, *params["means"].shape)
    return {**params, "means": params["means"] + 0.05 * torch.randn(shape, generator=gen),
            "quats": params["quats"] + 0.2 * torch.randn(count, *params["quats"].shape, generator=gen),
            "scales": params["scales"] * torch.exp(0.2 * torch.randn(shape, generator=gen))}


def render(backend, params, viewmats, Ks, backgrounds):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    out = rasterize(**leaves, viewmats=viewmats, Ks=Ks, width=W, height=H, backgrounds=backgrounds, backend=backend)
    out.means2d.retain_grad()
    gen = torch.Generator(device=out.rgb.device).manual_seed(1)
    w = torch.rand(out.rgb.shape, generator=gen, device=out.rgb.device)
    loss = (w * out.rgb).sum() + out.alpha.sum() + 0.1 * (out.depth * out.alpha).sum()
    loss.backward()
    return out, {k: v.grad for k, v in leaves.items()}


def compare(gs, gs_grads, ref, ref_grads, title):
    """Print and check gsplat's outputs and gradients against the torch reference's (means2d and its gradient
    compared as [C, N, 2], whatever layout the backend returned)."""
    C, N = ref.radii.shape
    assert gs.rgb.shape == ref.rgb.shape == (C, H, W, 3) and gs.radii.shape == ref.radii.shape
    diffs = {
        "rgb max abs": (gs.rgb - ref.rgb).abs().max().item(),
        "alpha max abs": (gs.alpha - ref.alpha).abs().max().item(),
        "depth max abs (alpha > 0.1)": (gs.depth - ref.depth)[ref.alpha > 0.1].abs().max().item(),
        "depth*alpha max abs": (gs.depth * gs.alpha - ref.depth * ref.alpha).abs().max().item(),
    }
    visible = ref.radii > 0
    gs_means2d, gs_means2d_grad = gs.means2d.reshape(C, N, 2), gs.means2d.grad.reshape(C, N, 2)
    diffs["means2d max abs (visible)"] = (gs_means2d - ref.means2d)[visible].abs().max().item()
    diffs["visibility mismatches"] = int(((gs.radii > 0) != visible).sum())
    diffs["radii off by > 1 px"] = int(((gs.radii - ref.radii).abs() > 1).sum())
    rel = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-12)).item()  # noqa: E731
    for name in ref_grads:
        diffs[f"grad {name} rel"] = rel(gs_grads[name], ref_grads[name])
    diffs["grad means2d rel"] = rel(gs_means2d_grad[visible], ref.means2d.grad[visible])
    print(f"\ngsplat vs torch reference ({title}, {N} Gaussians, {W}x{H}, fp32):")
    for key, value in diffs.items():
        print(f"  {key:32s} {value:.3e}" if isinstance(value, float) else f"  {key:32s} {value}")

    assert diffs["rgb max abs"] < 1e-3 and diffs["alpha max abs"] < 1e-3
    assert diffs["depth max abs (alpha > 0.1)"] < 1e-3 and diffs["depth*alpha max abs"] < 1e-3
    assert diffs["means2d max abs (visible)"] < 1e-3
    # culling and radii only decide which tiles a Gaussian is tested against; ceil() at a boundary may round apart
    assert diffs["visibility mismatches"] <= 0.01 * visible.sum().item()
    assert diffs["radii off by > 1 px"] <= 0.01 * visible.sum().item()
    for name in [*ref_grads, "means2d"]:
        assert diffs[f"grad {name} rel"] < 0.03, name


def cameras_on_device(indices, device):
    c2w = cameras.orbit_camera_to_world(24, elevation_deg=20)[indices]
    x_fov, y_fov = cameras.fov_xy(39.6, W, H)
    viewmats = viewmats_from_c2w(torch.as_tensor(c2w, dtype=torch.float32)).to(device)
    Ks = intrinsics_matrix(x_fov, y_fov, W, H)[None].expand(len(indices), 3, 3).contiguous().to(device)
    return viewmats, Ks


def test_gsplat_matches_torch_reference():
    pytest.importorskip("gsplat")
    device = torch.device("cuda")
    params = {k: v.to(device) for k, v in scene().items()}
    viewmats, Ks = cameras_on_device([0, 9], device)
    backgrounds = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.4, 0.6]], device=device)
    ref, ref_grads = render("torch", params, viewmats, Ks, backgrounds)
    gs, gs_grads = render("gsplat", params, viewmats, Ks, backgrounds)
    assert gs.radii.shape == ref.radii.shape == (2, 400)
    compare(gs, gs_grads, ref, ref_grads, "2 cameras")


def test_gsplat_matches_torch_reference_on_per_camera_gaussians():
    pytest.importorskip("gsplat")
    device = torch.device("cuda")
    params = {k: v.to(device) for k, v in per_camera_copies(scene(), 3, seed=5).items()}
    viewmats, Ks = cameras_on_device([0, 9, 17], device)
    backgrounds = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.4, 0.6], [0.0, 0.0, 0.0]], device=device)
    ref, ref_grads = render("torch", params, viewmats, Ks, backgrounds)
    gs, gs_grads = render("gsplat", params, viewmats, Ks, backgrounds)
    assert ref.means2d.shape == (3, 400, 2) and gs.radii.shape == (3, 400)
    # gsplat's batch layout, kept because it is the tensor its images depend on: its retained gradient is real
    assert gs.means2d.shape == gs.means2d.grad.shape == (3, 1, 400, 2)
    assert gs.means2d.grad.abs().sum() > 0
    compare(gs, gs_grads, ref, ref_grads, "3 cameras, per-camera Gaussians")


def test_auto_backend_on_cuda_renders_gaussians():
    pytest.importorskip("gsplat")
    g = Gaussians.init_random(500, radius=0.5, seed=0, opacity=0.5).to("cuda")
    c2w = cameras.orbit_camera_to_world(24)[:3]
    x_fov, y_fov = cameras.fov_xy(39.6, 64, 64)
    auto = render_gaussians(g, c2w, x_fov, y_fov, 64, 64)
    ref = render_gaussians(g, c2w, x_fov, y_fov, 64, 64, backend="torch")
    assert auto.rgb.is_cuda and auto.rgb.shape == (3, 64, 64, 3) and auto.radii.dtype == torch.int32
    assert (auto.rgb - ref.rgb).abs().max().item() < 1e-3
