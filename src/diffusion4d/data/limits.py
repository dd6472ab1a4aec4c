"""Per-asset time and memory limits, enforced inside the process that renders the asset (Linux).

Both render executors (the process pool and Ray) call the per-asset function inside :func:`asset_limits`, so a
hanging or exploding asset fails alone, with a message that names the file and the limit, and the job goes on.

Time: an interval timer (SIGALRM) raises :class:`AssetTimeLimitExceeded` in the rendering thread. It interrupts
Python code and blocking system calls (an ``open`` that never returns, e.g. on a stalled network file system, is
retried by Python only after the signal handler ran, and the handler raises). A hang inside C code that never
returns to Python is out of its reach: the Ray executor kills such a worker from outside (see render_ray).

Memory: ``RLIMIT_AS``, the address-space limit, set to what the process already maps plus the asset's budget, so
that an allocation beyond the budget fails at once (``MemoryError`` in numpy, bytes, PIL) and is reported. Why not
the alternatives: Ray's ``memory=`` task option only reserves memory for scheduling and enforces nothing; Ray's
memory monitor acts only when the whole node is nearly full, then kills some worker and retries its task without
end; ``RLIMIT_RSS`` is ignored by Linux. Why relative to the current mapping: a Ray worker already maps gigabytes
(its view of the object store, thread stacks) that it never touches, so an absolute cap would either refuse the
worker's own mappings or be too loose to catch anything. The limit is the process's soft limit, restored after
the asset; the hard limit is left alone, so it can be raised again.
"""

from __future__ import annotations

import resource
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class AssetLimits:
    """Limits for one asset's render; None: unlimited."""

    seconds: float | None = None  # wall-clock time, from the start of the asset's render
    memory_mb: int | None = None  # address space the render may add to what its process already maps

    def __post_init__(self):
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"the per-asset time limit must be positive, got {self.seconds} s")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ValueError(f"the per-asset memory limit must be at least 1 MB, got {self.memory_mb}")


NO_LIMITS = AssetLimits()


class AssetTimeLimitExceeded(BaseException):
    """The asset's time limit expired. A BaseException, as KeyboardInterrupt is: the loader and the libraries it
    calls turn an ``Exception`` into their own load errors, which would hide that the limit stopped the asset."""


@contextmanager
def asset_limits(limits: AssetLimits) -> Iterator[None]:
    """Run the block within ``limits``; raises AssetTimeLimitExceeded, or MemoryError from the allocation that
    went over the budget."""
    with _time_limit(limits.seconds), _memory_limit(limits.memory_mb):
        yield


def exceeded_limit(exc: BaseException, limits: AssetLimits) -> str | None:
    """Which limit ``exc`` says was exceeded, in words for a report; None when it is another failure."""
    if isinstance(exc, AssetTimeLimitExceeded):
        return f"exceeded the per-asset time limit of {limits.seconds:g} s"
    if limits.memory_mb is not None and _caused_by_memory_error(exc):
        return f"exceeded the per-asset memory limit of {limits.memory_mb} MB"
    return None


def _caused_by_memory_error(exc: BaseException | None) -> bool:
    """The loader re-raises a MemoryError as its own error (``raise … from``): look along the chain of causes."""
    while exc is not None:
        if isinstance(exc, MemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("a per-asset time limit needs the main thread (Python delivers signals only there)")

    def expire(signum, frame):
        raise AssetTimeLimitExceeded(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _memory_limit(memory_mb: int | None) -> Iterator[None]:
    if memory_mb is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped_bytes() + memory_mb * 2**20
    if soft != resource.RLIM_INFINITY:  # a tighter limit set from outside (ulimit -v) stays
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _mapped_bytes() -> int:
    """This process's address space now (VmSize), the quantity RLIMIT_AS limits."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024  # in kB
    raise RuntimeError("no VmSize in /proc/self/status: per-asset memory limits need Linux")
