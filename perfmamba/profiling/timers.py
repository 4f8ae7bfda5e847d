"""The component spans of a model, timed: host clocks on a CPU, CUDA events on a GPU.

The models wrap every component in `perfmamba.models.components.span(name)`; the tracers here plug into it.
`SpanTimer` marks the start and end of every span, per run, and a span's time is its *self* time (less the spans
nested in it). On a GPU an event pair measures the GPU timeline between two points of the stream, gaps included:
when the CPU cannot launch kernels as fast as the GPU runs them, the spans' sum is launch time, not GPU work;
`kernels` then attributes the kernels themselves. `record_functions` opens a `torch.profiler.record_function`
range `perfmamba::<component>` per span, for `kernels`. End-to-end timing is `perfmamba.timing`'s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch

from perfmamba.models.components import Tracer, tracing

RANGE_PREFIX = "perfmamba::"
OTHER = "other"  # time outside every span: residual adds, dtype casts, layout copies, Python
COPIES = "copies"  # the fused path's layout copies and dtype casts between its kernels


def combine(*tracers: Tracer) -> Tracer:
    """One tracer that enters all of `tracers` (in order) around each span."""

    @contextlib.contextmanager
    def span(name: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for tracer in tracers:
                stack.enter_context(tracer(name))
            yield

    return span


def record_functions(name: str) -> AbstractContextManager:
    """Tracer: a `torch.profiler.record_function` range `perfmamba::<name>` per span."""
    return torch.profiler.record_function(RANGE_PREFIX + name)


@dataclass
class _Span:
    name: str
    start: object
    end: object = None
    children: list[_Span] = field(default_factory=list)


class SpanTimer:
    """Tracer recording every span's start and end, grouped into runs (`with timer.run(): model(ids)`).

    `times()` returns, per run, the self time of every component summed over the run's spans (a component
    appears once per layer), in seconds. On CUDA the events are read in `times()`, so call it after the runs
    (RoundTimer synchronizes after each)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._runs: list[list[_Span]] = []
        self._stack: list[_Span] = []
        self._resolved: list[dict[str, float]] = []

    def _mark(self) -> object:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _seconds(self, start: object, end: object) -> float:
        if self.cuda:
            return start.elapsed_time(end) / 1e3  # type: ignore[attr-defined]
        return end - start  # type: ignore[operator]

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self._runs:
            raise RuntimeError("SpanTimer spans must run inside `with timer.run():`")
        record = _Span(name, self._mark())
        (self._stack[-1].children if self._stack else self._runs[-1]).append(record)
        self._stack.append(record)
        try:
            yield
        finally:
            record.end = self._mark()
            self._stack.pop()

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """One run (one forward or step): the spans entered inside are recorded as one sample."""
        self._runs.append([])
        with tracing(self):
            yield

    def _self_times(self, spans: Iterable[_Span], out: dict[str, float]) -> float:
        total = 0.0
        for span in spans:
            duration = self._seconds(span.start, span.end)
            out[span.name] = out.get(span.name, 0.0) + duration - self._self_times(span.children, out)
            total += duration
        return total

    def times(self) -> list[dict[str, float]]:
        """Per run: {component: self seconds}, every run so far."""
        for spans in self._runs[len(self._resolved):]:
            per_run: dict[str, float] = {}
            self._self_times(spans, per_run)
            self._resolved.append(per_run)
        self._runs[: len(self._resolved)] = [[] for _ in self._resolved]  # drop the events once read
        return list(self._resolved)
