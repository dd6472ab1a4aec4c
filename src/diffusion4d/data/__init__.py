"""Orbit rendering jobs, curation, the on-disk layout and the torch Dataset."""

from diffusion4d.data.dataset import OrbitDataset

__all__ = ["OrbitDataset"]
