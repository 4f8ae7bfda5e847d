"""The gate's result: a `Row` per benchmark and the `Comparison` of two sides, as data and JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from perfmamba.checks import check_choice
from perfmamba.gate.config import GateConfig

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive", "not assessed")
METHODS = ("processes", "bootstrap+rank", "separation", "summary", "exact", "none")
RESULT_KIND = "comparison"
# Exit codes of `Comparison.exit_code`: 1 is kept for "a benchmark regressed" alone, so a CI step can tell a
# regression from a run that showed nothing (2 is also what the CLI returns for bad input: neither passed).
EXIT_PASSED, EXIT_REGRESSED, EXIT_NOTHING_JUDGED = 0, 1, 2


@dataclass(frozen=True)
class Row:
    """The gate's finding for one benchmark. `ratio` = new_median / base_median; `ci_low` / `ci_high` its
    interval (at 1 - alpha; None where none exists); `p_value` the test's two-sided p-value that the change
    exceeds the threshold, `p_adjusted` after the family correction (None where no test ran). `n_base` / `n_new`
    count samples, `processes_base` / `processes_new` the processes (runs) they came from."""

    name: str
    unit: str
    higher_is_better: bool
    base_median: float
    new_median: float
    ratio: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    threshold: float
    verdict: str
    n_base: int
    n_new: int
    method: str
    note: str = ""
    processes_base: int = 1
    processes_new: int = 1
    clock: str | None = None

    @property
    def change(self) -> float:
        """Relative change of the value, new / base - 1 (positive: larger, whatever the direction)."""
        return self.ratio - 1.0


@dataclass(frozen=True)
class Comparison:
    """Every row, plus what could not be compared: `missing` (in BASE, not in NEW), `added` (in NEW only),
    `renamed` (a missing name -> the added name most like it, each added name used once: a hint, not a match),
    `skipped` ((name, why))."""

    rows: tuple[Row, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    renamed: Mapping[str, str]
    skipped: tuple[tuple[str, str], ...]
    config: GateConfig
    base: str = "BASE"
    new: str = "NEW"

    def by_verdict(self, verdict: str) -> list[Row]:
        check_choice("verdict", verdict, VERDICTS)
        return [r for r in self.rows if r.verdict == verdict]

    @property
    def regressions(self) -> list[Row]:
        return self.by_verdict("regressed")

    @property
    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for r in self.rows:
            out[r.verdict] += 1
        out["missing"] = len(self.missing)
        out["added"] = len(self.added)
        out["skipped"] = len(self.skipped)
        return out

    @property
    def judged(self) -> list[Row]:
        """The rows that received a verdict from data ("not assessed" rows did not); none judged means the
        comparison showed nothing, whatever its counts of missing and added names."""
        return [r for r in self.rows if r.verdict != "not assessed"]

    @property
    def tested(self) -> int:
        """How many rows the rank test (and so the family correction) covered."""
        return sum(r.p_value is not None for r in self.rows)

    def exit_code(self, fail_on_missing: bool = False) -> int:
        """EXIT_REGRESSED (1) if any benchmark regressed (or, with `fail_on_missing`, some are judged and any is
        missing or not comparable); EXIT_NOTHING_JUDGED (2) if no row was judged (`judged`): no name in both
        sides, none comparable, or every one "not assessed"; else EXIT_PASSED (0)."""
        if self.regressions:
            return EXIT_REGRESSED
        if not self.judged:
            # A gate that judged nothing must not pass, and "regressed" would send someone looking for one.
            return EXIT_NOTHING_JUDGED
        if fail_on_missing and (self.missing or self.skipped):
            return EXIT_REGRESSED
        return EXIT_PASSED

    def payload(self) -> dict[str, Any]:
        """The comparison as plain JSON-able data (for `perfmamba.results.write_json(path, payload,
        kind="comparison")`); an unbounded interval end is None, since JSON has no infinity."""
        return _finite({
            "base": self.base,
            "new": self.new,
            "config": {**asdict(self.config), "higher_is_better": list(self.config.higher_is_better)},
            "counts": self.counts,
            "rows": [asdict(r) for r in self.rows],
            "missing": list(self.missing),
            "added": list(self.added),
            "renamed": dict(self.renamed),
            "skipped": [list(s) for s in self.skipped],
        })

    def to_json(self) -> str:
        return json.dumps(self.payload(), indent=2, allow_nan=False) + "\n"

def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
