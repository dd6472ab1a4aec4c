"""Joining or starting the Ray cluster that a job's tasks run on (``render --ray``, ``curate --ray``).

Joining a cluster by address starts with a TCP connection to it (``check_ray_address``): where nothing listens,
``ray.init`` would retry for minutes, printing C++ warnings, before it gave up; this says so in seconds, naming
the address. Something that listens there but is not a Ray head passes the check; ``ray.init`` then gives up by
itself (about 20 s for a plain address), and its error too is one naming the address.

Ray is an optional extra, imported only here: ``pip install 'diffusion4d[ray]'``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from diffusion4d.extras import import_extra

# How long the TCP check of a cluster's address waits for an answer: a live head on any network answers far sooner.
PROBE_TIMEOUT_S = 3.0
START_HINT = "start a cluster with `ray start --head`, or use a local one with --ray local"


class RayAddressError(ValueError):
    """A Ray address that is malformed, or where no cluster can be joined. A ValueError: a bad input, which the
    command line reports in one line (exit code 2), as it does the others."""


def import_ray(purpose: str = "--ray"):
    return import_extra("ray", "ray", purpose)


@dataclass
class RayCluster:
    """Where a job's Ray tasks run, and the connection to it for the job's length.

    ``address``: None or "local" starts a local Ray cluster of ``num_cpus`` CPUs (default: all cores) for the job
    and stops it afterwards; any other value is passed to ``ray.init(address=...)`` to join a running cluster
    ("auto", "host:6379", "ray://host:10001"). A malformed address is a RayAddressError at once; one where nothing
    answers is one within seconds, in ``connected()``. A process already connected to Ray keeps that connection.
    """

    address: str | None = None
    num_cpus: int | None = None

    def __post_init__(self):
        self._ray = import_ray()  # now, before any work, so that a missing Ray is the first thing a user hears
        if self.address not in (None, "local"):
            parse_ray_address(self.address)  # likewise a malformed address; whether it answers is checked at use

    @contextmanager
    def connected(self) -> Iterator[None]:
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
                                  f"({type(exc).__name__}: {first_line(exc)}); {START_HINT}") from exc


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
                              f"({first_line(exc)}); {START_HINT}") from exc


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


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
