"""A flat asset whose back shows: a unit quad facing +Z (the orbit's view 0) with a single-sided material. Seen
from behind (half of an orbit), it is drawn by default and culled where back faces of single-sided materials are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffusion4d.assets.gltf_writer import GlbBuilder, Primitive


def write_single_sided_quad(path: Path) -> Path:
    builder = GlbBuilder()
    material = builder.add_material((0.7, 0.7, 0.7, 1.0), double_sided=False)
    positions = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], np.float32)
    normals = np.tile(np.array([0, 0, 1], np.float32), (4, 1))
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +Z: the front faces +Z
    mesh = builder.add_mesh([Primitive(positions, normals, faces, material=material)])
    builder.write(path, [builder.add_node(mesh=mesh)])
    return Path(path)
