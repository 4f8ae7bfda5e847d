"""Memory per component: peak and allocated bytes, on a GPU from the caching allocator's statistics, on a CPU
from a deterministic live-tensor tracker.

Three numbers per component, because they answer different questions and the paper conflated them:
- `peak_bytes`: the most memory live at once while the component ran, above what was live when it started
  (its transient working set: what has to fit);
- `allocated_bytes`: every byte the component allocated, freed or not (cumulative: what the PyTorch profiler's
  "memory" column sums, which can exceed the device's size without any problem);
- `retained_bytes`: what it left allocated when it returned (its output, plus anything it cached).
The whole run's `peak_bytes` is absolute on a GPU (weights, inputs and cache included) and counts only the
run's own allocations on a CPU; `peak_activation_bytes` is the peak above the start on both. A component's
numbers include those of spans nested in it (the models' spans are leaves).

On a CPU there is no allocator to ask (glibc's heap keeps freed pages and reuses them unpredictably), so
`LiveTensorTracker` counts tensors instead: a `TorchDispatchMode` sees every op's outputs, counts each new
storage once (not views, not in-place results, not outputs aliasing an input) and forgets it when it dies.
The count is the same on every run of the same code: deterministic, unlike a reading of RSS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from perfmamba.models.components import tracing


class MemoryCounter(Protocol):
    def current(self) -> int: ...
    def peak(self) -> int: ...
    def reset_peak(self) -> None: ...
    def allocated_total(self) -> int: ...


def _storage_key(t: torch.Tensor) -> int | None:
    if t.device.type == "meta":
        return None
    return t.untyped_storage().data_ptr() or None


class LiveTensorTracker(TorchDispatchMode):
    """Counts the bytes of live tensor storages created by ops run inside it (a deterministic CPU allocator)."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._current = 0
        self._peak = 0
        self._allocated = 0

    def _sweep(self) -> None:
        dead = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in dead:
            self._current -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outputs:
            return out
        inputs = {_storage_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        new = [(key, t) for t in outputs if (key := _storage_key(t)) is not None and key not in inputs]
        if not new:  # views and in-place ops (most ops of a reference scan's loop) allocate nothing
            return out
        # Storages die between ops: sweep before adding, or a new storage at a freed address would look known.
        self._sweep()
        for key, t in new:
            if key in self._live:
                continue
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            self._live[key] = (StorageWeakRef(storage), nbytes)
            self._current += nbytes
            self._allocated += nbytes
        self._peak = max(self._peak, self._current)
        return out

    def current(self) -> int:
        self._sweep()
        return self._current

    def peak(self) -> int:
        return max(self._peak, self.current())

    def reset_peak(self) -> None:
        self._peak = self.current()

    def allocated_total(self) -> int:
        return self._allocated


class CudaMemoryCounter:
    """The caching allocator's statistics of one CUDA device (exact: every tensor allocation goes through it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def allocated_total(self) -> int:
        return torch.cuda.memory_stats(self.device).get("allocated_bytes.all.allocated", 0)


@dataclass
class ComponentMemory:
    peak_bytes: int = 0  # max over the component's spans of (live bytes during the span - live at its start)
    allocated_bytes: int = 0  # cumulative allocations, summed over its spans
    retained_bytes: int = 0  # net change, summed over its spans


@dataclass
class MemoryProfile:
    start_bytes: int  # live when the run started (on a GPU: weights, inputs, cache)
    peak_bytes: int  # the run's peak (absolute on a GPU; above the start on a CPU)
    peak_activation_bytes: int  # the peak above the start
    allocated_bytes: int  # cumulative allocations of the whole run
    components: dict[str, ComponentMemory] = field(default_factory=dict)
    method: str = ""  # "cuda_allocator" or "live_tensors"


class MemorySpans:
    """Tracer: per-component peak / allocated / retained bytes from a `MemoryCounter`.

    Both counters have one peak register, which each span resets to see its own peak; every reading of the
    register is folded into the running peaks of all open spans and of the run, so nesting loses nothing."""

    def __init__(self, counter: MemoryCounter) -> None:
        self.counter = counter
        self.components: dict[str, ComponentMemory] = {}
        self.run_peak = counter.peak()
        self._open: list[list[int]] = []  # running peak of each open span

    def _fold(self) -> None:
        peak = self.counter.peak()
        self.run_peak = max(self.run_peak, peak)
        for running in self._open:
            running[0] = max(running[0], peak)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        c = self.counter
        self._fold()
        start, allocated = c.current(), c.allocated_total()
        c.reset_peak()
        running = [start]
        self._open.append(running)
        try:
            yield
        finally:
            self._fold()
            self._open.pop()
            entry = self.components.setdefault(name, ComponentMemory())
            entry.peak_bytes = max(entry.peak_bytes, running[0] - start)
            entry.allocated_bytes += c.allocated_total() - allocated
            entry.retained_bytes += c.current() - start

    def finish(self) -> int:
        self._fold()
        return self.run_peak


def measure_memory(fn: Callable[[], object], device: torch.device | str) -> MemoryProfile:
    """Run `fn` once with every span instrumented; return the run's and each component's memory.

    `fn`'s result is dropped inside the measurement, so logits count toward the peak but not after it."""
    device = torch.device(device)
    tracker_ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        counter: MemoryCounter = CudaMemoryCounter(device)
        method = "cuda_allocator"
    else:
        tracker = LiveTensorTracker()
        counter = tracker_ctx = tracker
        method = "live_tensors"
    with tracker_ctx:
        counter.reset_peak()
        start, allocated = counter.current(), counter.allocated_total()
        spans = MemorySpans(counter)
        with tracing(spans):
            result = fn()
        del result
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = spans.finish()
        total_allocated = counter.allocated_total() - allocated
    return MemoryProfile(
        start_bytes=start, peak_bytes=peak, peak_activation_bytes=peak - start, allocated_bytes=total_allocated,
        components=spans.components, method=method,
    )


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages among `tensors` (tied weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        key = _storage_key(t)
        if key is not None:
            seen[key] = t.untyped_storage().nbytes()
    return sum(seen.values())
