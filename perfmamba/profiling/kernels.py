"""Device time per component from `torch.profiler` traces: which kernels each component launched, and for how
long they ran.

- `kernel_attribution` maps each kernel of a trace to the innermost `perfmamba::<component>` range around the op
  that launched it, and sums their device time: the GPU *busy* time per component, launch gaps excluded. The
  fused path is one span ("mixer_fused"); its kernels are split by name, or by the op that launched them
  (`classify_kernel`), and its GEMMs by the shapes of the launching op (`gemm_key`): in_proj, x_proj and
  out_proj are one cuBLAS kernel name each. Layout copies and casts between its kernels are "copies":
  `mamba_inner_fn` transposes activations between its kernels, and that time is real.
- `graph_attribution` does the same for a call replayed from a CUDA graph, where no range survives: the capture
  puts a marker kernel at each span's start and end, and the replay's kernels between them are the span's.
A kernel record named like the op that holds it is that op's own span on the device (the GPU side of a
`record_function` range), not a kernel: counting it would count its kernels twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from perfmamba.models.components import tracing
from perfmamba.profiling.timers import COPIES, OTHER, RANGE_PREFIX, record_functions

GemmKey = tuple[int, int, int]  # the sorted (tokens, in, out) dimensions of a matrix product

# Kernels of the fused mixer by name (mamba-ssm 2.x, causal-conv1d 1.x, cuBLAS / CUTLASS), first match wins.
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
L2_FLUSH = "l2_flush"  # the range around the flush that `graph_attribution` replays before each call


def classify_kernel(name: str, op: str | None = None) -> str | None:
    """The component class of a kernel of the fused mixer, by its name (first match of `KERNEL_CLASSES`), else
    by the op that launched it (`COPY_OPS` are copies): ssm_scan, conv1d, gated_norm, gemm, copies or None."""
    for label, pattern in KERNEL_CLASSES:
        if pattern.search(name):
            return label
    return COPIES if op in COPY_OPS else None


def gemm_key(input_shapes: Sequence[Sequence[int]] | None) -> GemmKey | None:
    """The sorted (M, K, N) of a matrix-product op from its recorded input shapes (aten::mm [[M, K], [K, N]],
    aten::addmm [bias, [M, K], [K, N], ...]); None when the shapes do not describe one."""
    mats = [s for s in (input_shapes or ()) if isinstance(s, (list, tuple)) and len(s) == 2]
    if len(mats) < 2 or mats[-2][1] != mats[-1][0]:
        return None
    (m, k), (_, n) = mats[-2], mats[-1]
    return tuple(sorted((int(m), int(k), int(n))))  # type: ignore[return-value]


@dataclass(frozen=True)
class KernelAttribution:
    """Device (or, on a CPU, operator) time per component from a profiler trace, in seconds per run.

    `components` holds the spans' time (the fused mixer split by kernel class, see `split_fused`), `other` the
    time of work outside every span; `busy` is their total: the time the device was actually working.
    `kernels` counts the kernels (or operators) seen, per run. `unclassified` names the fused mixer's kernels
    that no class claimed ("launching op: kernel" -> seconds per run, the largest ten). `samples` holds, where
    the runs could be told apart (graph replays), each component's time per run. `wall` is the traced runs' own
    time: busy / wall compares kernels with the span they ran in, not with rounds timed at another moment."""

    components: dict[str, float]
    other: float
    busy: float
    kernels: float
    unit: str  # "device" (kernel time) or "cpu" (operator self time)
    unclassified: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    wall: float | None = None  # CUDA: seconds per run between events around the traced runs, which bracket them


def _enclosing_component(event) -> str | None:
    node = event
    while node is not None:
        if node.name.startswith(RANGE_PREFIX):
            return node.name[len(RANGE_PREFIX):]
        node = node.cpu_parent
    return None


def _own_kernels(event) -> list:
    return [k for k in event.kernels if k.name != event.name]


def _cpu_ops(events: Iterable) -> Iterator:
    """The host-side events of a trace (ops and ranges), the ones that launch kernels."""
    return (e for e in events if not getattr(e, "is_async", False) and e.device_type == torch.autograd.DeviceType.CPU)


def _fused_gemms(events: Iterable) -> Iterator[tuple[object, object]]:
    """(launching event, kernel) of every GEMM kernel inside "mixer_fused", in the trace's order."""
    for event in _cpu_ops(events):
        if _enclosing_component(event) == "mixer_fused":
            for kernel in _own_kernels(event):
                if classify_kernel(kernel.name, event.name) == "gemm":
                    yield event, kernel


def fused_gemm_order(events: Iterable, gemm_names: Mapping[GemmKey, str]) -> list[str]:
    """The projection of each fused GEMM kernel of a trace recorded with shapes, in order ("" where the shapes
    name none): the order a trace without shapes (whose host overhead would skew its timing) is named by."""
    return [gemm_names.get(gemm_key(getattr(event, "input_shapes", None)), "") for event, _ in _fused_gemms(events)]


def kernel_attribution(events: Iterable, runs: int, *, device_time: bool,
                       gemm_order: Sequence[str] | None = None) -> KernelAttribution:
    """Attribute a profiler's function events (`prof.events()`) to the innermost `perfmamba::` range around
    each. With `device_time` every kernel counts its device duration toward the range around the op that
    launched it; without, every CPU operator counts its self time (the CPU analogue). Divided by `runs`.

    Kernels inside "mixer_fused" are kept by class under "mixer_fused/<class>" (see `classify_kernel`). With
    `gemm_order` (one run's `fused_gemm_order`), the n-th fused GEMM of each run is "mixer_fused/gemm:<name>",
    where the trace holds `runs` times as many; else the GEMMs stay "mixer_fused/gemm"."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    events = list(events)
    names: dict[int, str] = {}
    if gemm_order:
        gemms = [id(kernel) for _, kernel in _fused_gemms(events)]
        if len(gemms) == len(gemm_order) * runs:
            names = {k: gemm_order[i % len(gemm_order)] for i, k in enumerate(gemms)}
    totals: dict[str, float] = defaultdict(float)
    unclassified: dict[str, float] = defaultdict(float)
    count = 0
    for event in _cpu_ops(events):
        component = _enclosing_component(event)
        if device_time:
            for kernel in _own_kernels(event):
                key = component or OTHER
                if key == "mixer_fused":
                    label = classify_kernel(kernel.name, event.name) or "other"
                    if label == "gemm" and names.get(id(kernel)):
                        label = f"gemm:{names[id(kernel)]}"
                    key = f"mixer_fused/{label}"
                    if label == "other":
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


def _activities(cuda: bool) -> list:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def _profiled(fn: Callable[[], object], device: torch.device, runs: int, record_shapes: bool = False):
    """(profiler, seconds per run between CUDA events around the runs, or None on a CPU)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.profiler.profile(activities=_activities(cuda), record_shapes=record_shapes) as prof, \
            tracing(record_functions):
        if cuda:
            start.record()
        for _ in range(runs):
            fn()
        if cuda:
            end.record()
            torch.cuda.synchronize(device)
    return prof, start.elapsed_time(end) / 1e3 / runs if cuda else None


def profile_runs(fn: Callable[[], object], device: torch.device, runs: int,
                 gemm_names: Mapping[GemmKey, str] | None = None) -> KernelAttribution:
    """Run `fn` `runs` times under `torch.profiler` with a record_function range per span, and attribute the
    trace (kernel time on CUDA, operator self time on a CPU). With `gemm_names`, one run before them records
    shapes to name the fused GEMMs (recording shapes costs the host enough to make a GPU-bound call look
    launch-bound: 45% busy for mamba1-130m fused at 16k tokens, so the timed runs do without)."""
    order = None
    if gemm_names:
        order = fused_gemm_order(_profiled(fn, device, 1, record_shapes=True)[0].events(), gemm_names)
    prof, wall = _profiled(fn, device, runs)
    attribution = kernel_attribution(prof.events(), runs, device_time=device.type == "cuda", gemm_order=order)
    return dataclasses.replace(attribution, wall=wall)


def split_fused(attribution: dict[str, float], gemm_shares: dict[str, float]) -> dict[str, float]:
    """Fold "mixer_fused/<class>" entries into components: ssm_scan, conv1d, gated_norm and copies by kernel
    class, "gemm:<name>" to that projection; GEMMs not told apart by shape over the projections in proportion to
    `gemm_shares` (their matmul FLOPs); unclassified kernels stay "mixer_fused"."""
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
            name = label[len("gemm:"):] if label.startswith("gemm:") else label
            name = "mixer_fused" if name in ("other", "gemm") else name
            out[name] = out.get(name, 0.0) + seconds
    return out


# CUDA graphs ----------------------------------------------------------------------------------------------------
# No range survives into a graph replay, and an eager trace links only some kernels to their range (mamba-ssm's
# Triton state update, launched outside any torch op, is linked to none). So the capture itself marks the spans: a
# no-op kernel (torch.cuda._sleep(0), "spin_kernel") at every span's start and end, in stream order with the
# component's kernels. The markers' own few microseconds are outside every component, and the call's total time is
# timed from a graph without them.
MARKER = re.compile(r"spin_kernel")


class _Marks:
    """Tracer for a capture: a marker kernel at each span's start and end, and their order on the host."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # ("enter" | "exit", component)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.events.append(("enter", name))
        torch.cuda._sleep(0)
        try:
            yield
        finally:
            self.events.append(("exit", name))
            torch.cuda._sleep(0)


def split_by_markers(marks: Sequence[tuple[str, str]], kernels: Sequence[tuple[str, float]], runs: int,
                     ) -> KernelAttribution:
    """Attribute the kernels of `runs` marked replays ((name, microseconds), in time order) to the innermost span
    open between the markers (`marks`, the spans entered and left during the capture); outside every span they
    are "other". Raises RuntimeError when the markers in the replay are not the capture's."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    found = sum(bool(MARKER.search(name)) for name, _ in kernels)
    if found != len(marks) * runs:
        raise RuntimeError(f"{found} span markers in {runs} replays, the capture placed {len(marks)} per call")
    samples: dict[str, list[float]] = defaultdict(lambda: [0.0] * runs)
    stack: list[str] = []
    seen, count = 0, 0
    for name, us in kernels:
        if MARKER.search(name):
            kind, component = marks[seen % len(marks)]
            if kind == "enter":
                stack.append(component)
            else:
                stack.pop()
            seen += 1
            continue
        samples[stack[-1] if stack else OTHER][min(seen // len(marks), runs - 1) if marks else 0] += us * 1e-6
        count += 1
    samples.pop(L2_FLUSH, None)
    other = samples.pop(OTHER, [0.0] * runs)
    mean = {name: sum(v) / runs for name, v in samples.items()}
    return KernelAttribution(
        components=mean, other=sum(other) / runs, busy=sum(mean.values()) + sum(other) / runs,
        kernels=count / runs, unit="device", samples={**samples, OTHER: other},
    )


def graph_attribution(fn: Callable[[], object], device: torch.device, runs: int,
                      flush: Callable[[], None] | None = None) -> KernelAttribution:
    """Device time per component of `fn` replayed from a CUDA graph, `runs` replays under the profiler (each
    after `flush`, the L2 flush the timers run, which is then left out). `fn` must be warmed up already."""
    marks = _Marks()
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize(device)
    with torch.cuda.graph(graph), tracing(marks):
        if flush is not None:
            with marks(L2_FLUSH):
                flush()
        fn()
    graph.replay()  # the first replay uploads the graph
    torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=_activities(True)) as prof:
        for _ in range(runs):
            graph.replay()
        torch.cuda.synchronize(device)
    cuda = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
            and not e.name.startswith(RANGE_PREFIX)]
    cuda.sort(key=lambda e: e.time_range.start)
    return split_by_markers(marks.events, [(e.name, e.time_range.elapsed_us()) for e in cuda], runs)
