"""What the profile's report, plots and comparison share: number formats, the text table, and a profile's points
grouped by series (path, mode, batch) with their components in the order a block runs them."""

from __future__ import annotations

import math
from collections.abc import Sequence

from perfmamba.models.config import ModelConfig
from perfmamba.profiling.costs import components_of
from perfmamba.profiling.sweep import PointResult, ProfileResult, ScalingFit
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
