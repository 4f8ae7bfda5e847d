"""The regression gate's decision: per benchmark, is NEW worse than BASE by more than its threshold?

The rule (defaults: threshold t = 2%, alpha = 0.01, Holm's correction):

    ratio = median(NEW) / median(BASE)
    regressed  iff  the (1 - alpha) bootstrap interval of the ratio lies wholly above 1 + t
               and  a Mann-Whitney test of log NEW - log(1 + t) against log BASE rejects
                    (two-sided p < alpha, Holm-adjusted over the benchmarks tested)
    improved   iff  the same with the interval wholly below 1 / (1 + t)
    unchanged  otherwise
(for a metric where higher is better, such as a speedup or tokens/s, "worse" is a lower ratio).

Why the whole interval beyond the threshold, and not "significant and the point estimate beyond it": the
threshold is the change we tolerate, so the hypothesis to reject is "NEW is worse by at most t", not "NEW is
exactly as fast". Rejecting it only when the interval clears 1 + t keeps the false-alarm rate at most alpha / 2
for every true change up to t, including one just at t; the two-part rule alarms about half the time on a
change of exactly t and fails a build on a coin flip. The price is power: a change must exceed t by about
two standard errors of the ratio to be flagged every time. Simulated with lognormal noise: with 30 rounds a
side and 1% noise a 3% slowdown is flagged 62% of the time at t = 2% and always at t = 1%; with 2% noise and
t = 1%, 73% (30 rounds) and 89% (50 rounds); a 1% kernel slowdown in 0.05% noise is always flagged at
t = 0.5%, a 5% slowdown in 0.5% noise always at t = 2% or 3%. So each threshold goes a margin below the
smallest slowdown that must fail and above the drift between runs (below): about 0.5% for kernels and 1% for
whole-model timings on a quiet GPU. The 2% default is for benchmarks nobody has calibrated.

Why two methods: the bootstrap interval belongs to the ratio the report shows; the rank test is exact for
small samples, where the percentile bootstrap of a median is too narrow (3 rounds a side: ~5% of identical
pairs flagged at a nominal 0.5%; with the rank test, none).

What no statistic here sees: a shift between two runs of the same code (GPU clocks, thermal state, another
tenant, memory layout). The intervals measure noise within a run; the threshold is what absorbs the
difference between runs. Calibrate it: run the suite twice on one commit, `perfmamba compare` the two, and keep
every threshold above the largest change that A/A comparison shows.

Many benchmarks: each test alarms on an unchanged benchmark with probability <= alpha / 2; with 100 of them and
no correction, one false alarm somewhere becomes likely (1 - 0.995^100 = 39%) whenever the noise is comparable
to the thresholds. Holm's correction (default) keeps the chance of any false alarm below alpha over the whole
family, under any dependence between benchmarks, and costs little power: a low-noise kernel's p is far below
alpha / 100 anyway. When the noise is far below the thresholds, the threshold margin alone keeps false alarms
near zero, correction or not.

Data the statistics cannot use fall back, and the row's `method` and `note` say so:
- "separation": too few samples for the rank test to reach alpha, after Holm over the benchmarks that have raw
  samples (e.g. 3 + 3 rounds: min p = 0.1; 5 + 5 rounds reach 0.008 alone, never after Holm over 2): regressed
  only if every NEW sample is worse than every BASE sample by more than t. Its false-alarm rate is not alpha
  but at most 1 / C(n + m, n) for a true change of exactly t (5% for 3 + 3), and near zero for a change well
  inside t: record more rounds where that matters.
- "summary": no raw samples on one side (pytest-benchmark files saved without data; asv without
  --record-samples): an interval per median (asv's 99% interval, or one from the quartiles and round count),
  combined into an interval of the ratio; no rank test.
- "exact": no spread at all (deterministic metrics such as bytes or perplexity, or one value per side): the
  values are compared against the threshold directly.
- "none": one timing (or rate) per side, whose noise is unknown: reported, not judged ("not assessed").
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfmamba.gate import stats
from perfmamba.gate.readers import Measurement, load_results
from perfmamba.results import ResultsFileError

DEFAULT_THRESHOLD = 0.02
DEFAULT_ALPHA = 0.01
CORRECTIONS = ("holm", "none")
VERDICTS = ("regressed", "improved", "unchanged", "not assessed")
METHODS = ("bootstrap+rank", "separation", "summary", "exact", "none")
RESULT_KIND = "comparison"


@dataclass(frozen=True)
class GateConfig:
    """How the gate judges. `thresholds` maps glob patterns of benchmark names (fnmatch, case-sensitive) to the
    tolerated relative change; the first pattern that matches wins (list specific patterns first), else
    `default_threshold`. `higher_is_better` holds patterns of metrics where more is better, besides those whose
    unit says so (x, speedup, anything per second)."""

    default_threshold: float = DEFAULT_THRESHOLD
    thresholds: Mapping[str, float] = field(default_factory=dict)
    alpha: float = DEFAULT_ALPHA
    correction: str = "holm"
    higher_is_better: tuple[str, ...] = ()
    resamples: int = 4000
    seed: int = 0
    # The bootstrap resamples at most this many samples a side (a seeded subset beyond it): a 10,000-round
    # micro-benchmark would otherwise cost seconds, and an interval from 2000 samples is already tight.
    max_bootstrap_samples: int = 2000

    def __post_init__(self) -> None:
        _check_threshold(self.default_threshold, "default_threshold")
        for pattern, value in self.thresholds.items():
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"threshold patterns must be non-empty strings, got {pattern!r}")
            _check_threshold(value, f"threshold for {pattern!r}")
        # A private copy, so that the caller's dict cannot change a frozen config.
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if isinstance(self.higher_is_better, str):
            raise ValueError(f"higher_is_better must be a sequence of patterns, got {self.higher_is_better!r}")
        object.__setattr__(self, "higher_is_better", tuple(self.higher_is_better))
        if self.resamples < 100:
            raise ValueError(f"resamples must be >= 100, got {self.resamples}")
        if self.max_bootstrap_samples < 10:
            raise ValueError(f"max_bootstrap_samples must be >= 10, got {self.max_bootstrap_samples}")

    def threshold_for(self, name: str) -> float:
        if name in self.thresholds:
            return float(self.thresholds[name])
        for pattern, value in self.thresholds.items():
            if fnmatch.fnmatchcase(name, pattern):
                return float(value)
        return self.default_threshold

    def is_higher_better(self, name: str, measured: bool) -> bool:
        return measured or any(fnmatch.fnmatchcase(name, p) for p in self.higher_is_better)


def _check_threshold(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if not 0 <= value < 10:
        raise ValueError(f"{what} must be in [0, 10) (a relative change: 0.02 = 2%), got {value}")


@dataclass(frozen=True)
class Row:
    """The gate's finding for one benchmark. `ratio` = new_median / base_median; `ci_low` / `ci_high` its
    interval (at 1 - alpha; None where none exists); `p_value` the rank test's two-sided p-value that the
    change exceeds the threshold, `p_adjusted` after the family correction (None where no test ran)."""

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

    @property
    def change(self) -> float:
        """Relative change of the value, new / base - 1 (positive: larger, whatever the direction)."""
        return self.ratio - 1.0


@dataclass(frozen=True)
class Comparison:
    """Every row, plus what could not be compared: `missing` (in BASE, not in NEW), `added` (in NEW only),
    `renamed` (a missing name -> the added name most like it: a hint, not a match), `skipped` ((name, why))."""

    rows: tuple[Row, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    renamed: Mapping[str, str]
    skipped: tuple[tuple[str, str], ...]
    config: GateConfig
    base: str = "BASE"
    new: str = "NEW"

    def by_verdict(self, verdict: str) -> list[Row]:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
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
    def tested(self) -> int:
        """How many rows the rank test (and so the family correction) covered."""
        return sum(r.p_value is not None for r in self.rows)

    def exit_code(self, fail_on_missing: bool = False) -> int:
        """1 if any benchmark regressed (or, with `fail_on_missing`, any is missing or could not be compared),
        else 0."""
        if self.regressions:
            return 1
        if fail_on_missing and (self.missing or self.skipped):
            return 1
        return 0

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

    def to_markdown(self, *, max_rows: int = 200) -> str:
        from perfmamba.gate.report import to_markdown

        return to_markdown(self, max_rows=max_rows)

    def to_text(self) -> str:
        from perfmamba.gate.report import to_text

        return to_text(self)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# Judging one benchmark ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """`judge`'s verdict on one benchmark, before the family correction that `compare` applies."""

    ratio: float
    ci: tuple[float, float] | None
    p_worse: float | None  # one-sided rank-test p-values, where the test ran
    p_better: float | None
    verdict: str  # before the family correction
    method: str
    note: str = ""


def _noise_unknown_kind(m: Measurement) -> bool:
    """Times and rates vary from run to run; bytes, counts and a fixed model's perplexity do not."""
    return m.unit == "s" or m.unit.endswith("/s") or m.higher_is_better


def _seed(config: GateConfig, name: str) -> int:
    # Per benchmark and stable across runs and orderings: the same files always give the same intervals.
    return (config.seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % 2**63


def _beyond(low: float, high: float, threshold: float, higher_is_better: bool) -> str:
    """Which side of the tolerance band [1 / (1 + t), 1 + t] an interval [low, high] lies wholly on."""
    up, down = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if low > up:
        return "improved" if higher_is_better else "regressed"
    if high < down:
        return "regressed" if higher_is_better else "improved"
    return "unchanged"


def _spread_interval(m: Measurement, confidence: float) -> tuple[tuple[float, float], str] | None:
    """An interval for m's median, and where it came from; None when nothing tells the spread."""
    if m.has_samples and len(m.samples) >= 2:
        return stats.median_interval(np.asarray(m.samples), confidence), "order statistics of the samples"
    if m.interval is not None:
        level = f" {m.interval_confidence:.0%}" if m.interval_confidence else ""
        return m.interval, f"the source's{level} interval"
    if m.q1 is not None and m.q3 is not None and m.rounds and m.rounds >= 2:
        return stats.quartile_interval(m.median, m.q1, m.q3, m.rounds, confidence), "quartiles and rounds"
    return None


def judge(base: Measurement, new: Measurement, threshold: float, config: GateConfig, family: int = 1) -> Finding:
    """The verdict for one benchmark before the family correction (see the module docstring for the rule).

    `family`: how many benchmarks the rank tests' p-values will be corrected over (Holm). A sample size whose
    smallest attainable p cannot pass alpha after that correction is judged by the separation rule instead, not
    tested to a verdict that the correction would then always take back."""
    hib = config.is_higher_better(new.name, new.higher_is_better or base.higher_is_better)
    alpha = config.alpha
    if base.has_samples and new.has_samples:
        a = stats.as_samples(base.samples, f"{base.name} (BASE)")
        b = stats.as_samples(new.samples, f"{new.name} (NEW)")
        ratio = stats.ratio_of_medians(a, b)
        n, m = a.size, b.size
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            if n == 1 and m == 1 and _noise_unknown_kind(new):
                return Finding(ratio, None, None, None, "not assessed", "none",
                                "one timing per side: its noise is unknown")
            note = "no spread in either sample" if n > 1 or m > 1 else "one value per side, taken as exact"
            return Finding(ratio, (ratio, ratio), None, None, _beyond(ratio, ratio, threshold, hib), "exact", note)
        if 2 * stats.min_attainable_p(n, m) * family >= alpha:
            lo, hi = float(b.min() / a.max()), float(b.max() / a.min())
            over = f" after Holm over {family} tests" if family > 1 else ""
            return Finding(ratio, (lo, hi), None, None, _beyond(lo, hi, threshold, hib), "separation",
                            f"{n} + {m} samples cannot reach p < {alpha:g}{over}: judged on the full range of "
                            "ratios")
        note = ""
        cap = config.max_bootstrap_samples
        rng = np.random.default_rng(_seed(config, new.name))
        if n > cap or m > cap:
            note = f"bootstrap on {min(n, cap)} + {min(m, cap)} of {n} + {m} samples"
        a_boot = rng.choice(a, cap, replace=False) if n > cap else a
        b_boot = rng.choice(b, cap, replace=False) if m > cap else b
        lo, hi = stats.bootstrap_ratio_ci(a_boot, b_boot, confidence=1 - alpha, resamples=config.resamples,
                                          seed=_seed(config, new.name))
        p_worse, p_better = stats.threshold_test(a, b, threshold, higher_is_better=hib)
        side = _beyond(lo, hi, threshold, hib)
        p = min(1.0, 2 * min(p_worse, p_better))
        # The interval and the rank test must agree, on the same side.
        agrees = {"regressed": p_worse <= p_better, "improved": p_better < p_worse}.get(side, False)
        verdict = side if agrees and p < alpha else "unchanged"
        return Finding(ratio, (lo, hi), p_worse, p_better, verdict, "bootstrap+rank", note)
    ratio = new.median / base.median
    # One side (or both) without raw samples.
    side_conf = 1 - alpha / 2  # two intervals at 1 - alpha / 2 each: the ratio's interval holds with >= 1 - alpha
    ib, inew = _spread_interval(base, side_conf), _spread_interval(new, side_conf)
    if ib is not None and inew is not None:
        (b_lo, b_hi), b_how = ib
        (n_lo, n_hi), n_how = inew
        lo = max(n_lo, 0.0) / b_hi if b_hi > 0 else 0.0
        hi = n_hi / b_lo if b_lo > 0 else math.inf
        how = b_how if b_how == n_how else f"{b_how} (BASE), {n_how} (NEW)"
        return Finding(ratio, (lo, hi), None, None, _beyond(lo, hi, threshold, hib), "summary",
                        f"no raw samples: interval from {how}; no rank test")
    if _noise_unknown_kind(new):
        return Finding(ratio, None, None, None, "not assessed", "none",
                        "a single value on one side and no spread: noise unknown")
    return Finding(ratio, (ratio, ratio), None, None, _beyond(ratio, ratio, threshold, hib), "exact",
                    "single values, taken as exact")


def _count(m: Measurement) -> int:
    if m.has_samples:
        return len(m.samples)
    return m.rounds or 1


# The whole comparison ------------------------------------------------------------------------------------
def compare(
    base: Mapping[str, Measurement], new: Mapping[str, Measurement], config: GateConfig | None = None, *,
    base_label: str = "BASE", new_label: str = "NEW",
) -> Comparison:
    """Judge every benchmark present in both `base` and `new` (from `load_results`) and list the rest."""
    config = config or GateConfig()
    common = [name for name in base if name in new]
    missing = tuple(sorted(n for n in base if n not in new))
    added = tuple(sorted(n for n in new if n not in base))
    renamed = {}
    for name in missing:
        close = difflib.get_close_matches(name, added, n=1, cutoff=0.8)
        if close:
            renamed[name] = close[0]
    skipped: list[tuple[str, str]] = []
    comparable = []
    for name in common:
        b, n = base[name], new[name]
        if b.unit != n.unit:
            skipped.append((name, f"unit changed from {b.unit!r} to {n.unit!r}"))
        elif not (b.median > 0 and n.median > 0):
            skipped.append((name, f"a value <= 0 (BASE {b.median:g}, NEW {n.median:g}): no ratio to judge"))
        else:
            comparable.append(name)
    # The rank-tested benchmarks are at most those with raw samples on both sides: the Holm family.
    family = sum(base[k].has_samples and new[k].has_samples for k in comparable) if config.correction == "holm" else 1
    findings: dict[str, tuple[Finding, float]] = {}
    for name in comparable:
        threshold = config.threshold_for(name)
        findings[name] = (judge(base[name], new[name], threshold, config, max(1, family)), threshold)

    tested = [name for name, (f, _) in findings.items() if f.p_worse is not None]
    raw_p = {name: min(1.0, 2 * min(findings[name][0].p_worse, findings[name][0].p_better)) for name in tested}
    if config.correction == "holm":
        adjusted = dict(zip(tested, stats.holm_adjust([raw_p[n] for n in tested])))
    else:
        adjusted = dict(raw_p)

    rows = []
    for name, (f, threshold) in findings.items():
        b, n = base[name], new[name]
        verdict, note = f.verdict, f.note
        if name in adjusted and verdict in ("regressed", "improved") and not adjusted[name] < config.alpha:
            note = _join(note, f"p = {raw_p[name]:.2g} alone, not significant after Holm over {len(tested)} tests")
            verdict = "unchanged"
        rows.append(Row(
            name=name, unit=n.unit, higher_is_better=config.is_higher_better(name, n.higher_is_better or
                                                                             b.higher_is_better),
            base_median=b.median if not b.has_samples else float(np.median(b.samples)),
            new_median=n.median if not n.has_samples else float(np.median(n.samples)),
            ratio=f.ratio, ci_low=f.ci[0] if f.ci else None, ci_high=f.ci[1] if f.ci else None,
            p_value=raw_p.get(name), p_adjusted=adjusted.get(name) if name in adjusted else None,
            threshold=threshold, verdict=verdict, n_base=_count(b), n_new=_count(n), method=f.method, note=note,
        ))
    order = {v: i for i, v in enumerate(VERDICTS)}
    rows.sort(key=lambda r: (order[r.verdict], -abs(math.log(r.ratio)) if r.ratio > 0 else 0.0, r.name))
    return Comparison(rows=tuple(rows), missing=missing, added=added, renamed=renamed, skipped=tuple(skipped),
                      config=config, base=base_label, new=new_label)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def compare_files(
    base: str | os.PathLike, new: str | os.PathLike, *,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Mapping[str, float] | str | os.PathLike | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: str = "holm",
    higher_is_better: Iterable[str] = (),
    seed: int = 0,
) -> Comparison:
    """`perfmamba compare BASE NEW`: read both (any supported format; `DIR@COMMIT` picks a commit of an asv
    results folder) and compare. `thresholds` is a {glob: threshold} mapping or a file holding one
    (`load_thresholds_file`). Raises ResultsFileError for a file it cannot read."""
    if thresholds is not None and not isinstance(thresholds, Mapping):
        thresholds = load_thresholds_file(thresholds)
    config = GateConfig(default_threshold=threshold, thresholds=thresholds or {}, alpha=alpha,
                        correction=correction, higher_is_better=tuple(higher_is_better), seed=seed)
    return compare(load_results(base), load_results(new), config, base_label=os.fspath(base),
                   new_label=os.fspath(new))


def load_thresholds_file(path: str | os.PathLike) -> dict[str, float]:
    """{glob: threshold} from a JSON or TOML file: the mapping at the top level, or under a "thresholds" key
    (TOML: a [thresholds] table, or [gate.thresholds]). Values are relative changes (0.02 = 2%)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsFileError(f"{path}: cannot read thresholds file ({e.strerror or e})") from e
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise ResultsFileError(f"{path}: reading TOML needs Python >= 3.11; use JSON") from None
            doc = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are both ValueErrors
        raise ResultsFileError(f"{path}: corrupt thresholds file ({e})") from e
    if isinstance(doc, dict) and isinstance(doc.get("gate"), dict):
        doc = doc["gate"]
    if isinstance(doc, dict) and isinstance(doc.get("thresholds"), dict):
        doc = doc["thresholds"]
    if not isinstance(doc, dict):
        raise ResultsFileError(f"{path}: expected a mapping of benchmark-name patterns to thresholds")
    out = {}
    for pattern, value in doc.items():
        try:
            _check_threshold(value, f"threshold for {pattern!r}")
        except ValueError as e:
            raise ResultsFileError(f"{path}: {e}") from None
        out[str(pattern)] = float(value)
    return out

