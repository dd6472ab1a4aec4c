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


def render(backend, params, viewmats, Ks, backgrounds):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    out = rasterize(**leaves, viewmats=viewmats, Ks=Ks, width=W, height=H, backgrounds=backgrounds, backend=backend)
    out.means2d.retain_grad()
    gen = torch.Generator(device="cuda").manual_seed(1)
    w = torch.rand(out.rgb.shape, generator=gen, device="cuda")
    loss = (w * out.rgb).sum() + out.alpha.sum() + 0.1 * (out.depth * out.alpha).sum()
    loss.backward()
    return out, {k: v.grad for k, v in leaves.items()}


def test_gsplat_matches_torch_reference():
    pytest.importorskip("gsplat")
    device = torch.device("cuda")
    params = {k: v.to(device) for k, v in scene().items()}
    c2w = cameras.orbit_camera_to_world(24, elevation_deg=20)[[0, 9]]
    x_fov, y_fov = cameras.fov_xy(39.6, W, H)
    viewmats = viewmats_from_c2w(torch.as_tensor(c2w, dtype=torch.float32)).to(device)
    Ks = intrinsics_matrix(x_fov, y_fov, W, H)[None].expand(2, 3, 3).contiguous().to(device)
    backgrounds = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.4, 0.6]], device=device)

    ref, ref_grads = render("torch", params, viewmats, Ks, backgrounds)
    gs, gs_grads = render("gsplat", params, viewmats, Ks, backgrounds)
    assert gs.rgb.shape == ref.rgb.shape == (2, H, W, 3) and gs.radii.shape == ref.radii.shape == (2, 400)

    diffs = {
        "rgb max abs": (gs.rgb - ref.rgb).abs().max().item(),
        "alpha max abs": (gs.alpha - ref.alpha).abs().max().item(),
        "depth max abs (alpha > 0.1)": (gs.depth - ref.depth)[ref.alpha > 0.1].abs().max().item(),
        "depth*alpha max abs": (gs.depth * gs.alpha - ref.depth * ref.alpha).abs().max().item(),
    }
    visible = ref.radii > 0
    diffs["means2d max abs (visible)"] = (gs.means2d - ref.means2d)[visible].abs().max().item()
    diffs["visibility mismatches"] = int(((gs.radii > 0) != visible).sum())
    diffs["radii off by > 1 px"] = int(((gs.radii - ref.radii).abs() > 1).sum())
    rel = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-12)).item()  # noqa: E731
    for name in params:
        diffs[f"grad {name} rel"] = rel(gs_grads[name], ref_grads[name])
    diffs["grad means2d rel"] = rel(gs.means2d.grad[visible], ref.means2d.grad[visible])
    print("\ngsplat vs torch reference (2 cameras, 400 Gaussians, 128x96, fp32):")
    for key, value in diffs.items():
        print(f"  {key:32s} {value:.3e}" if isinstance(value, float) else f"  {key:32s} {value}")

    assert diffs["rgb max abs"] < 1e-3 and diffs["alpha max abs"] < 1e-3
    assert diffs["depth max abs (alpha > 0.1)"] < 1e-3 and diffs["depth*alpha max abs"] < 1e-3
    assert diffs["means2d max abs (visible)"] < 1e-3
    # culling and radii only decide which tiles a Gaussian is tested against; ceil() at a boundary may round apart
    assert diffs["visibility mismatches"] <= 0.01 * visible.sum().item()
    assert diffs["radii off by > 1 px"] <= 0.01 * visible.sum().item()
    for name in [*params, "means2d"]:
        assert diffs[f"grad {name} rel"] < 0.03, name


def test_auto_backend_on_cuda_renders_gaussians():
    pytest.importorskip("gsplat")
    g = Gaussians.init_random(500, radius=0.5, seed=0, opacity=0.5).to("cuda")
    c2w = cameras.orbit_camera_to_world(24)[:3]
    x_fov, y_fov = cameras.fov_xy(39.6, 64, 64)
    auto = render_gaussians(g, c2w, x_fov, y_fov, 64, 64)
    ref = render_gaussians(g, c2w, x_fov, y_fov, 64, 64, backend="torch")
    assert auto.rgb.is_cuda and auto.rgb.shape == (3, 64, 64, 3) and auto.radii.dtype == torch.int32
    assert (auto.rgb - ref.rgb).abs().max().item() < 1e-3
