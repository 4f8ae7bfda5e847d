"""A profile as text: number formats, the terminal tables (one per series, one point in full) with a legend under
each, and a profile's points grouped by series (path, mode, batch) with their components in the order a block
runs them (which the plots and the comparison share)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from perfmamba.models.config import ModelConfig
from perfmamba.profiling.analysis import kernels_overlap, trace_cost
from perfmamba.profiling.costs import components_of
from perfmamba.profiling.result import PointResult, ProfileResult, ScalingFit
from perfmamba.profiling.timers import COPIES, OTHER

Series = tuple[str, str, int]  # (path, mode, batch)


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}g}{prefix}{unit}"
    return f"{x:.{digits}g}{unit}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def legend(entries: Sequence[tuple[str, str]]) -> str:
    """The lines under a table that say what its columns and special rows mean: `name = meaning`, indented."""
    return "\n".join(f"  {name} = {meaning}" for name, meaning in entries)


def series_of(result: ProfileResult) -> dict[Series, list[PointResult]]:
    out: dict[Series, list[PointResult]] = {}
    for p in result.points:
        out.setdefault((p.path, p.mode, p.batch), []).append(p)
    return {k: sorted(v, key=lambda p: p.seqlen) for k, v in out.items()}


def component_names(result: ProfileResult, points: Sequence[PointResult]) -> list[str]:
    seen = {c.name for p in points for c in p.components}
    order = [*components_of(ModelConfig(**result.model.config)), COPIES, "mixer_fused", OTHER]
    return [n for n in order if n in seen] + sorted(seen - set(order))


def fit_of(result: ProfileResult, series: Series, component: str) -> ScalingFit | None:
    for f in result.fits:
        if (f.path, f.mode, f.batch, f.component) == (*series, component):
            return f
    return None


# The terminal table ---------------------------------------------------------------------------------------------------
CLOCKS = {"perf_counter": "host clock, perf_counter", "cuda_event": "CUDA events around eager calls",
          "cuda_graph": "CUDA-graph replay"}


def format_header(result: ProfileResult) -> str:
    m, peaks = result.model, result.peaks
    backends = sorted(set(m.backends.values()))
    line = (f"{m.name}: Mamba-{m.version}, {m.params / 1e6:.1f}M params, {m.device} {m.dtype}, "
            f"ops: {', '.join(backends)}")
    if peaks is not None:
        line += (f"\nmeasured peaks ({peaks.name}): {si(peaks.matmul_flops_per_s, 'FLOP/s')} "
                 f"({peaks.dtype} {peaks.matmul_size}^3 matmul), {si(peaks.copy_bytes_per_s, 'B/s')} (copy), "
                 f"ridge {peaks.ridge_intensity:.3g} FLOP/B")
    return line


def _trace(p: PointResult) -> str:
    cost = trace_cost(p)
    return "-" if cost is None else f"{cost:+.0%}"


def _series_legend(result: ProfileResult, mode: str, points: Sequence[PointResult], gpu: bool) -> str:
    clock_name = next((p.clock for p in points if p.clock), "")
    clock, graphed = CLOCKS.get(clock_name, ""), clock_name == "cuda_graph"
    call = "forward" if mode == "prefill" else "step"
    if mode == "prefill":
        entries = [("ms", f"median time of one forward over batch x L tokens, without span timers ({clock})"),
                   ("tok/s", "batch x L / ms")]
    else:
        ttft_clock = CLOCKS["cuda_event" if gpu else "perf_counter"]
        entries = [("TTFT ms", f"a prefill of the L-token prompt into the cache ({ttft_clock})"),
                   ("TPOT ms", f"median time of one decode step ({clock})"),
                   ("tok/s", "batch / TPOT"), ("cache KB/seq", "conv and SSM state per sequence, measured")]
    where = "weights, inputs and cache included (the allocator's peak)" if gpu else \
        "the call's own tensors (weights, inputs and cache not counted)"
    entries.append(("peak MB", f"most memory live at once during one {call}: {where}"))
    if graphed:
        entries += [
            ("component columns", "share of the kernel time in the replayed step, by component (its kernels' device "
                                  "time in the replay); other = kernels outside every component (residual adds)"),
            ("cover", "the kernels' time / the replay's: the rest is the gaps between kernels"),
            ("trace", "- (no span timers in a replayed graph)"),
        ]
    else:
        entries += [
            ("component columns", f"share of the {call} with span timers in, by component self time (median of "
                                  "rounds); other = time outside every component (residual adds, casts, Python)"),
            ("cover", "the components' time / the untimed call's, paired round by round: above 100% when the "
                      "timers' own cost, which lands inside the spans, exceeds the time outside them (see trace)"),
            ("trace", "how much longer the call took with span timers in than without"),
        ]
    entries.append(("k", "row of fitted exponents of time ~ L^k over the series (under ms the total's): 1 linear, "
                         "0 flat"))
    if gpu:
        entries += [("busy", "GPU kernel time / wall time; * = launch-bound (below "
                             f"{result.config.launch_bound_threshold:.0%}): span times there are CPU launch time; "
                             "! = the kernels summed to more than the untimed call: the profiler pass ran slower "
                             "than the timed rounds (its own time is profiled_time_s in the JSON); span times are "
                             "the device time there"),
                    ("graph ms", "the call replayed from a CUDA graph (no launch overhead)")]
    if any(p.status != "ok" for p in points):
        entries.append(("OOM / SKIPPED / ERROR", "rows not measured; why is listed below"))
    return legend(entries)


def format_series(result: ProfileResult, series: Series, points: Sequence[PointResult]) -> str:
    """One series (path, mode, batch): a row per sequence length with the time and each component's share,
    a last row with the fitted exponent k of time ~ L^k, and a legend."""
    path, mode, batch = series
    names = component_names(result, points)
    gpu = any(p.busy_fraction is not None for p in points)
    if mode == "prefill":
        title = f"prefill, {path}, batch {batch}: time per forward, component shares (self time)"
        head = ["L", "ms", "tok/s"]
    else:
        title = f"decode, {path}, batch {batch}: TTFT (prompt of L into the cache), TPOT (one step), shares of TPOT"
        head = ["L", "TTFT ms", "TPOT ms", "tok/s", "cache KB/seq"]
    total_column = head.index("ms" if mode == "prefill" else "TPOT ms")
    head.append("peak MB")
    first = len(head)
    head += [*names, "cover", "trace"] + (["busy", "graph ms"] if gpu else [])
    rows = []
    for p in points:
        if p.status != "ok":
            rows.append([str(p.seqlen), p.status.upper(), *[""] * (len(head) - 2)])
            continue
        row = [str(p.seqlen)]
        if mode == "prefill":
            row += [ms(p.time_s), si(p.tokens_per_s)]
        else:
            row += [ms(p.ttft_s), ms(p.time_s), si(p.tokens_per_s),
                    "-" if p.cache_bytes_per_sequence is None else f"{p.cache_bytes_per_sequence / 1024:.4g}"]
        row.append(mb(p.peak_bytes))
        row += [pct(c.share) if (c := p.component(n)) else "" for n in names]
        row += [pct(p.coverage), _trace(p)]
        if gpu:
            busy = pct(p.busy_fraction) + ("*" if p.launch_bound else "!" if kernels_overlap(p) else "")
            row += [busy, ms(p.graph_time_s)]
        rows.append(row)
    fit_row = ["k"] + [""] * (len(head) - 1)
    for column, name in [(total_column, "total"), *((first + i, n) for i, n in enumerate(names))]:
        if (f := fit_of(result, series, name)) is not None:
            fit_row[column] = f"{f.k:.2f}"
    rows.append(fit_row)
    notes = [f"  {p.seqlen}: {p.message}" for p in points if p.message]
    text = f"{title}\n{table(head, rows)}\n{_series_legend(result, mode, points, gpu)}"
    if notes:
        text += "\n" + "\n".join(notes)
    return text


POINT_LEGEND = legend([
    ("ms, share", "the component's self time per call and its share (as in the series table)"),
    ("FLOP, bytes", "the cost model's FLOPs and minimum bytes (inputs, outputs and weights moved once)"),
    ("FLOP/s, B/s", "those over the component's device time; FLOP/B = their ratio, the arithmetic intensity"),
    ("roofline", "achieved / attainable FLOP/s at that intensity under the measured peaks (above 100%: the "
                 "working set stayed in cache); bound = the roof that limits at that intensity"),
    ("peak MB", "most memory live above the component's start, its output included; alloc MB = all it "
                "allocated, freed or not (summed over layers)"),
])


def format_point(point: PointResult) -> str:
    """One point in full: per component its time, share, cost-model FLOPs and bytes, achieved rates, place under
    the roofline and memory; a legend under it."""
    head = ["component", "ms", "share", "FLOP", "bytes", "FLOP/s", "B/s", "FLOP/B", "roofline", "bound",
            "peak MB", "alloc MB"]
    rows = [[c.name, ms(c.time_s), pct(c.share), si(c.flops), si(c.bytes), si(c.achieved_flops_per_s),
             si(c.achieved_bytes_per_s), "-" if c.intensity is None else f"{c.intensity:.3g}",
             pct(c.roofline_fraction), c.bound or "-", mb(c.peak_bytes), mb(c.allocated_bytes)]
            for c in point.components]
    title = f"{point.mode} {point.path} batch {point.batch} L {point.seqlen}: {ms(point.time_s)} ms"
    if point.peak_bytes is not None:
        title += f", peak {mb(point.peak_bytes)} MB ({point.memory_method})"
    return f"{title}\n{table(head, rows)}\n{POINT_LEGEND}"


def format_table(result: ProfileResult, *, detail: bool = True) -> str:
    """The readable summary: header, one table per series, and (with `detail`) the full breakdown of the
    longest finished sequence of each series."""
    parts = [format_header(result)]
    for series, points in series_of(result).items():
        parts.append(format_series(result, series, points))
    if detail:
        for points in series_of(result).values():
            done = [p for p in points if p.status == "ok"]
            if done:
                parts.append(format_point(done[-1]))
    parts += [f"note: {n}" for n in result.notes]
    return "\n\n".join(parts) + "\n"
