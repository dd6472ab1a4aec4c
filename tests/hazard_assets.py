"""Inputs that really misbehave, for the render job's per-asset limits; the package has no test-only code path.

- A hanging asset: a named pipe (FIFO) with an asset's name. Opening it for reading blocks until some process opens
  its other end, which none does: the loader hangs inside the kernel, as on a stalled network file system. It lives
  on disk, so it reaches any worker process, a spawned pool's or Ray's.
- An exploding asset: a GLB file of 3 GiB, sparse (it takes no disk space). Loading it needs 3 GiB of memory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

EXPLODING_BYTES = 3 * 2**30


def write_hanging_asset(folder: Path, name: str = "hangs.glb") -> Path:
    path = Path(folder) / name
    os.mkfifo(path)
    return path


def write_exploding_asset(folder: Path, name: str = "explodes.glb") -> Path:
    path = Path(folder) / name
    with open(path, "wb") as f:
        f.write(b"glTF" + struct.pack("<II", 2, EXPLODING_BYTES))  # magic, version, total length
        f.truncate(EXPLODING_BYTES)
    return path
