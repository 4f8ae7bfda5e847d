"""The profile's plots: component shares across L, time against L on log-log axes with the fitted exponents,
and every component under the measured roofline. Drawn on bare matplotlib Figures (no pyplot state)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfmamba.profiling.analysis import scaling_time
from perfmamba.profiling.formatting import component_names, fit_of, series_of, si
from perfmamba.profiling.result import PointResult, ProfileResult
from perfmamba.profiling.timers import COPIES, OTHER

PLOT_FILES = ("shares.png", "scaling.png", "roofline.png")
PANEL_WIDTH, PANEL_HEIGHT = 5.6, 3.6  # inches per series panel: the plot and its legend beside it
TITLE_CHARS_PER_INCH = 15  # characters of a 9-point title per inch of figure, to wrap it before it is cut off


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
    series = [(k, [p for p in v if p.status == "ok"]) for k, v in series_of(result).items()]
    series = [(k, v) for k, v in series if v]
    if not series:
        return None
    names = component_names(result, [p for _, v in series for p in v])
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


def _scaling_source(points: Sequence[PointResult]) -> tuple[str, str]:
    """(the y axis' label, what the times are) for the clocks the points were actually timed with."""
    if not any(p.clock == "cuda_event" for p in points):
        return ("ms per call (host clock)",
                "host clock (perf_counter): components by span self time, total without timers")
    total = "total: CUDA-graph replay" if any(p.graph_time_s for p in points) else "total: CUDA events, eager"
    if any(p.busy_fraction is not None for p in points):
        parts = "components: kernel time (profiler), or span time where kernel records overlap"
    else:
        parts = "components: span time (CUDA events)"
    return "device ms per call", f"{parts}; {total}"


def scaling_figure(result: ProfileResult):
    """log-log time per component against L (`scaling_time`), one panel per series, with the fitted k in each
    legend (beside its panel, off the lines); the title names the clock the times come from. None without a
    series of two finished points."""
    series = [(k, [p for p in v if p.status == "ok"]) for k, v in series_of(result).items()]
    series = [(k, v) for k, v in series if len(v) >= 2]
    if not series:
        return None
    names = component_names(result, [p for _, v in series for p in v])
    colors = _colors(["total", *names])
    fig = _figure(PANEL_WIDTH * len(series), PANEL_HEIGHT)
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
            f = fit_of(result, key, n)
            label = f"{n} (k={f.k:.2f})" if f else n
            ax.plot(xs, ys, marker="o", ms=3, color=colors[n], label=label,
                    lw=2.2 if n == "total" else 1.2, ls="--" if n == "other" else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(_scaling_source(points)[0])
        ax.set_title(f"{key[1]}, {key[0]}, batch {key[2]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    source = _scaling_source([p for _, v in series for p in v])[1]
    # Wrapped to the figure's width: one long line was cut off at both edges.
    fig.suptitle(textwrap.fill(f"{result.model.name} ({result.model.device}, {result.model.dtype}): time ~ L^k; "
                               f"{source}", width=int(TITLE_CHARS_PER_INCH * PANEL_WIDTH * len(series))),
                 fontsize=9)
    return fig


def plot_scaling(result: ProfileResult, path: Path) -> Path | None:
    """`scaling_figure` as a PNG at `path`."""
    fig = scaling_figure(result)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    return path


def plot_roofline(result: ProfileResult, path: Path) -> Path | None:
    """The measured roofline and every component of every finished point (larger markers for longer L)."""
    peaks = result.peaks
    points = [p for p in result.ok_points() if any(c.intensity for c in p.components)]
    if peaks is None or not points:
        return None
    names = component_names(result, points)
    colors = _colors(names)
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    intensities = [c.intensity for p in points for c in p.components if c.intensity]
    lo, hi = min(min(intensities), peaks.ridge_intensity) / 4, max(max(intensities), peaks.ridge_intensity) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peaks.matmul_flops_per_s, x * peaks.copy_bytes_per_s) for x in xs], color="black", lw=1.5,
            label=f"roofline: {si(peaks.matmul_flops_per_s, 'FLOP/s')}, {si(peaks.copy_bytes_per_s, 'B/s')}")
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
