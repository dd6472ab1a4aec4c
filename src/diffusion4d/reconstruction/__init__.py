"""4D construction (paper Sec. 3.4): Gaussians, their rasterizers (gsplat on CUDA, a PyTorch reference elsewhere),
and export (PLY, orbit videos). The deformation fields and the coarse-to-fine fit build on these."""

from diffusion4d.reconstruction.export import orbit_video_cameras, read_ply, render_orbit_video, write_ply
from diffusion4d.reconstruction.gaussians import SH_C0, Gaussians, quat_multiply, quat_to_rotmat, rgb_to_sh0, sh0_to_rgb
from diffusion4d.reconstruction.rasterize import (
    RenderOutput,
    intrinsics_matrix,
    project_gaussians,
    rasterize,
    render_gaussians,
    viewmats_from_c2w,
)

__all__ = [
    "SH_C0",
    "Gaussians",
    "RenderOutput",
    "intrinsics_matrix",
    "orbit_video_cameras",
    "project_gaussians",
    "quat_multiply",
    "quat_to_rotmat",
    "rasterize",
    "read_ply",
    "render_gaussians",
    "render_orbit_video",
    "rgb_to_sh0",
    "sh0_to_rgb",
    "viewmats_from_c2w",
    "write_ply",
]
