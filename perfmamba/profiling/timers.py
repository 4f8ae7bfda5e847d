"""Timing the component spans of a model: host clocks on a CPU, CUDA events on a GPU, kernel attribution from
`torch.profiler` traces.

The models wrap every component in `perfmamba.models.components.span(name)`; the tracers here plug into it.

- `SpanTimer` marks the start and end of every span, per run: `time.perf_counter()` on a CPU, a pair of CUDA
  events on a GPU (read after the run, when the GPU has drained). A span's time is its *self* time, its duration
  less that of the spans nested in it, so nested spans are never counted twice. On a GPU an event pair measures
  the GPU timeline between two points of the stream, gaps included: when the CPU cannot launch kernels as fast
  as the GPU runs them, the gaps are launch time, and the spans' sum is wall time, not GPU work. That is why
  `kernel_attribution` exists.
- `record_functions` opens a `torch.profiler.record_function` range per span, named `perfmamba::<component>`;
  `kernel_attribution` then maps each kernel of a profiler trace to the innermost such range around the op that
  launched it, and sums their device time: the GPU *busy* time per component, launch gaps excluded. The fused
  path is one span ("mixer_fused"); its kernels are split by name, or by the op that launched them
  (`classify_kernel`). The layout copies and casts between its kernels are a component of their own, "copies":
  `mamba_inner_fn` transposes activations between its kernels, and that time is real.
- End-to-end timing and L2 flushing are `perfmamba.timing`'s (one home for timing a call).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch

from perfmamba.models.components import Tracer, tracing

RANGE_PREFIX = "perfmamba::"
OTHER = "other"  # time outside every span: residual adds, dtype casts, layout copies, Python
COPIES = "copies"  # the fused path's layout copies and dtype casts between its kernels

# Kernels of the fused mixer by name (mamba-ssm 2.x, causal-conv1d 1.x, cuBLAS / CUTLASS), first match wins.
# GEMMs cannot be told apart by name: they are split over the projections by FLOPs (see `split_fused`).
KERNEL_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ssm_scan", re.compile(
        r"selective_scan|selective_state_update|chunk_scan|chunk_state|state_passing|bmm_chunk|chunk_cumsum|ssd",
        re.I)),
    ("conv1d", re.compile(r"causal_conv1d|conv1d|conv_depthwise", re.I)),
    ("gated_norm", re.compile(r"layer_norm|rms_?norm|layernorm", re.I)),
    ("gemm", re.compile(r"gemm|gemv|nvjet|xmma|cutlass|splitkreduce|cublas|matmul", re.I)),
    (COPIES, re.compile(r"copy|memcpy|transpose", re.I)),
)
# Ops whose kernels are copies or casts whatever the kernel is called (a cast launches an elementwise kernel).
COPY_OPS = frozenset({"aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::to"})


def classify_kernel(name: str, op: str | None = None) -> str | None:
    """The component class of a kernel of the fused mixer, by its name (first match of `KERNEL_CLASSES`), else
    by the op that launched it (`COPY_OPS` are copies): ssm_scan, conv1d, gated_norm, gemm, copies or None."""
    for label, pattern in KERNEL_CLASSES:
        if pattern.search(name):
            return label
    return COPIES if op in COPY_OPS else None


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


@dataclass(frozen=True)
class KernelAttribution:
    """Device (or, on a CPU, operator) time per component from a profiler trace, in seconds per run.

    `components` holds the spans' time (the fused mixer split by kernel class, see `split_fused`), `other` the
    time of work outside every span; `busy` is their total: the time the device was actually working.
    `kernels` counts the kernels (or operators) seen, per run. `unclassified` names the fused mixer's kernels
    that no class claimed ("launching op: kernel" -> seconds per run, the largest ten), so a user can see what
    the remainder is made of."""

    components: dict[str, float]
    other: float
    busy: float
    kernels: float
    unit: str  # "device" (kernel time) or "cpu" (operator self time)
    unclassified: dict[str, float] = field(default_factory=dict)


def _enclosing_component(event) -> str | None:
    node = event
    while node is not None:
        if node.name.startswith(RANGE_PREFIX):
            return node.name[len(RANGE_PREFIX):]
        node = node.cpu_parent
    return None


def kernel_attribution(events: Iterable, runs: int, *, device_time: bool) -> KernelAttribution:
    """Attribute a profiler's function events (`prof.events()`) to the innermost `perfmamba::` range around
    each. With `device_time` every kernel counts its device duration toward the range around the op that
    launched it; without, every CPU operator counts its self time (the CPU analogue). Divided by `runs`.

    Kernels inside "mixer_fused" are kept by class under "mixer_fused/<class>" (see `classify_kernel`)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    totals: dict[str, float] = defaultdict(float)
    unclassified: dict[str, float] = defaultdict(float)
    count = 0
    for event in events:
        if getattr(event, "is_async", False) or event.device_type != torch.autograd.DeviceType.CPU:
            continue
        component = _enclosing_component(event)
        if device_time:
            for kernel in event.kernels:
                key = component or OTHER
                if key == "mixer_fused":
                    label = classify_kernel(kernel.name, event.name)
                    key = f"mixer_fused/{label or 'other'}"
                    if label is None:
                        unclassified[f"{event.name}: {kernel.name[:120]}"] += kernel.duration
                totals[key] += kernel.duration
                count += 1
        elif not event.name.startswith(RANGE_PREFIX) or component is not None:
            # A range's own self time is the Python between its ops: it belongs to the component too.
            totals[component or OTHER] += event.self_cpu_time_total
            count += 1
    scale = 1e-6 / runs  # profiler times are microseconds
    other = totals.pop(OTHER, 0.0) * scale
    components = {name: value * scale for name, value in totals.items()}
    largest = sorted(unclassified.items(), key=lambda kv: -kv[1])[:10]
    return KernelAttribution(
        components=components, other=other, busy=sum(components.values()) + other, kernels=count / runs,
        unit="device" if device_time else "cpu", unclassified={k: v * scale for k, v in largest},
    )


def profile_runs(fn: Callable[[], object], device: torch.device, runs: int) -> KernelAttribution:
    """Run `fn` `runs` times under `torch.profiler` with a record_function range per span, and attribute the
    trace (kernel time on CUDA, operator self time on a CPU)."""
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=activities) as prof, tracing(record_functions):
        for _ in range(runs):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
    return kernel_attribution(prof.events(), runs, device_time=cuda)


def split_fused(attribution: dict[str, float], gemm_shares: dict[str, float]) -> dict[str, float]:
    """Fold "mixer_fused/<class>" entries into components: ssm_scan, conv1d, gated_norm and copies by kernel
    class; the GEMMs over the projections in proportion to `gemm_shares` (each projection's matmul FLOPs; the
    kernels of one fused call cannot be told apart by name); unclassified kernels stay "mixer_fused"."""
    out: dict[str, float] = {}
    total_share = sum(gemm_shares.values())
    for key, seconds in attribution.items():
        if not key.startswith("mixer_fused/"):
            out[key] = out.get(key, 0.0) + seconds
            continue
        label = key.split("/", 1)[1]
        if label == "gemm" and total_share > 0:
            for name, share in gemm_shares.items():
                out[name] = out.get(name, 0.0) + seconds * share / total_share
        else:
            name = "mixer_fused" if label in ("other", "gemm") else label
            out[name] = out.get(name, 0.0) + seconds
    return out
