"""A whole training step — forward, backward, clipping, optimizer, EMA — replayed from one CUDA graph.

The small default-model UNets are launch-bound on a GPU: in the H200 profile of a batch-32 step the host spent
164 ms dispatching ~2,000 small kernels (autocast casts, norms, attention) while the GPU worked 142 ms. Replaying a
captured graph costs the host one call. What capture needs, and how this module provides it:

* static inputs: the step reads its per-step tensors (sample indices, timesteps, noise, dropout flags, text states)
  from buffers that each call copies the new values into;
* no host synchronisation inside the step: the training loop checks values on the first (eager) step only, and
  `condition_checks_skipped` is active while capturing;
* warm-up: the first ``warmup`` calls run eagerly on a side stream (lazy initialisation, allocator, cuDNN/cuBLAS
  handles), then one capture; every later call is a copy of the inputs and a replay;
* optimizer and autocast that can be captured: AdamW with ``capturable=True`` (its step counts live on the device)
  and autocast without its weight-cast cache;
* fresh gradients: ``before`` (``zero_grad(set_to_none=True)``) runs before each eager call and before the capture,
  so the captured backward allocates the gradients and each replay overwrites them.

Dropout draws from the default CUDA generator, which the loop reseeds before each step; a replay reads the generator's
seed and offset at that moment, so steps stay reproducible, though not bitwise equal to the eager loop (the graph
and eager kernels draw in different orders).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffusion4d.models.checks import condition_checks_skipped

Inputs = dict[str, torch.Tensor]


class GraphedStep:
    """``fn(inputs, check) -> Tensor``, called as ``step(inputs)``: eager for the first ``warmup`` calls (``check``
    True on the very first), then captured once and replayed. ``models`` are the UNets whose input checks are
    skipped while capturing. The returned tensor is the graph's own output buffer: read it before the next call."""

    def __init__(self, fn: Callable[[Inputs, bool], torch.Tensor], before: Callable[[], None], models=(),
                 warmup: int = 3):
        if warmup < 1:
            raise ValueError("GraphedStep needs at least one eager warm-up call")
        self.fn, self.before, self.models, self.warmup = fn, before, tuple(models), warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: Inputs = {}
        self.output: torch.Tensor | None = None

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._eager(inputs)
        if self.graph is None:
            self._capture(inputs)
        for name, buffer in self.static.items():
            buffer.copy_(inputs[name], non_blocking=True)
        self.graph.replay()
        return self.output

    def _eager(self, inputs: Inputs) -> torch.Tensor:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.before()
            out = self.fn(inputs, self.calls == 1)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, inputs: Inputs) -> None:
        """Record one step on the static buffers (capturing runs nothing: the caller then replays it)."""
        torch.cuda.synchronize()
        self.static = {name: value.clone() for name, value in inputs.items()}
        self.before()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), condition_checks_skipped(*self.models):
            self.output = self.fn(self.static, False)
