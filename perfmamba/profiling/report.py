"""A profile as a terminal table (a legend under each), JSON and CSV, and everything at once in a report directory
(with the plots of `plots`; the dense vs pruned comparison is `compare`'s).

The JSON file is `perfmamba.results.write_json(kind="profile")`: schema_version, environment (device, versions,
git commit), the profile (`ProfileResult.to_dict()`: model and its config, the sweep's config, the measured
peaks, every point with raw samples, the scaling fits) and a top-level "benchmarks" list in the gate's minimal
schema, so `perfmamba compare` can compare two profiles across commits:
`{"name": "profile/<model>/<path>/<mode>/b<batch>/L<seqlen>/<component>", "samples": [...], "unit": "s"}`
(plus ".../total", ".../ttft" and ".../peak_memory" in bytes).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfmamba.profiling.formatting import (
    Series,
    component_names,
    fit_of,
    legend,
    mb,
    ms,
    pct,
    series_of,
    si,
    table,
)
from perfmamba.profiling.plots import PLOT_FILES, write_plots
from perfmamba.profiling.sweep import STATUSES, PointResult, ProfileResult, kernels_overlap
from perfmamba.results import ResultsFileError, atomic_write_text, read_json, write_json

RESULT_KIND = "profile"
JSON_FILE, CSV_FILE, TEXT_FILE = "profile.json", "profile.csv", "profile.txt"
CLOCKS = {"perf_counter": "host clock, perf_counter", "cuda_event": "CUDA events"}

__all__ = [
    "CSV_COLUMNS", "JSON_FILE", "PLOT_FILES", "RESULT_KIND", "csv_rows", "csv_text", "format_header", "format_point",
    "format_series", "format_table", "gate_entries", "read_profile", "trace_cost", "validate_profile",
    "write_profile_json", "write_report",
]


# The terminal table ------------------------------------------------------------------------------------------
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


def trace_cost(p: PointResult) -> float | None:
    """How much longer the call took with span timers in: the median over rounds of traced / untimed - 1, paired
    as `coverage` is (a round's traced time is the sum of its components, "other" included). Paired, because a
    load spike in a few rounds moved the two medians apart by 30% on a busy machine."""
    rounds = len(p.samples_s)
    if not rounds or not p.components or any(len(c.samples_s) != rounds for c in p.components):
        return p.traced_time_s / p.time_s - 1 if p.traced_time_s and p.time_s else None
    traced = [sum(c.samples_s[i] for c in p.components) for i in range(rounds)]
    return statistics.median(t / e for t, e in zip(traced, p.samples_s, strict=True)) - 1


def _trace(p: PointResult) -> str:
    cost = trace_cost(p)
    return "-" if cost is None else f"{cost:+.0%}"


def _series_legend(result: ProfileResult, mode: str, points: Sequence[PointResult], gpu: bool) -> str:
    clock = CLOCKS.get(next((p.clock for p in points if p.clock), ""), "")
    call = "forward" if mode == "prefill" else "step"
    if mode == "prefill":
        entries = [("ms", f"median time of one forward over batch x L tokens, without span timers ({clock})"),
                   ("tok/s", "batch x L / ms")]
    else:
        entries = [("TTFT ms", "a prefill of the L-token prompt into the cache"),
                   ("TPOT ms", f"median time of one decode step, without span timers ({clock})"),
                   ("tok/s", "batch / TPOT"), ("cache KB/seq", "conv and SSM state per sequence, measured")]
    where = "weights, inputs and cache included (the allocator's peak)" if gpu else \
        "the call's own tensors (weights, inputs and cache not counted)"
    entries += [
        ("peak MB", f"most memory live at once during one {call}: {where}"),
        ("component columns", f"share of the {call} with span timers in, by component self time (median of rounds);"
                              " other = time outside every component (residual adds, casts, Python)"),
        ("cover", "the components' time / the untimed call's, paired round by round: above 100% when the timers' "
                  "own cost, which lands inside the spans, exceeds the time outside them (see trace)"),
        ("trace", "how much longer the call took with span timers in than without"),
        ("k", "row of fitted exponents of time ~ L^k over the series (under ms the total's): 1 linear, 0 flat"),
    ]
    if gpu:
        entries += [("busy", "GPU kernel time / wall time; * = launch-bound (below "
                             f"{result.config.launch_bound_threshold:.0%}): span times there are CPU launch time; "
                             "! = kernel records overlap (their sum exceeds the wall time): span times are the "
                             "device time there"),
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


# JSON, CSV ---------------------------------------------------------------------------------------------------
def _bench_name(model: str) -> str:
    # A checkpoint path would make names differ between machines: keep the directory's name.
    return Path(model).name if ("/" in model or "\\" in model) else model


def gate_entries(result: ProfileResult) -> list[dict[str, Any]]:
    """The gate's minimal schema: raw samples of every finished point's total and components."""
    model = _bench_name(result.model.name)
    out: list[dict[str, Any]] = []
    for p in result.ok_points():
        base = f"profile/{model}/{p.path}/{p.mode}/b{p.batch}/L{p.seqlen}"
        out.append({"name": f"{base}/total", "samples": p.samples_s, "unit": "s"})
        if p.ttft_samples_s:
            out.append({"name": f"{base}/ttft", "samples": p.ttft_samples_s, "unit": "s"})
        for c in p.components:
            if c.samples_s:
                out.append({"name": f"{base}/{c.name}", "samples": c.samples_s, "unit": "s"})
        if p.peak_bytes is not None:
            out.append({"name": f"{base}/peak_memory", "samples": [p.peak_bytes], "unit": "bytes"})
    return out


def write_profile_json(result: ProfileResult, path: str | Path, *, environment: dict[str, Any] | None = None) -> Path:
    """`result` as JSON, with the gate's benchmark entries; `environment` replaces this machine's (for a profile
    measured elsewhere and re-rendered here)."""
    extra = {"environment": environment} if environment is not None else {}
    return write_json(path, {**extra, **result.to_dict(), "benchmarks": gate_entries(result)}, kind=RESULT_KIND)


def validate_profile(doc: dict[str, Any], source: str = "profile") -> ProfileResult:
    """Check a profile document's layout and return it as a `ProfileResult`; ResultsFileError names the
    problem."""
    for key, kind in (("model", dict), ("config", dict), ("points", list), ("benchmarks", list)):
        if not isinstance(doc.get(key), kind):
            raise ResultsFileError(f"{source}: '{key}' must be a {kind.__name__}, got {type(doc.get(key)).__name__}")
    for i, p in enumerate(doc["points"]):
        if not isinstance(p, dict) or p.get("status") not in STATUSES:
            raise ResultsFileError(f"{source}: points[{i}] has no valid status: {p!r:.200}")
        if p["status"] == "ok" and not (isinstance(p.get("time_s"), (int, float)) and p["time_s"] > 0):
            raise ResultsFileError(f"{source}: points[{i}] is ok but its time_s is {p.get('time_s')!r}")
    for i, b in enumerate(doc["benchmarks"]):
        if not (isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("samples"), list)):
            raise ResultsFileError(f"{source}: benchmarks[{i}] needs a 'name' and a 'samples' list")
    try:
        return ProfileResult.from_dict(doc)
    except ValueError as e:
        raise ResultsFileError(f"{source}: {e}") from e


def read_profile(path: str | Path) -> ProfileResult:
    """A profile written by `write_profile_json` (a file, or a report directory holding profile.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_FILE
    return validate_profile(read_json(path, kind=RESULT_KIND), str(path))


CSV_COLUMNS = (
    "model", "path", "mode", "batch", "seqlen", "status", "component", "time_s", "share", "busy_s", "flops",
    "bytes", "matmul_flops", "counted_flops", "intensity", "achieved_flops_per_s", "achieved_bytes_per_s",
    "roofline_fraction", "bound", "peak_bytes", "allocated_bytes", "retained_bytes", "point_time_s", "ttft_s",
    "tokens_per_s", "point_peak_bytes", "cache_bytes_per_sequence", "busy_fraction", "launch_bound",
    "graph_time_s", "message",
)


def csv_rows(result: ProfileResult) -> list[dict[str, Any]]:
    """One row per point and component (one row with an empty component for a point that did not finish)."""
    rows = []
    for p in result.points:
        base = {
            "model": result.model.name, "path": p.path, "mode": p.mode, "batch": p.batch, "seqlen": p.seqlen,
            "status": p.status, "point_time_s": p.time_s, "ttft_s": p.ttft_s, "tokens_per_s": p.tokens_per_s,
            "point_peak_bytes": p.peak_bytes, "cache_bytes_per_sequence": p.cache_bytes_per_sequence,
            "busy_fraction": p.busy_fraction, "launch_bound": p.launch_bound, "graph_time_s": p.graph_time_s,
            "message": p.message,
        }
        if not p.components:
            rows.append({**base, "component": ""})
        for c in p.components:
            rows.append({**base, **{k: getattr(c, k) for k in CSV_COLUMNS if hasattr(c, k) and k != "name"},
                         "component": c.name})
    return rows


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


# Everything at once ------------------------------------------------------------------------------------------
def write_report(result: ProfileResult, out_dir: str | Path, *, plots: bool = True,
                 environment: dict[str, Any] | None = None) -> dict[str, Path]:
    """profile.json, profile.csv, profile.txt (the table) and the plots, in `out_dir`. Returns the paths.
    `environment`: as in `write_profile_json`."""
    out_dir = Path(out_dir)
    files = {
        "json": write_profile_json(result, out_dir / JSON_FILE, environment=environment),
        "csv": atomic_write_text(out_dir / CSV_FILE, csv_text(csv_rows(result), CSV_COLUMNS)),
        "text": atomic_write_text(out_dir / TEXT_FILE, format_table(result)),
    }
    if plots:
        for p in write_plots(result, out_dir):
            files[p.stem] = p
    return files
