"""The render job's assets as Ray tasks: ``diffusion4d render … --ray [ADDRESS]``.

Only who runs the assets differs from the process pool: the planning (skipping finished assets), the per-asset
function (render_job.render_job_asset, with its limits and atomic writes), the progress bar and the report are the
render job's own, so both executors write the same files. One task per asset. A task whose worker process dies (a
crash, the kernel's OOM killer, a lost node) is run again, up to ``max_retries`` times; the rerun starts by deleting
whatever the dead one left, as a resumed job does. An asset's own failures (a bad file, a limit) come back as
results and are not retried: they would fail the same way again.

Ray is an optional extra, imported only here: ``pip install 'diffusion4d[ray]'``. With a remote cluster, every
node needs this package and the same view of the inputs and of the output folder (a shared file system).

Joining a cluster by address starts with a TCP connection to it (``check_ray_address``): where nothing listens,
``ray.init`` would retry for minutes, printing C++ warnings, before it gave up; this says so in seconds, naming
the address. Something that listens there but is not a Ray head passes the check; ``ray.init`` then gives up by
itself (about 20 s for a plain address), and its error too is one naming the address.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from diffusion4d.data.render_job import (
    AssetJob,
    AssetResult,
    asset_uid,
    clear_asset,
    render_job_asset,
    single_threaded_gl,
)
from diffusion4d.extras import import_extra

DEFAULT_MAX_RETRIES = 3
# A task still running this long after its asset's time limit is stuck where the limit's signal cannot reach
# (inside C code), or waited in Ray's queue: both are covered by this margin on top of twice the limit.
KILL_MARGIN_S = 60.0
# How long to wait for a killed worker to exit before deleting what it wrote, so that it cannot write after that.
KILL_WAIT_S = 10.0
# How long the TCP check of a cluster's address waits for an answer: a live head on any network answers far sooner.
PROBE_TIMEOUT_S = 3.0
START_HINT = "start a cluster with `ray start --head`, or render on a local one with --ray local"


class RayAddressError(ValueError):
    """A Ray address that is malformed, or where no cluster can be joined. A ValueError: a bad input, which the
    command line reports in one line (exit code 2), as it does the others."""


def import_ray():
    return import_extra("ray", "ray", "rendering with --ray")


def render_in_ray_worker(job: AssetJob) -> AssetResult:
    """The Ray task: the pool's per-asset function, in a worker process rendering with one llvmpipe thread."""
    single_threaded_gl()
    return render_job_asset(job)


@dataclass
class RayExecutor:
    """An executor for ``run_render_job`` that runs each asset as a Ray task.

    ``address``: None or "local" starts a local Ray cluster of ``num_cpus`` CPUs (default: all cores) for the job
    and stops it afterwards; any other value is passed to ``ray.init(address=...)`` to join a running cluster
    ("auto", "host:6379", "ray://host:10001"). A malformed address is a RayAddressError at once; one where nothing
    answers is one within seconds, when the job first needs the cluster. A process already connected to Ray runs
    the job on that connection as it is.
    ``kill_after_s``: a task still running this long after it was submitted has its worker killed and is reported
    as failed; default: twice the assets' time limit plus a minute, or never without a time limit.
    """

    address: str | None = None
    num_cpus: int | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    kill_after_s: float | None = None

    def __post_init__(self):
        self._ray = import_ray()  # now, before any work, so that a missing Ray is the first thing a user hears
        if self.address not in (None, "local"):
            parse_ray_address(self.address)  # likewise a malformed address; whether it answers is checked at use

    def __call__(self, jobs: list[AssetJob], record: Callable[[AssetResult], None]) -> None:
        if not jobs:
            return
        ray = self._ray
        with self._connected():
            task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(render_in_ray_worker)
            # Two tasks per CPU in flight: one running, one queued behind it, so no CPU waits for this loop, and a
            # task's deadline counts from roughly when it can start.
            window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
            _TaskWindow(ray, task, record, window, self._kill_after(jobs), self.max_retries).run(jobs)

    def _kill_after(self, jobs: list[AssetJob]) -> float | None:
        if self.kill_after_s is not None:
            return self.kill_after_s
        seconds = jobs[0].limits.seconds  # one job, one set of limits
        return None if seconds is None else 2 * seconds + KILL_MARGIN_S

    @contextmanager
    def _connected(self) -> Iterator[None]:
        ray = self._ray
        if ray.is_initialized():
            yield
            return
        if self.address in (None, "local"):
            # address="local": a new cluster even where `ray start` left its address (ray.init() would join that)
            ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False)
        else:
            self._join()
        try:
            yield
        finally:
            ray.shutdown()

    def _join(self) -> None:
        """``ray.init(address=...)``; any failure to join is a RayAddressError naming the address."""
        check_ray_address(self.address)  # first: where nothing listens, ray.init retries for minutes
        try:
            self._ray.init(address=self.address)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            raise RayAddressError(f"Ray address {self.address}: Ray could not join a cluster there "
                                  f"({type(exc).__name__}: {_first_line(exc)}); {START_HINT}") from exc


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``host:port`` or ``ray://host:port`` (Ray Client) address; None for "auto" and for
    another scheme, which Ray resolves itself. A malformed address is a RayAddressError naming it."""
    if address == "auto":
        return None
    scheme, sep, rest = address.rpartition("://")
    if scheme in ("http", "https"):  # a common slip: the dashboard's URL, which ray.init refuses
        raise RayAddressError(f"Ray address {address}: a web address (the dashboard's?), not a cluster's; give the "
                              f"head's host:port (port 6379 by default) or ray://host:port (10001 by default)")
    if sep and scheme != "ray":
        return None  # another Ray Client scheme (a module Ray imports by that name): Ray's to check
    host, colon, port = rest.rpartition(":")
    host = host.strip("[]")  # an IPv6 host is written [::1]:6379
    if not colon or not host:
        raise RayAddressError(f"Ray address {address}: expected host:port (e.g. 10.0.0.1:6379), ray://host:port "
                              f"(Ray Client, e.g. ray://10.0.0.1:10001), 'auto' or 'local'")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RayAddressError(f"Ray address {address}: the port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def check_ray_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise a RayAddressError naming ``address`` (malformed, or nothing accepts TCP connections there) before
    ray.init would spend minutes finding that out. "auto" is resolved as Ray resolves it, then checked."""
    target, name = address, address
    if address == "auto":
        target = _resolve_auto()
        if target is None:
            return  # this Ray resolves it elsewhere: ray.init will say what it finds
        name = f"auto (resolved to {target})"
    host_port = parse_ray_address(target)
    if host_port is not None:
        _probe(name, *host_port, timeout)


def _resolve_auto() -> str | None:
    """The address ``ray.init(address="auto")`` joins: $RAY_ADDRESS, else the cluster `ray start` last left its
    address for, else one running on this machine; None where this version of Ray keeps that (private) lookup
    elsewhere. None found is a RayAddressError."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError as exc:
        raise RayAddressError(f"Ray address auto: no running Ray cluster found on this machine "
                              f"({_first_line(exc)}); {START_HINT}") from exc


def _probe(name: str, host: str, port: int, timeout: float) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise RayAddressError(f"Ray address {name}: {_unreachable(exc, host, timeout)}; {START_HINT}") from exc


def _unreachable(exc: OSError, host: str, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "nothing accepts connections there (connection refused)"
    if isinstance(exc, socket.gaierror):
        return f"the host name {host!r} does not resolve ({exc.strerror})"
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return f"no answer within {timeout:g} s (the host is down, or a firewall drops the connection)"
    return f"cannot connect there ({exc.strerror or exc})"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class _TaskWindow:
    """Keeps up to ``window`` tasks submitted, records each result as it comes, kills a task past its deadline."""

    def __init__(self, ray, task, record, window: int, kill_after: float | None, max_retries: int):
        self.ray, self.task, self.record = ray, task, record
        self.window, self.kill_after, self.max_retries = window, kill_after, max_retries
        self.running: dict = {}  # ObjectRef → (job, deadline on time.monotonic() or None)

    def run(self, jobs: list[AssetJob]) -> None:
        queue = iter(jobs)
        self._submit(queue)
        while self.running:
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=self._seconds_to_deadline())
            for ref in ready:
                job, _ = self.running.pop(ref)
                self.record(self._result(ref, job))
            self._kill_overdue()
            self._submit(queue)

    def _submit(self, queue: Iterator[AssetJob]) -> None:
        while len(self.running) < self.window and (job := next(queue, None)) is not None:
            deadline = None if self.kill_after is None else time.monotonic() + self.kill_after
            self.running[self.task.remote(job)] = (job, deadline)

    def _seconds_to_deadline(self) -> float | None:
        deadlines = [deadline for _, deadline in self.running.values() if deadline is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _result(self, ref, job: AssetJob) -> AssetResult:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # its worker died on every try, or Ray lost the task
            clear_asset(job.out_dir, asset_uid(job.path))
            return str(job.path), "failed", f"{job.path}: {self._describe(exc, job)}"

    def _describe(self, exc: Exception, job: AssetJob) -> str:
        if isinstance(exc, self.ray.exceptions.WorkerCrashedError):
            why = f"its render worker died on each of {self.max_retries + 1} tries"
            if job.limits.memory_mb is not None:
                why += f" (maybe over the per-asset memory limit of {job.limits.memory_mb} MB)"
            return why
        return f"Ray could not run it ({type(exc).__name__}: {_first_line(exc)})"

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for ref, (job, deadline) in list(self.running.items()):
            if deadline is not None and now >= deadline:
                del self.running[ref]
                self.ray.cancel(ref, force=True)  # kills the worker process; a cancelled task is not retried
                self.ray.wait([ref], timeout=KILL_WAIT_S)
                clear_asset(job.out_dir, asset_uid(job.path))
                self.record((str(job.path), "failed", f"{job.path}: killed: still running {self.kill_after:g} s "
                                                      f"after it was submitted"))
