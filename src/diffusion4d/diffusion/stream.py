"""Streaming the shards of `diffusion4d encode` into training, per process, in memory that does not grow with the data.

Lanes. A micro-step's global batch of G = batch_size × processes samples is filled position by position: position p
comes from lane p mod V (V = ``stream_lanes``, default G; V must divide G and be a multiple of the number of processes
N). Process r trains on the positions p ≡ r (mod N), so on the lanes l ≡ r (mod N), and reads only their shards. The
global batch is thus the same on 1 or N processes at a fixed V, as the in-memory cache's (train.StepBatches) is;
MosaicML's streaming datasets do the same with their "canonical nodes".

Epochs. In epoch e, lane l reads the shards perm_e[l::V] (perm_e: a permutation of the shards drawn from (seed, e)),
so each shard is read by one lane, i.e. one process, per epoch. A lane reads W = ``stream_window`` shards at a time,
their samples shuffled together (from (seed, e, l, window)). Every lane serves G/V samples per micro-step and every
epoch has the length of its longest lane: a shorter lane starts its own samples over (as torch's DistributedSampler
pads), so all lanes change epochs together. The samples of any micro-step thus follow from (seed, step, micro-step,
rank) and the shards' sizes, and a resumed run continues the stream exactly, given the same G, V, W, seed and shards.
With fewer shards than lanes, each epoch's permutation is repeated until every lane has a shard (tiny data only:
lanes then share shards).

Memory. A process keeps the shards of its lanes' current windows in host memory, and the next ones: at most 2·W·V/N
shards (or those one micro-step needs, if more), whatever the size of the dataset. A worker thread reads them and
puts the next micro-step's batch together while the current one trains; only the batches go to the device.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from diffusion4d.diffusion.latent_cache import OrbitLatents, host_to_device
from diffusion4d.diffusion.seeding import step_generator
from diffusion4d.diffusion.shards import ShardIndex, load_shard


class StreamOrder:
    """Where each lane's k-th sample lies, as (shard, row); shards are numbered as in ``sizes`` (samples each)."""

    def __init__(self, sizes: list[int], lanes: int, window: int, seed: int):
        if lanes < 1 or window < 1:
            raise ValueError(f"stream lanes and window must be >= 1, got {lanes} and {window}")
        self.sizes, self.lanes, self.window, self.seed = list(sizes), lanes, window, seed
        self._epochs: dict[int, tuple[int, int, list[list[int]]]] = {}  # the last few of `epoch`
        self._rows: dict[tuple[int, int, int], list[tuple[int, int]]] = {}  # (epoch, lane, window) → rows

    def lane_shards(self, lane: int, epoch: int) -> list[int]:
        """The shards ``lane`` reads in ``epoch``, in order."""
        return self._permutation(epoch)[lane :: self.lanes]

    def _permutation(self, epoch: int) -> list[int]:
        perm = torch.randperm(len(self.sizes), generator=step_generator(self.seed, "shards", epoch)).tolist()
        return perm * -(-self.lanes // len(perm))  # fewer shards than lanes: repeated

    def epoch(self, e: int) -> tuple[int, int, list[list[int]]]:
        """Epoch ``e``: its first sample and its length (the same for every lane), and each lane's shards."""
        x = max((x for x in self._epochs if x <= e), default=-1)
        while x < e:  # from the last epoch known, one after the other: each starts where the one before ended
            start = self._epochs[x][0] + self._epochs[x][1] if x >= 0 else 0
            x += 1
            perm = self._permutation(x)
            lanes = [perm[lane :: self.lanes] for lane in range(self.lanes)]
            self._epochs[x] = (start, max(sum(self.sizes[s] for s in shards) for shards in lanes), lanes)
            if len(self._epochs) > 4:
                self._epochs.pop(next(iter(self._epochs)))  # the oldest computed
        return self._epochs[e]

    def locate(self, lane: int, k: int) -> tuple[int, int]:
        """(shard, row) of the ``k``-th sample of ``lane`` (counted from the run's start)."""
        e = max((e for e, (start, _, _) in self._epochs.items() if start <= k), default=0)
        while k >= sum(self.epoch(e)[:2]):
            e += 1
        start, _, lanes = self.epoch(e)
        shards = lanes[lane]
        offset = (k - start) % sum(self.sizes[s] for s in shards)  # a shorter lane starts over
        for w in range(0, len(shards), self.window):
            group = shards[w : w + self.window]
            n = sum(self.sizes[s] for s in group)
            if offset < n:
                return self._window_rows(e, lane, w // self.window, group)[offset]
            offset -= n
        raise AssertionError("unreachable: the offset lies within the lane's epoch")

    def _window_rows(self, epoch: int, lane: int, w: int, group: list[int]) -> list[tuple[int, int]]:
        """The samples of one window of a lane, shuffled (the last few windows are kept)."""
        key = (epoch, lane, w)
        if key not in self._rows:
            if len(self._rows) >= 4 * self.lanes:
                self._rows.pop(next(iter(self._rows)))  # the oldest
            pairs = [(s, r) for s in group for r in range(self.sizes[s])]
            perm = torch.randperm(len(pairs), generator=step_generator(self.seed, "rows", epoch, lane, w))
            self._rows[key] = [pairs[i] for i in perm.tolist()]
        return self._rows[key]

    def micro_step(self, t: int, global_batch: int, rank: int, world: int) -> list[tuple[int, int]]:
        """(shard, row) of each sample process ``rank`` of ``world`` trains on in micro-step ``t`` of the run
        (step × grad_accum + micro), in batch order: the positions p ≡ rank (mod world) of the global batch."""
        if global_batch % self.lanes or self.lanes % world:
            raise ValueError(f"--stream-lanes {self.lanes} must divide the global batch {global_batch} (batch size "
                             f"× processes) and be a multiple of the {world} processes")
        per_step = global_batch // self.lanes
        return [self.locate(p % self.lanes, t * per_step + p // self.lanes) for p in range(rank, global_batch, world)]


class ShardCache:
    """Loaded shards, least recently used dropped first: those a micro-step needs, plus others up to ``capacity``."""

    def __init__(self, load: Callable[[int], OrbitLatents], capacity: int):
        self.load, self.capacity = load, capacity
        self.loaded: OrderedDict[int, OrbitLatents] = OrderedDict()

    def get(self, needed: set[int]) -> dict[int, OrbitLatents]:
        for i in sorted(needed):
            if i not in self.loaded:
                self.loaded[i] = self.load(i)
            self.loaded.move_to_end(i)
        extra = len(self.loaded) - max(self.capacity, len(needed))
        for i in [i for i in self.loaded if i not in needed][: max(extra, 0)]:
            del self.loaded[i]
        return {i: self.loaded[i] for i in needed}


class ShardStream:
    """The micro-step batches of one process (``rank`` of ``world``) from the shards ``entries`` of ``index``:
    ``batch(step, micro)`` → OrbitLatents.TENSORS as host tensors [B, …] (pinned with ``pin``, for a copy to a GPU
    that does not wait), plus "caption" and "orbit" lists.

    A worker thread reads the shards and puts each batch together, the next micro-step's while the current one
    trains; the shards are touched by that thread only."""

    def __init__(self, index: ShardIndex, entries: list[dict], config, rank: int, world: int, pin: bool = False):
        self.global_batch, self.grad_accum = config.batch_size * world, config.grad_accum
        lanes = config.stream_lanes or self.global_batch
        self.order = StreamOrder([len(e["orbits"]) for e in entries], lanes, config.stream_window, config.seed)
        self.order.micro_step(0, self.global_batch, rank, world)  # refuses lanes that do not fit, here
        self.rank, self.world, self.pin = rank, world, pin
        self.cache = ShardCache(lambda i: load_shard(index, entries[i]), 2 * config.stream_window * (lanes // world))
        self.lock = threading.Lock()  # the order's caches, for callers of `items` beside the worker
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="shards")
        self.ahead: tuple[tuple[int, int], Future] | None = None

    def items(self, step: int, micro: int) -> list[tuple[int, int]]:
        """(shard, row) of each sample of this process in a micro-step (StreamOrder.micro_step)."""
        with self.lock:
            return self.order.micro_step(step * self.grad_accum + micro, self.global_batch, self.rank, self.world)

    def batch(self, step: int, micro: int) -> dict:
        """A micro-step's batch (waiting for it), after which the worker starts on the next micro-step's."""
        ready = self.ahead[1] if self.ahead and self.ahead[0] == (step, micro) else None
        ready = ready or self.pool.submit(self._assemble, step, micro)
        following = (step, micro + 1) if micro + 1 < self.grad_accum else (step + 1, 0)
        self.ahead = following, self.pool.submit(self._assemble, *following)
        return ready.result()

    def _assemble(self, step: int, micro: int) -> dict:
        items = self.items(step, micro)
        shards = self.cache.get({s for s, _ in items})
        batch = {name: torch.stack([getattr(shards[s], name)[r] for s, r in items]) for name in OrbitLatents.TENSORS}
        if self.pin:
            batch = {name: x.pin_memory() for name, x in batch.items()}
        batch["caption"] = [shards[s].captions[r] for s, r in items]
        batch["orbit"] = [shards[s].orbits[r] for s, r in items]
        return batch

    def close(self) -> None:
        """Stop the worker (after the batch it is putting together, if any)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


class StreamSource:
    """train.py's data source for streamed shards: a micro-step's samples travel to ``device`` as step inputs
    (``draw``), which ``gather`` hands to the step (a CUDA graph copies them into its buffers)."""

    def __init__(self, stream: ShardStream, video_shape, device, skipped: int):
        self.stream, self.video_shape, self.device = stream, torch.Size(video_shape), device
        self.skipped = skipped  # shards left out at the start (missing or truncated), logged with the losses

    def draw(self, step: int, micro: int) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The device tensors of the micro-step's samples and their captions."""
        batch = self.stream.batch(step, micro)
        return {name: host_to_device(batch[name], self.device) for name in OrbitLatents.TENSORS}, batch["caption"]

    def gather(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: inputs[name] for name in OrbitLatents.TENSORS}

    def close(self) -> None:
        self.stream.close()
