"""diffusion4d: an open implementation of Diffusion4D (NeurIPS 2024)."""

__version__ = "0.1.0"
