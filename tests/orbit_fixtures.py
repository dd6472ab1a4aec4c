"""Shared by the training tests: a few procedural assets rendered small and curated."""

from pathlib import Path


def rendered_orbits(root: Path, count: int, seed: int, frames: int, size: int) -> Path:
    """``root/orbits``: ``count`` procedural assets (``seed``) rendered at ``size``² × ``frames`` views, curated.

    Tiny renders keep everything that is in frame: the paper's SSIM thresholds are meant for 256² images.
    """
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.curate import CurationConfig, curate
    from diffusion4d.data.render_job import RenderSettings, run_render_job

    assets = write_procedural_dataset(root / "assets", count=count, seed=seed, progress=False)
    run_render_job(assets, root / "orbits", RenderSettings(frames=frames, size=size, samples=0), progress=False)
    curate(root / "orbits", CurationConfig(s_low=-1.0, s_high=1.0, val_fraction=0.0), progress=False)
    return root / "orbits"
