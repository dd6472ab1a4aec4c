"""Rendering posed meshes into multi-view images."""

from diffusion4d.render.rasterizer import Renderer, RenderOutput

__all__ = ["RenderOutput", "Renderer"]
