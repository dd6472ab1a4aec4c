"""Child processes for tests that leave nothing running.

Each child starts a new session, so it and everything it starts (torchrun's workers, a spawned pool, Chromium's
renderers) form one process group, and that whole group is killed with SIGKILL when the test is done with it:
after a normal exit (stragglers), on a timeout and on any failure. Killing only the child, as subprocess.run does
on a timeout, leaves its own children running as orphans.

The timeouts here are for hangs, not speed: the tests run on loaded 2-core machines, where a few seconds of work
can take minutes. Pass or fail must never depend on how fast the machine is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# A child command that has not finished after 30 minutes is hung, not slow: every child command of the default
# suite takes well under a minute on an idle 2-core machine.
HANG_TIMEOUT_S = 1800.0


def kill_group(pid: int) -> None:
    """SIGKILL every process of the group led by ``pid`` (started with a new session); none left is fine."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def popen_group(cmd: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen(cmd, **kwargs)`` in a new session; on leaving the block its whole group is killed."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        # The group outlives its leader while any member runs, and Linux does not hand out its id meanwhile.
        kill_group(proc.pid)
        proc.wait()


def run_group(cmd: list[str], timeout: float | None = HANG_TIMEOUT_S, **kwargs) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)``, but the child runs in its own
    process group, which is killed whole on a timeout and after the child exits. ``timeout=None``: no limit.

    Output goes through temporary files, not pipes: a grandchild that inherited a pipe would keep it open, and
    reading to its end would wait for that grandchild rather than for the child.
    Raises subprocess.TimeoutExpired (with the output so far) when the limit is reached.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with popen_group(cmd, stdout=out, stderr=err, **kwargs) as proc:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise subprocess.TimeoutExpired(cmd, timeout, _read(out), _read(err)) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, _read(out), _read(err))


def _read(file) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")
