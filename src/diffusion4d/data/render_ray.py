"""The render job's assets as Ray tasks: ``diffusion4d render … --ray [ADDRESS]``.

Only who runs the assets differs from the process pool: the planning (skipping finished assets), the per-asset
function (render_job.render_job_asset, with its limits and atomic writes), the progress bar and the report are the
render job's own, so both executors write the same files. One task per asset. A task whose worker process dies (a
crash, the kernel's OOM killer, a lost node) is run again, up to ``max_retries`` times; the rerun starts by deleting
whatever the dead one left, as a resumed job does. An asset's own failures (a bad file, a limit) come back as
results and are not retried: they would fail the same way again.

With a remote cluster, every node needs this package and the same view of the inputs and of the output folder
(a shared file system). Joining or starting the cluster, and checking its address, is ray_cluster's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# RayAddressError and import_ray lived here first; callers still import them from here.
from diffusion4d.data.ray_cluster import RayAddressError, RayCluster, first_line, import_ray  # noqa: F401
from diffusion4d.data.render_job import (
    AssetJob,
    AssetResult,
    asset_uid,
    clear_asset,
    render_job_asset,
    single_threaded_gl,
)

DEFAULT_MAX_RETRIES = 3
# A task still running this long after its asset's time limit is stuck where the limit's signal cannot reach
# (inside C code), or waited in Ray's queue: both are covered by this margin on top of twice the limit.
KILL_MARGIN_S = 60.0
# How long to wait for a killed worker to exit before deleting what it wrote, so that it cannot write after that.
KILL_WAIT_S = 10.0


def render_in_ray_worker(job: AssetJob) -> AssetResult:
    """The Ray task: the pool's per-asset function, in a worker process rendering with one llvmpipe thread."""
    single_threaded_gl()
    return render_job_asset(job)


@dataclass
class RayExecutor(RayCluster):
    """An executor for ``run_render_job`` that runs each asset as a Ray task on the cluster that ``address`` and
    ``num_cpus`` name (see RayCluster).

    ``kill_after_s``: a task still running this long after it was submitted has its worker killed and is reported
    as failed; default: twice the assets' time limit plus a minute, or never without a time limit.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    kill_after_s: float | None = None

    def __call__(self, jobs: list[AssetJob], record: Callable[[AssetResult], None]) -> None:
        if not jobs:
            return
        ray = self._ray
        with self.connected():
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
        return f"Ray could not run it ({type(exc).__name__}: {first_line(exc)})"

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
