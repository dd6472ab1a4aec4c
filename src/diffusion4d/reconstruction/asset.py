"""The 4D asset: canonical Gaussians + a deformation field → Gaussians, renders and PLY at any time t ∈ [0, 1].

On disk (``Asset4D.save``)::

    asset.json                 method, field config (its constructor arguments), T, format version
    canonical.safetensors      the canonical Gaussians (Gaussians.state_dict())
    deformation.safetensors    the field's weights

and ``Asset4D.export`` adds ``ply/time_{i:02d}.ply`` for the T timestamps τ_i and 36-view orbit videos.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from diffusion4d import cameras
from diffusion4d.io import write_bytes_atomic, write_json_atomic
from diffusion4d.reconstruction.deformation import field_from_config
from diffusion4d.reconstruction.gaussians import Gaussians
from diffusion4d.reconstruction.rasterize import render_gaussians

FORMAT = "diffusion4d-asset4d/1"


class Asset4D:
    """``canonical`` Gaussians deformed by ``field`` (a HexPlaneField or ControlPointField) to time t."""

    def __init__(self, canonical: Gaussians, field: nn.Module, method: str, num_views: int):
        self.canonical, self.field, self.method, self.num_views = canonical, field, method, int(num_views)

    @property
    def timestamps(self) -> list[float]:
        return [float(t) for t in cameras.orbit_timestamps(self.num_views)]

    @torch.no_grad()
    def at(self, t: float) -> Gaussians:
        """The Gaussians at time t."""
        g = self.canonical
        means, quats, log_scales = self.field(g.means, g.quats, g.log_scales, float(t))
        return Gaussians(means, quats, log_scales, g.opacity_logits, g.sh0)

    @torch.no_grad()
    def render(self, c2w, x_fov: float, y_fov: float, width: int, height: int, t: float,
               backend: str = "auto") -> torch.Tensor:
        """RGB [H, W, 3] in [0, 1] on white, from a camera-to-world c2w [4, 4] (OpenGL axes, glTF world)."""
        return render_gaussians(self.at(t), c2w, x_fov, y_fov, width, height, backend=backend).rgb[0]

    def to(self, device) -> Asset4D:
        return Asset4D(self.canonical.to(device), self.field.to(device), self.method, self.num_views)

    # -- files ---------------------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        tensors = {k: v.cpu() for k, v in self.canonical.state_dict().items()}
        write_bytes_atomic(folder / "canonical.safetensors", safetensors.torch.save(tensors))
        weights = {k: v.detach().cpu().contiguous() for k, v in self.field.state_dict().items()}
        write_bytes_atomic(folder / "deformation.safetensors", safetensors.torch.save(weights))
        write_json_atomic(folder / "asset.json", {"format": FORMAT, "method": self.method,
                                                  "num_views": self.num_views, "field_config": self.field.config})
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> Asset4D:
        folder = Path(folder)
        meta_path = folder / "asset.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: not a 4D asset folder (no asset.json)")
        try:
            meta = json.loads(meta_path.read_text())
            field = field_from_config(meta["method"], meta["field_config"], meta_path)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{meta_path}: not a valid asset description ({exc})") from None
        for name in ("canonical.safetensors", "deformation.safetensors"):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder / name}: missing")
        canonical = Gaussians.from_state_dict(safetensors.torch.load_file(folder / "canonical.safetensors"))
        field.load_state_dict(safetensors.torch.load_file(folder / "deformation.safetensors"))
        return cls(canonical, field.eval(), meta["method"], meta["num_views"]).to(device)

    def export(self, folder: str | Path, video_times=(0.0, 0.5, 1.0), num_views: int = 36, size: int = 256,
               backend: str = "auto") -> list[Path]:
        """``ply/time_{i:02d}.ply`` for the T timestamps and one 36-view orbit (MP4 + GIF) per time in
        ``video_times`` (``renders/orbit_t0.50.mp4`` …); returns the paths written."""
        from diffusion4d.reconstruction.export import render_orbit_video, write_ply

        folder = Path(folder)
        written = [write_ply(folder / "ply" / f"time_{i:02d}.ply", self.at(t).to("cpu"))
                   for i, t in enumerate(self.timestamps)]

        def render_fn(c2w, x_fov, y_fov, width, height, t):
            return self.render(c2w, x_fov, y_fov, width, height, t, backend=backend)

        for t in video_times:
            written += render_orbit_video(render_fn, folder / "renders" / f"orbit_t{t:.2f}", times=[float(t)],
                                          num_views=num_views, size=size)
        return written
