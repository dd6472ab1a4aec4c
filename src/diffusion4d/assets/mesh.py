"""The posed mesh: what an animated asset is at one instant, and what the renderer draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PosedPrimitive:
    """One drawable triangle list, already animated and placed in (normalised) world space.

    Colours are linear RGBA: ``colors`` already holds vertex colour × base-colour factor, and the renderer
    multiplies in the texture (sRGB-encoded uint8, decoded to linear when sampled).

    Material (glTF semantics): ``alpha_mode`` OPAQUE ignores alpha, MASK discards fragments whose alpha (vertex
    colour × texture) is below ``alpha_cutoff``, BLEND composites over what is behind. Single-sided primitives
    are back-face culled. ``emissive`` (linear RGB, already × emissive strength) × ``emissive_texture`` is added
    to the lit colour.
    """

    positions: np.ndarray  # [N, 3] float32, world space
    normals: np.ndarray  # [N, 3] float32, unit length, world space
    indices: np.ndarray  # [F, 3] uint32, counter-clockwise front faces
    colors: np.ndarray  # [N, 4] float32, linear RGBA in [0, 1]
    uvs: np.ndarray | None = None  # [N, 2] float32, glTF convention (v down from the image's top row)
    texture: np.ndarray | None = None  # [H, W, 4] uint8, sRGB base-colour texture
    double_sided: bool = False
    alpha_mode: str = "OPAQUE"  # OPAQUE | MASK | BLEND
    alpha_cutoff: float = 0.5
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)  # linear RGB
    emissive_uvs: np.ndarray | None = None  # [N, 2] float32, for emissive_texture
    emissive_texture: np.ndarray | None = None  # [H, W, 4] uint8, sRGB emissive texture


@dataclass
class PosedMesh:
    primitives: list[PosedPrimitive]

    @property
    def num_triangles(self) -> int:
        return sum(len(p.indices) for p in self.primitives)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (min [3], max [3]) over all vertices that triangles use."""
        used = [p.positions[np.unique(p.indices)] for p in self.primitives if len(p.indices)]
        if not used:
            raise ValueError("mesh has no triangles")
        allp = np.concatenate(used)
        return allp.min(0), allp.max(0)
