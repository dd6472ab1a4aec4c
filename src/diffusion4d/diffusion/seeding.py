"""Seeded generators from labels: every random draw of training comes from one of these, so a draw depends only on
what it is for (seed, step, micro-step, rank, …), never on what ran before it."""

from __future__ import annotations

import hashlib

import torch


def step_generator(seed: int, *parts) -> torch.Generator:
    """A generator for one micro-step of one process (or another labelled draw): the same (seed, *parts) gives the
    same draws."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
