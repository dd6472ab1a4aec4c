"""Orbit rendering jobs, curation, the on-disk layout and the torch Dataset.

``OrbitDataset`` is imported on first use (PEP 562): every render worker process imports this package for its job
modules, and importing torch there would cost each of them over a second for nothing.
"""

__all__ = ["OrbitDataset"]


def __getattr__(name: str):
    if name == "OrbitDataset":
        from diffusion4d.data.dataset import OrbitDataset

        return OrbitDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
