"""Rendering posed meshes into multi-view images."""

from diffusion4d.render.rasterizer import RenderOutput, Renderer

__all__ = ["RenderOutput", "Renderer"]
