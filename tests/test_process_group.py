"""The multi-process tests' helper: a child's whole process group is gone after a timeout and after a normal exit."""

import subprocess
import time
from pathlib import Path

import pytest

from process_group import run_group

# The child (a shell) starts a grandchild that would sleep for 10 minutes, writes its pid to $0, then does {then}.
SPAWN = "sleep 600 & echo $! > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; {then}"


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 60  # SIGKILL takes effect at once; this only allows for a loaded machine
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_timeout_kills_the_child_and_its_children(tmp_path):
    pid_file = tmp_path / "pid"
    # The child never finishes, so the limit always runs out; a longer one is tried only if the machine was too
    # loaded for the child to start its grandchild in time (the test is of the helper, not of the speed).
    for timeout in (2, 8, 32, 128, 512):
        with pytest.raises(subprocess.TimeoutExpired):
            run_group(["sh", "-c", SPAWN.format(then="wait"), str(pid_file)], timeout=timeout)
        if pid_file.exists():
            break
    assert gone_soon(int(pid_file.read_text()))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_children_left_behind_by_a_finished_child_are_killed(tmp_path):
    pid_file = tmp_path / "pid"
    result = run_group(["sh", "-c", SPAWN.format(then="echo done"), str(pid_file)])
    assert result.returncode == 0 and result.stdout == "done\n"
    assert gone_soon(int(pid_file.read_text()))
