"""Dense vs pruned: per matching point and component, the speedup with its interval, and the memory and FLOP
changes, as a table, JSON and CSV.

The two profiles ran one after the other, so a ratio mixes the change with the drift between the two runs (clock,
load, caches). Two yardsticks say which ratios are noise:
- an interval for each speedup from the rounds' spread (a bootstrap of each side's median), which sees the noise
  inside each run but not between them;
- the noise floor of the point: the largest change among components whose cost (FLOPs and bytes, from the cost
  model) is the same in both models. Those did the same work, so whatever they moved by is drift (on a loaded
  2-core machine an untouched in_proj came out at 0.2x, printed as a plain ratio before).
A ratio whose interval holds 1, or that is no larger than the floor, is marked as within noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perfmamba.gate.stats import bootstrap_ratio_ci
from perfmamba.profiling.formatting import legend, mb, ms, pct, table
from perfmamba.profiling.result import ComponentStats, ProfileResult, csv_text
from perfmamba.results import atomic_write_text, write_json

COMPARE_KIND = "profile-comparison"
COMPARE_JSON, COMPARE_CSV, COMPARE_TEXT = "compare.json", "compare.csv", "compare.txt"
CONFIDENCE = 0.95  # of the speedup intervals


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
    speedup_low: float | None = None  # the interval of `speedup` from the rounds (CONFIDENCE)
    speedup_high: float | None = None
    same_cost: bool = False  # the cost model gives both the same FLOPs and bytes: any change is drift
    noise_floor: float | None = None  # the point's largest speedup (or slowdown) among same-cost components
    within_noise: bool | None = None  # the interval holds 1, or the ratio is within the noise floor


@dataclass
class ProfileComparison:
    base: str
    new: str
    rows: list[ComparisonRow] = field(default_factory=list)
    cache_bytes_per_sequence: tuple[int | None, int | None] = (None, None)
    params: tuple[int, int] = (0, 0)
    confidence: float = CONFIDENCE


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _interval(base: Sequence[float], new: Sequence[float]) -> tuple[float | None, float | None]:
    """The speedup's (base / new) interval from a bootstrap of each side's rounds; None without two positive
    samples a side (a component that took no measurable time in some round has no ratio to resample)."""
    if len(base) < 2 or len(new) < 2 or min(base) <= 0 or min(new) <= 0:
        return None, None
    lo, hi = bootstrap_ratio_ci(np.asarray(base, float), np.asarray(new, float), confidence=CONFIDENCE)
    return 1.0 / hi, 1.0 / lo  # the bootstrap's ratio is new / base


def _factor(ratio: float) -> float:
    """How far a ratio is from 1, either way (1.25 for 1.25x and for 0.8x)."""
    return max(ratio, 1.0 / ratio)


def _same_cost(a: ComponentStats, b: ComponentStats) -> bool:
    return (a.flops, a.bytes) == (b.flops, b.bytes) and (a.flops > 0 or a.bytes > 0)


def _judge(rows: list[ComparisonRow]) -> None:
    """Set the noise floor of one point's rows and mark the ratios within noise."""
    drift = [_factor(r.speedup) for r in rows if r.same_cost and r.speedup]
    floor = max(drift) if drift else None
    for r in rows:
        r.noise_floor = floor
        if r.speedup is None:
            continue
        holds_one = r.speedup_low is not None and r.speedup_low <= 1.0 <= r.speedup_high
        r.within_noise = holds_one or (floor is not None and _factor(r.speedup) <= floor)


def compare_profiles(base: ProfileResult, new: ProfileResult) -> ProfileComparison:
    """Per matching point (path, mode, batch, L) and component: the speedup base/new with its interval and
    whether it is within noise (see the module's docstring), and the memory change."""
    new_points = {p.key: p for p in new.ok_points()}
    rows = []
    cache: tuple[int | None, int | None] = (None, None)
    for p in base.ok_points():
        q = new_points.get(p.key)
        if q is None:
            continue
        if p.mode == "decode" and cache == (None, None):
            cache = (p.cache_bytes_per_sequence, q.cache_bytes_per_sequence)
        point_rows = [ComparisonRow(
            *p.key, "total", p.time_s, q.time_s, _ratio(p.time_s, q.time_s), p.peak_bytes, q.peak_bytes,
            None if not (p.peak_bytes and q.peak_bytes) else q.peak_bytes / p.peak_bytes - 1, p.flops, q.flops,
            *_interval(p.samples_s, q.samples_s),
        )]
        for c in p.components:
            d = q.component(c.name)
            if d is None:
                continue
            point_rows.append(ComparisonRow(
                *p.key, c.name, c.time_s, d.time_s, _ratio(c.time_s, d.time_s), c.peak_bytes, d.peak_bytes,
                None if not (c.peak_bytes and d.peak_bytes) else d.peak_bytes / c.peak_bytes - 1,
                c.flops or None, d.flops or None, *_interval(c.samples_s, d.samples_s), same_cost=_same_cost(c, d),
            ))
        _judge(point_rows)
        rows += point_rows
    return ProfileComparison(base=base.model.name, new=new.model.name, rows=rows, cache_bytes_per_sequence=cache,
                             params=(base.model.params, new.model.params))


def _speedup(r: ComparisonRow) -> str:
    if r.speedup is None:
        return "-"
    return f"~{r.speedup:.2f}x" if r.within_noise else f"{r.speedup:.3f}x"


def _span(r: ComparisonRow) -> str:
    if r.speedup_low is None or r.speedup_high is None or not math.isfinite(r.speedup_high):
        return "-"
    return f"{r.speedup_low:.2f}-{r.speedup_high:.2f}"


def _legend(confidence: float) -> str:
    return legend([
        ("speedup", "base ms / new ms (medians); ~ marks a ratio within noise: its interval holds 1, or it is no "
                    "larger than the noise floor"),
        (f"{confidence:.0%} interval", "of the speedup, from the spread of each side's rounds (noise inside each "
                                       "run; the drift between the two runs shows in the noise floor instead)"),
        ("noise floor", "the largest change, either way, of the components the cost model gives the same FLOPs "
                        "and bytes in both (= same cost): they did the same work, so their change is drift"),
        ("memory", "change of the peak memory live during the call (component: above its start)"),
        ("FLOP change", "of the cost model's FLOPs"),
    ])


def format_comparison(cmp: ProfileComparison) -> str:
    """A table per point: each component's time in both, the speedup with its interval (within noise marked),
    the change of its peak memory and FLOPs; the noise floor under each table and a legend at the end."""
    parts = [f"{cmp.new} vs {cmp.base}: parameters {cmp.params[1] / 1e6:.2f}M vs {cmp.params[0] / 1e6:.2f}M"]
    base_cache, new_cache = cmp.cache_bytes_per_sequence
    if base_cache and new_cache:
        parts[0] += f"; decode cache {new_cache / 1024:.4g} vs {base_cache / 1024:.4g} KB per sequence " \
                    f"({pct(new_cache / base_cache - 1)})"
    groups: dict[tuple, list[ComparisonRow]] = {}
    for row in cmp.rows:
        groups.setdefault((row.path, row.mode, row.batch, row.seqlen), []).append(row)
    head = ["component", "base ms", "new ms", "speedup", f"{cmp.confidence:.0%} interval", "base MB", "new MB",
            "memory", "FLOP change"]
    for (path, mode, batch, seqlen), rows in groups.items():
        lines = [[r.component + (" (same cost)" if r.same_cost else ""), ms(r.base_s), ms(r.new_s), _speedup(r),
                  _span(r), mb(r.base_peak_bytes), mb(r.new_peak_bytes), pct(r.memory_change),
                  pct(r.new_flops / r.base_flops - 1) if r.base_flops and r.new_flops else "-"] for r in rows]
        floor = rows[0].noise_floor
        note = (f"  noise floor here: {floor:.2f}x (same-cost components)" if floor else
                "  noise floor here: none (no component has the same cost in both)")
        parts.append(f"{mode} {path} batch {batch} L {seqlen}\n{table(head, lines)}\n{note}")
    if cmp.rows:
        parts.append(_legend(cmp.confidence))
    return "\n\n".join(parts) + "\n"


COMPARE_COLUMNS = tuple(f.name for f in dataclasses.fields(ComparisonRow))


def write_comparison(cmp: ProfileComparison, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    rows = [dataclasses.asdict(r) for r in cmp.rows]
    return {
        "compare_json": write_json(out_dir / COMPARE_JSON, dataclasses.asdict(cmp), kind=COMPARE_KIND),
        "compare_csv": atomic_write_text(out_dir / COMPARE_CSV, csv_text(rows, COMPARE_COLUMNS)),
        "compare_text": atomic_write_text(out_dir / COMPARE_TEXT, format_comparison(cmp)),
    }
