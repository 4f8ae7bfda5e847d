"""A profile as a terminal table, JSON, CSV and plots; dense vs pruned side by side.

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
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfmamba.profiling.costs import components_of
from perfmamba.profiling.sweep import (
    STATUSES,
    PointResult,
    ProfileResult,
    ScalingFit,
    kernels_overlap,
    scaling_time,
)
from perfmamba.profiling.timers import COPIES, OTHER
from perfmamba.results import ResultsFileError, atomic_write_text, read_json, write_json

RESULT_KIND = "profile"
COMPARE_KIND = "profile-comparison"
JSON_FILE, CSV_FILE, TEXT_FILE = "profile.json", "profile.csv", "profile.txt"
COMPARE_JSON, COMPARE_CSV, COMPARE_TEXT = "compare.json", "compare.csv", "compare.txt"
PLOT_FILES = ("shares.png", "scaling.png", "roofline.png")


# Formatting helpers --------------------------------------------------------------------------------------------
def _si(x: float | None, unit: str = "", digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}g}{prefix}{unit}"
    return f"{x:.{digits}g}{unit}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _series(result: ProfileResult) -> dict[tuple[str, str, int], list[PointResult]]:
    out: dict[tuple[str, str, int], list[PointResult]] = {}
    for p in result.points:
        out.setdefault((p.path, p.mode, p.batch), []).append(p)
    return {k: sorted(v, key=lambda p: p.seqlen) for k, v in out.items()}


def _component_names(result: ProfileResult, points: Sequence[PointResult]) -> list[str]:
    seen = {c.name for p in points for c in p.components}
    order = [*components_of(_config(result)), COPIES, "mixer_fused", OTHER]
    return [n for n in order if n in seen] + sorted(seen - set(order))


def _config(result: ProfileResult):
    from perfmamba.models.config import ModelConfig

    return ModelConfig(**result.model.config)


def _fit(result: ProfileResult, series: tuple[str, str, int], component: str) -> ScalingFit | None:
    for f in result.fits:
        if (f.path, f.mode, f.batch, f.component) == (*series, component):
            return f
    return None


# The terminal table ------------------------------------------------------------------------------------------
def format_header(result: ProfileResult) -> str:
    m, peaks = result.model, result.peaks
    backends = sorted(set(m.backends.values()))
    line = (f"{m.name}: Mamba-{m.version}, {m.params / 1e6:.1f}M params, {m.device} {m.dtype}, "
            f"ops: {', '.join(backends)}")
    if peaks is not None:
        line += (f"\nmeasured peaks ({peaks.name}): {_si(peaks.matmul_flops_per_s, 'FLOP/s')} "
                 f"({peaks.dtype} {peaks.matmul_size}^3 matmul), {_si(peaks.copy_bytes_per_s, 'B/s')} (copy), "
                 f"ridge {peaks.ridge_intensity:.3g} FLOP/B")
    return line


def format_series(result: ProfileResult, series: tuple[str, str, int], points: Sequence[PointResult]) -> str:
    """One series (path, mode, batch): a row per sequence length with the time and each component's share,
    and a last row with the fitted exponent k of time ~ L^k."""
    path, mode, batch = series
    names = _component_names(result, points)
    gpu = any(p.busy_fraction is not None for p in points)
    if mode == "prefill":
        title = f"prefill, {path}, batch {batch}: time per forward, component shares (self time)"
        head = ["L", "ms", "tok/s"]
    else:
        title = f"decode, {path}, batch {batch}: TTFT (prompt of L into the cache), TPOT (one step), shares of TPOT"
        head = ["L", "TTFT ms", "TPOT ms", "tok/s", "cache KB/seq"]
    head += ["peak MB", *names, "cover"] + (["busy", "graph ms"] if gpu else [])
    rows = []
    for p in points:
        if p.status != "ok":
            rows.append([str(p.seqlen), p.status.upper(), *[""] * (len(head) - 2)])
            continue
        row = [str(p.seqlen)]
        if mode == "prefill":
            row += [_ms(p.time_s), _si(p.tokens_per_s)]
        else:
            row += [_ms(p.ttft_s), _ms(p.time_s), _si(p.tokens_per_s),
                    "-" if p.cache_bytes_per_sequence is None else f"{p.cache_bytes_per_sequence / 1024:.4g}"]
        row.append(_mb(p.peak_bytes))
        row += [_pct(c.share) if (c := p.component(n)) else "" for n in names]
        row.append(_pct(p.coverage))
        if gpu:
            busy = _pct(p.busy_fraction) + ("*" if p.launch_bound else "!" if kernels_overlap(p) else "")
            row += [busy, _ms(p.graph_time_s)]
        rows.append(row)
    fit_row = ["k"] + [""] * (len(head) - 1)
    total = _fit(result, series, "total")
    if total is not None:
        fit_row[2 if mode == "decode" else 1] = f"{total.k:.2f}"
    for i, n in enumerate(names):
        f = _fit(result, series, n)
        if f is not None:
            fit_row[len(head) - len(names) - (3 if gpu else 1) + i] = f"{f.k:.2f}"
    rows.append(fit_row)
    notes = [f"  {p.seqlen}: {p.message}" for p in points if p.message]
    text = f"{title}\n{_table(head, rows)}"
    if gpu:
        text += ("\n  busy = GPU kernel time / wall time; * = launch-bound (below "
                 f"{result.config.launch_bound_threshold:.0%}): span times there are CPU launch time; ! = kernel "
                 "records overlap (their sum exceeds the wall time): span times are the device time there")
    if notes:
        text += "\n" + "\n".join(notes)
    return text


def format_point(point: PointResult) -> str:
    """One point in full: per component its time, share, cost-model FLOPs and bytes, achieved rates, place under
    the roofline and memory."""
    head = ["component", "ms", "share", "FLOP", "bytes", "FLOP/s", "B/s", "FLOP/B", "roofline", "bound",
            "peak MB", "alloc MB"]
    rows = [[c.name, _ms(c.time_s), _pct(c.share), _si(c.flops), _si(c.bytes), _si(c.achieved_flops_per_s),
             _si(c.achieved_bytes_per_s), "-" if c.intensity is None else f"{c.intensity:.3g}",
             _pct(c.roofline_fraction), c.bound or "-", _mb(c.peak_bytes), _mb(c.allocated_bytes)]
            for c in point.components]
    title = f"{point.mode} {point.path} batch {point.batch} L {point.seqlen}: {_ms(point.time_s)} ms"
    if point.peak_bytes is not None:
        title += f", peak {_mb(point.peak_bytes)} MB ({point.memory_method})"
    return f"{title}\n{_table(head, rows)}"


def format_table(result: ProfileResult, *, detail: bool = True) -> str:
    """The readable summary: header, one table per series, and (with `detail`) the full breakdown of the
    longest finished sequence of each series."""
    parts = [format_header(result)]
    for series, points in _series(result).items():
        parts.append(format_series(result, series, points))
    if detail:
        for points in _series(result).values():
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


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


# Plots -------------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    # A bare Figure with the Agg canvas: no pyplot, so no global backend state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# tab10 index per component (its grey, 7, for the rare fused remainder; "other" is a lighter grey)
_PALETTE = {"embedding": 0, "norm": 1, "in_proj": 2, "conv1d": 3, "x_proj": 4, "ssm_scan": 5, "gated_norm": 6,
            "out_proj": 9, "lm_head": 8, "mixer_fused": 7}


def _colors(names: Sequence[str]) -> dict[str, Any]:
    """One colour per component, the same in every plot and every profile."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    fixed: dict[str, Any] = {n: cmap(i) for n, i in _PALETTE.items()}
    fixed.update({OTHER: "0.8", COPIES: "0.55", "total": "black"})
    extra = colormaps["Set2"]
    return {n: fixed.get(n, extra(i % 8)) for i, n in enumerate(names)}


def plot_shares(result: ProfileResult, path: Path) -> Path | None:
    """Stacked component shares across L, one panel per series."""
    series = [(k, [p for p in v if p.status == "ok"]) for k, v in _series(result).items()]
    series = [(k, v) for k, v in series if v]
    if not series:
        return None
    names = _component_names(result, [p for _, v in series for p in v])
    colors = _colors(names)
    fig = _figure(4.2 * len(series), 3.6)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, ((path_, mode, batch), points) in zip(axes, series, strict=True):
        x = range(len(points))
        bottom = [0.0] * len(points)
        for n in names:
            values = [100 * ((c.share or 0.0) if (c := p.component(n)) else 0.0) for p in points]
            ax.bar(x, values, bottom=bottom, color=colors[n], label=n, width=0.8)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xticks(list(x), [str(p.seqlen) for p in points], rotation=45)
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("share of time (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{mode}, {path_}, batch {batch}", fontsize=9)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{result.model.name}: component shares ({result.model.device}, {result.model.dtype})", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_scaling(result: ProfileResult, path: Path) -> Path | None:
    """log-log device time per component against L (`scaling_time`), one panel per series, with the fitted k."""
    series = [(k, [p for p in v if p.status == "ok"]) for k, v in _series(result).items()]
    series = [(k, v) for k, v in series if len(v) >= 2]
    if not series:
        return None
    names = _component_names(result, [p for _, v in series for p in v])
    colors = _colors(["total", *names])
    fig = _figure(4.2 * len(series), 3.6)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (key, points) in zip(axes, series, strict=True):
        for n in ["total", *names]:
            xs, ys = [], []
            for p in points:
                t = scaling_time(p, n)
                if t and t > 0:
                    xs.append(p.seqlen)
                    ys.append(t * 1e3)
            if len(xs) < 2:
                continue
            f = _fit(result, key, n)
            label = f"{n} (k={f.k:.2f})" if f else n
            ax.plot(xs, ys, marker="o", ms=3, color=colors[n], label=label,
                    lw=2.2 if n == "total" else 1.2, ls="--" if n == "other" else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("device ms per call")
        ax.set_title(f"{key[1]}, {key[0]}, batch {key[2]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="best", framealpha=0.6)
    fig.suptitle(f"{result.model.name}: device time ~ L^k (components: kernel time, or span time where kernel "
                 "records overlap; total: CUDA-graph replay where measured)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_roofline(result: ProfileResult, path: Path) -> Path | None:
    """The measured roofline and every component of every finished point (larger markers for longer L)."""
    peaks = result.peaks
    points = [p for p in result.ok_points() if any(c.intensity for c in p.components)]
    if peaks is None or not points:
        return None
    names = _component_names(result, points)
    colors = _colors(names)
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    intensities = [c.intensity for p in points for c in p.components if c.intensity]
    lo, hi = min(min(intensities), peaks.ridge_intensity) / 4, max(max(intensities), peaks.ridge_intensity) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peaks.matmul_flops_per_s, x * peaks.copy_bytes_per_s) for x in xs], color="black", lw=1.5,
            label=f"roofline: {_si(peaks.matmul_flops_per_s, 'FLOP/s')}, {_si(peaks.copy_bytes_per_s, 'B/s')}")
    longest = max(p.seqlen for p in points)
    marks = {"prefill": "o", "decode": "^"}
    labelled: set[str] = set()
    for p in points:
        size = 10 + 50 * math.log2(p.seqlen) / math.log2(max(longest, 2))
        for c in p.components:
            if not c.intensity or not c.achieved_flops_per_s:
                continue
            ax.scatter(c.intensity, c.achieved_flops_per_s, s=size, color=colors[c.name], alpha=0.7,
                       marker=marks.get(p.mode, "o"), label=None if c.name in labelled else c.name,
                       edgecolors="none")
            labelled.add(c.name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per minimum byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{result.model.name} on {peaks.name} (o prefill, ^ decode; size ~ log L)", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def write_plots(result: ProfileResult, out_dir: str | Path) -> list[Path]:
    """shares.png, scaling.png, roofline.png in `out_dir` (those that have data); [] without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [plot(result, out_dir / name) for plot, name in
            zip((plot_shares, plot_scaling, plot_roofline), PLOT_FILES, strict=True)]
    return [p for p in made if p is not None]


# Dense vs pruned -----------------------------------------------------------------------------------------------
@dataclass
class ComparisonRow:
    path: str
    mode: str
    batch: int
    seqlen: int
    component: str  # a component, or "total"
    base_s: float | None
    new_s: float | None
    speedup: float | None  # base / new
    base_peak_bytes: int | None
    new_peak_bytes: int | None
    memory_change: float | None  # new / base - 1
    base_flops: float | None
    new_flops: float | None


@dataclass
class ProfileComparison:
    base: str
    new: str
    rows: list[ComparisonRow] = field(default_factory=list)
    cache_bytes_per_sequence: tuple[int | None, int | None] = (None, None)
    params: tuple[int, int] = (0, 0)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def compare_profiles(base: ProfileResult, new: ProfileResult) -> ProfileComparison:
    """Per matching point (path, mode, batch, L) and component: the speedup base/new and the memory change.
    The two profiles were measured separately: speedups within the run-to-run noise are not changes."""
    new_points = {p.key: p for p in new.ok_points()}
    rows = []
    cache: tuple[int | None, int | None] = (None, None)
    for p in base.ok_points():
        q = new_points.get(p.key)
        if q is None:
            continue
        if p.mode == "decode" and cache == (None, None):
            cache = (p.cache_bytes_per_sequence, q.cache_bytes_per_sequence)
        rows.append(ComparisonRow(
            *p.key, "total", p.time_s, q.time_s, _ratio(p.time_s, q.time_s), p.peak_bytes, q.peak_bytes,
            None if not (p.peak_bytes and q.peak_bytes) else q.peak_bytes / p.peak_bytes - 1, p.flops, q.flops,
        ))
        for c in p.components:
            d = q.component(c.name)
            if d is None:
                continue
            rows.append(ComparisonRow(
                *p.key, c.name, c.time_s, d.time_s, _ratio(c.time_s, d.time_s), c.peak_bytes, d.peak_bytes,
                None if not (c.peak_bytes and d.peak_bytes) else d.peak_bytes / c.peak_bytes - 1,
                c.flops or None, d.flops or None,
            ))
    return ProfileComparison(base=base.model.name, new=new.model.name, rows=rows, cache_bytes_per_sequence=cache,
                             params=(base.model.params, new.model.params))


def format_comparison(cmp: ProfileComparison) -> str:
    """A table per point: each component's time in both, the speedup and the change of its peak memory."""
    parts = [f"{cmp.new} vs {cmp.base}: parameters {cmp.params[1] / 1e6:.2f}M vs {cmp.params[0] / 1e6:.2f}M"]
    base_cache, new_cache = cmp.cache_bytes_per_sequence
    if base_cache and new_cache:
        parts[0] += f"; decode cache {new_cache / 1024:.4g} vs {base_cache / 1024:.4g} KB per sequence " \
                    f"({_pct(new_cache / base_cache - 1)})"
    groups: dict[tuple, list[ComparisonRow]] = {}
    for row in cmp.rows:
        groups.setdefault((row.path, row.mode, row.batch, row.seqlen), []).append(row)
    head = ["component", "base ms", "new ms", "speedup", "base MB", "new MB", "memory", "FLOP change"]
    for (path, mode, batch, seqlen), rows in groups.items():
        table = [[r.component, _ms(r.base_s), _ms(r.new_s), "-" if r.speedup is None else f"{r.speedup:.3f}x",
                  _mb(r.base_peak_bytes), _mb(r.new_peak_bytes), _pct(r.memory_change),
                  _pct(r.new_flops / r.base_flops - 1) if r.base_flops and r.new_flops else "-"] for r in rows]
        parts.append(f"{mode} {path} batch {batch} L {seqlen}\n{_table(head, table)}")
    return "\n\n".join(parts) + "\n"


COMPARE_COLUMNS = ("path", "mode", "batch", "seqlen", "component", "base_s", "new_s", "speedup", "base_peak_bytes",
                   "new_peak_bytes", "memory_change", "base_flops", "new_flops")


def write_comparison(cmp: ProfileComparison, out_dir: str | Path) -> dict[str, Path]:
    import dataclasses

    out_dir = Path(out_dir)
    rows = [dataclasses.asdict(r) for r in cmp.rows]
    return {
        "compare_json": write_json(out_dir / COMPARE_JSON, dataclasses.asdict(cmp), kind=COMPARE_KIND),
        "compare_csv": atomic_write_text(out_dir / COMPARE_CSV, _csv_text(rows, COMPARE_COLUMNS)),
        "compare_text": atomic_write_text(out_dir / COMPARE_TEXT, format_comparison(cmp)),
    }


# Everything at once ------------------------------------------------------------------------------------------
def write_report(result: ProfileResult, out_dir: str | Path, *, plots: bool = True,
                 environment: dict[str, Any] | None = None) -> dict[str, Path]:
    """profile.json, profile.csv, profile.txt (the table) and the plots, in `out_dir`. Returns the paths.
    `environment`: as in `write_profile_json`."""
    out_dir = Path(out_dir)
    files = {
        "json": write_profile_json(result, out_dir / JSON_FILE, environment=environment),
        "csv": atomic_write_text(out_dir / CSV_FILE, _csv_text(csv_rows(result), CSV_COLUMNS)),
        "text": atomic_write_text(out_dir / TEXT_FILE, format_table(result)),
    }
    if plots:
        for p in write_plots(result, out_dir):
            files[p.stem] = p
    return files
