"""Curation's assets as Ray tasks: ``diffusion4d curate DIR --ray [ADDRESS]``.

Only who runs the assets differs from the process pool: the per-asset function (curate._curate_one) and the rows'
order are curation's own, so both write the same manifest.jsonl. One task per asset, run again if its worker
process dies (up to ``max_retries`` times; curating writes nothing, so a rerun has nothing to clean up). An asset
that fails on every try becomes an error row, as an unreadable one does. With a remote cluster, every node needs
this package and the same view of the orbit folder.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from diffusion4d.data.curate import _curate_one, error_row
from diffusion4d.data.ray_cluster import RayCluster, first_line

DEFAULT_MAX_RETRIES = 3


def curate_in_ray_worker(root, uid, folders, config, captions) -> dict:
    """The Ray task. Its own arguments rather than the pool's one tuple: Ray hands a task its top-level object
    references' values, so the captions are stored in the cluster once, not sent with every asset."""
    return _curate_one((root, uid, folders, config, captions))


@dataclass
class RayCurator(RayCluster):
    """An executor for ``curate`` that runs each asset as a Ray task on the cluster ``address`` and ``num_cpus``
    name (see RayCluster), yielding the rows in the jobs' order."""

    max_retries: int = DEFAULT_MAX_RETRIES

    def __call__(self, jobs: list[tuple]) -> Iterator[dict]:
        ray = self._ray
        with self.connected():
            task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(curate_in_ray_worker)
            captions = ray.put(jobs[0][4]) if jobs else None  # one dict, the same in every job
            # Rows are taken in order, so a slow asset holds up the ones behind it: four tasks per CPU in flight
            # keep the CPUs busy meanwhile, without submitting a whole large folder at once.
            window = 4 * max(1, int(ray.cluster_resources().get("CPU", 1)))
            running: deque = deque()  # (uid, ObjectRef), in the jobs' order
            for job in jobs:
                if len(running) == window:
                    yield self._row(*running.popleft())
                running.append((job[1], task.remote(*job[:4], captions)))
            while running:
                yield self._row(*running.popleft())

    def _row(self, uid: str, ref) -> dict:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # its worker died on every try, or Ray lost the task
            return error_row(uid, f"Ray could not run it ({type(exc).__name__}: {first_line(exc)})")
