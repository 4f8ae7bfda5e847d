"""What a profile derives from its measurements: each component's device time and place under the roofline,
the scaling fits, and the span timers' own cost. Pure functions of a `PointResult`: `reanalyse` re-runs them on
a profile measured by an older perfmamba."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from perfmamba.profiling.costs import Cost
from perfmamba.profiling.result import ComponentStats, PointResult, ScalingFit
from perfmamba.profiling.roofline import DevicePeaks, roofline_point

# Summed kernel durations above this multiple of the (untraced) wall time: the kernels ran slower in the profiler
# pass than in the timed rounds. Seen at the largest GPU-bound points on an H200: 1.06x at mamba-130m, batch 8,
# L 8192 in one GPU test run (up to 1.75x at Mamba-2 1.3b, batch 4, L 16384 in an earlier sweep, not re-run). In
# later runs the kernels stayed within the profiler pass's own span (`profiled_time_s`) at those points, so the
# records add up; the likely cause is the GPU's clock under the pass's back-to-back runs (not measured). There the
# kernel times are not the timed rounds' device time, and the spans (right once the GPU sets the pace) are.
KERNEL_OVERLAP = 1.05


def kernels_overlap(point: PointResult) -> bool:
    """Whether `point`'s profiler kernel times sum to more than its wall time (beyond `KERNEL_OVERLAP`)."""
    return point.busy_fraction is not None and point.busy_fraction > KERNEL_OVERLAP


def device_time(point: PointResult, component: ComponentStats) -> float | None:
    """The time `component`'s work takes on the device at `point`: its kernels' summed time from the profiler
    (launch gaps excluded: right at launch-bound points, where span times are launch times), else its span time
    (on a CPU; without a trace; or where the kernel records overlap, see `KERNEL_OVERLAP`)."""
    if component.busy_s and point.busy_fraction is not None and not kernels_overlap(point):
        return component.busy_s
    return component.time_s


def place_on_roofline(point: PointResult, peaks: DevicePeaks) -> None:
    """Each component's achieved FLOP/s and bytes/s over its `device_time`, and its place under `peaks`."""
    for c in point.components:
        seconds = device_time(point, c)
        if c.bytes <= 0 or not seconds or seconds <= 0:
            continue
        rp = roofline_point(Cost(c.flops, c.bytes, c.matmul_flops), seconds, peaks)
        c.intensity, c.bound = rp.intensity, rp.bound
        c.achieved_flops_per_s, c.achieved_bytes_per_s = rp.achieved_flops_per_s, rp.achieved_bytes_per_s
        c.roofline_fraction = rp.fraction


# Scaling --------------------------------------------------------------------------------------------------------------
def power_law(seqlens: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of log t = k log L + c: returns (k, r^2). Needs >= 2 distinct lengths, times > 0."""
    x, y = np.log(np.asarray(seqlens, dtype=float)), np.log(np.asarray(times, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a power law needs at least two distinct lengths, got {list(seqlens)}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"a power law needs positive times, got {list(times)}")
    k, c = np.polyfit(x, y, 1)
    residual = y - (k * x + c)
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / spread if spread > 0 else 1.0
    return float(k), r2


def scaling_time(point: PointResult, name: str) -> float | None:
    """The time of component `name` (or "total") at `point` that the scaling fits and plots use: see
    `fit_scaling`."""
    if name == "total":
        return point.graph_time_s or point.time_s
    c = point.component(name)
    return device_time(point, c) if c is not None else None


def fit_scaling(points: Sequence[PointResult]) -> list[ScalingFit]:
    """time ~ L^k per (path, mode, batch) series and component (and "total"), over finished points.

    Device times are fitted, not wall times, so that a launch-bound series (whose wall time is the CPU's and
    barely grows with L) still shows how the work scales: per component its `device_time`, for "total" the
    CUDA-graph replay where there is one. On a CPU both are the measured times."""
    series: dict[tuple[str, str, int], list[PointResult]] = {}
    for p in points:
        if p.status == "ok" and p.time_s:
            series.setdefault((p.path, p.mode, p.batch), []).append(p)
    fits = []
    for (path, mode, batch), pts in series.items():
        pts = sorted(pts, key=lambda p: p.seqlen)
        names = ["total"] + list(dict.fromkeys(c.name for p in pts for c in p.components))
        for name in names:
            xs, ys = [], []
            for p in pts:
                value = scaling_time(p, name)
                if value and value > 0:
                    xs.append(p.seqlen)
                    ys.append(value)
            if len(set(xs)) < 2:
                continue
            k, r2 = power_law(xs, ys)
            half = len(xs) // 2
            k_tail = power_law(xs[half:], ys[half:])[0] if len(xs) - half >= 3 else None
            fits.append(ScalingFit(path, mode, batch, name, k, r2, k_tail, xs))
    return fits


# The span timers' cost ------------------------------------------------------------------------------------------------
def trace_cost(p: PointResult) -> float | None:
    """How much longer the call took with span timers in: the median over rounds of traced / untimed - 1, paired
    as `coverage` is (a round's traced time is the sum of its components, "other" included). Paired, because a
    load spike in a few rounds moved the two medians apart by 30% on a busy machine."""
    if p.clock == "cuda_graph":  # components are kernel times inside the replay: no timers were in it
        return None
    rounds = len(p.samples_s)
    if not rounds or not p.components or any(len(c.samples_s) != rounds for c in p.components):
        return p.traced_time_s / p.time_s - 1 if p.traced_time_s and p.time_s else None
    traced = [sum(c.samples_s[i] for c in p.components) for i in range(rounds)]
    return statistics.median(t / e for t, e in zip(traced, p.samples_s, strict=True)) - 1
