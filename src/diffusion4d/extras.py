"""Optional dependencies (the ``[project.optional-dependencies]`` extras), imported only where they are used."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a MissingExtraError that tells how to install it (``pip install 'diffusion4d[extra]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{purpose} needs the Python package {module!r}, which is not installed here: "
                                f"pip install 'diffusion4d[{extra}]'") from exc
