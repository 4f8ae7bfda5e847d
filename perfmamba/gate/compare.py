"""The regression gate's decision: per benchmark, is NEW worse than BASE by more than its threshold t?

    regressed     the (1 - alpha) interval of NEW / BASE lies wholly above 1 + t, and the matching one-sided
                  test of "worse by more than t" rejects at alpha (Holm-adjusted over the benchmarks tested)
    improved      the same below 1 / (1 + t)
    unchanged     the interval lies within [1 / (1 + t), 1 + t]: no change beyond t, shown
    inconclusive  neither: the data cannot tell (too few processes, too much spread); not a failure
    not assessed  no spread to judge by (one timing a side), or host-timed GPU samples without a threshold of
                  their own
(for a metric where higher is better, such as a speedup, "worse" is a lower ratio).

The unit of evidence is the process where a side has several (`processes.process_test`, method "processes":
a t-test on per-process medians whose variance is moderated towards the run's other benchmarks);
with one process a side the rounds inside it are used and the row says that the spread between processes is
unknown. The rule, why it is the rule, and its measured false-alarm and detection rates: docs/gate.md and
docs/results/gate_quality.md.
"""

from __future__ import annotations

import difflib
import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from perfmamba.gate import processes, stats
from perfmamba.gate.comparison import VERDICTS, Comparison, Row
from perfmamba.gate.config import DEFAULT_ALPHA, DEFAULT_THRESHOLD, GateConfig, load_thresholds_file
from perfmamba.gate.measurement import Measurement
from perfmamba.gate.runs import load_side, split_specs

# Stricter than difflib's default 0.6, which offers `op/conv` as the rename of `op/scan` (similarity 0.71); a
# changed parameter in a longer name (`op/old_name[L4096]` -> `op/new_name[L4096]`, 0.83) still pairs.
RENAME_SIMILARITY = 0.8


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
    """Where an interval [low, high] lies against the tolerance band [1 / (1 + t), 1 + t]: wholly on one side
    ("regressed" / "improved"), wholly inside ("unchanged"), or across an edge ("inconclusive")."""
    up, down = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if low > up:
        return "improved" if higher_is_better else "regressed"
    if high < down:
        return "regressed" if higher_is_better else "improved"
    return "unchanged" if down <= low and high <= up else "inconclusive"


def _undecided(low: float, high: float, threshold: float) -> str:
    """The verdict of an interval beyond the band whose test did not reject: inconclusive, or unchanged."""
    return "unchanged" if 1.0 / (1.0 + threshold) <= low and high <= 1.0 + threshold else "inconclusive"


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


def _tested(ratio: float, ci: tuple[float, float], p_worse: float, p_better: float, threshold: float,
            higher_is_better: bool, alpha: float, method: str, note: str) -> Finding:
    """The verdict of a test and its interval, which must agree, on the same side."""
    lo, hi = ci
    side = _beyond(lo, hi, threshold, higher_is_better)
    p = min(1.0, 2 * min(p_worse, p_better))
    agrees = {"regressed": p_worse <= p_better, "improved": p_better < p_worse}.get(side, False)
    if side in ("regressed", "improved"):
        verdict = side if agrees and p < alpha else _undecided(lo, hi, threshold)
    else:
        verdict = side
    return Finding(ratio, ci, p_worse, p_better, verdict, method, note)


def _by_processes(base: Measurement, new: Measurement, threshold: float, config: GateConfig, hib: bool,
                  prior: tuple[float, float] | None) -> Finding | None:
    """The process-level finding, where a side has several processes; None where neither has."""
    if base.processes < 2 and new.processes < 2:
        return None
    test = processes.process_test(base.process_samples, new.process_samples, threshold, higher_is_better=hib,
                                  confidence=1 - config.alpha, prior=prior)
    if test is None:
        return None
    how = "moderated over the benchmarks, " if test.moderated else ""
    note = (f"{test.n_base} + {test.n_new} processes; one process's median varies by {test.spread:.2%} "
            f"between processes ({how}df {test.df:.0f})")
    return _tested(test.ratio, test.ci, test.p_worse, test.p_better, threshold, hib, config.alpha, "processes",
                   note)


def family_prior(base: Mapping[str, Measurement], new: Mapping[str, Measurement], names: Iterable[str]
                 ) -> dict[str, tuple[float, float]]:
    """Each timing's moderation prior (d0, s0^2) (`processes.moderation_prior`), fitted over the timings of
    `names` that ran in several processes, s0^2 a trend in the log of their time; {} where none can be fitted."""
    variances, dfs, trend, fitted = [], [], [], []
    for name in names:
        b, n = base[name], new[name]
        if not _noise_unknown_kind(n) or b.processes + n.processes < 3:
            continue
        a = processes.log_process_medians(b.process_samples, name)
        c = processes.log_process_medians(n.process_samples, name)
        var, df = processes.pooled_variance(a, c)
        variances.append(var)
        dfs.append(df)
        trend.append(float(np.mean(a)))
        fitted.append(name)
    prior = processes.moderation_prior(variances, dfs, trend)
    if prior is None:
        return {}
    d0, s0 = prior
    return {name: (d0, float(v)) for name, v in zip(fitted, s0)}


def judge(base: Measurement, new: Measurement, threshold: float, config: GateConfig, family: int = 1,
          prior: tuple[float, float] | None = None) -> Finding:
    """The verdict for one benchmark before the family correction (see the module docstring for the rule).

    `family`: how many benchmarks the p-values will be corrected over (Holm). A round-level sample size whose
    smallest attainable p cannot pass alpha after that correction is judged by the separation rule instead, not
    tested to a verdict that the correction would then always take back. `prior`: the family's moderation prior
    (`family_prior`) for the process-level test."""
    hib = config.is_higher_better(new.name, new.higher_is_better or base.higher_is_better)
    alpha = config.alpha
    by_processes = _by_processes(base, new, threshold, config, hib, prior)
    if by_processes is not None:
        return by_processes
    one_process = "one process a side: the spread between processes is unknown, judged on rounds within each"
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
        timing = _noise_unknown_kind(new)
        if 2 * stats.min_attainable_p(n, m) * family >= alpha:
            lo, hi = float(b.min() / a.max()), float(b.max() / a.min())
            over = f" after Holm over {family} tests" if family > 1 else ""
            note = f"{n} + {m} samples cannot reach p < {alpha:g}{over}: judged on the full range of ratios"
            return Finding(ratio, (lo, hi), None, None, _beyond(lo, hi, threshold, hib), "separation",
                           _join(note, one_process) if timing else note)
        note = ""
        cap = config.max_bootstrap_samples
        rng = np.random.default_rng(_seed(config, new.name))
        if n > cap or m > cap:
            note = f"bootstrap on {min(n, cap)} + {min(m, cap)} of {n} + {m} samples"
        a_boot = rng.choice(a, cap, replace=False) if n > cap else a
        b_boot = rng.choice(b, cap, replace=False) if m > cap else b
        ci = stats.bootstrap_ratio_ci(a_boot, b_boot, confidence=1 - alpha, resamples=config.resamples,
                                      seed=_seed(config, new.name))
        p_worse, p_better = stats.threshold_test(a, b, threshold, higher_is_better=hib)
        return _tested(ratio, ci, p_worse, p_better, threshold, hib, alpha, "bootstrap+rank",
                       _join(note, one_process) if timing else note)
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


def _host_timed(m: Measurement) -> bool:
    return m.host_timed and m.unit == "s"


def _across_devices(b: Measurement, n: Measurement, config: GateConfig, threshold: float) -> str | None:
    """Why `b` and `n` must not be compared for having run on different GPUs, or None. Two GPUs of one host
    differ by more than a kernel change may (issue #19): only a measured spread within the threshold lets them."""
    if not (b.device and n.device) or b.device == n.device:
        return None
    where = f"timed on GPU {b.device} in BASE and {n.device} in NEW"
    if config.cross_device_spread is None:
        return f"{where}; the spread between them is not measured (cross_device_spread)"
    if config.cross_device_spread > threshold:
        return f"{where}; their spread {config.cross_device_spread:.1%} exceeds the threshold {threshold:.1%}"
    return None


# The whole comparison ------------------------------------------------------------------------------------
def compare(
    base: Mapping[str, Measurement], new: Mapping[str, Measurement], config: GateConfig | None = None, *,
    base_label: str = "BASE", new_label: str = "NEW",
) -> Comparison:
    """Judge every benchmark present in both `base` and `new` (from `load_results` or `runs.load_side`) and
    list the rest."""
    config = config or GateConfig()
    common = [name for name in base if name in new]
    missing = tuple(sorted(n for n in base if n not in new))
    added = tuple(sorted(n for n in new if n not in base))
    renamed = rename_hints(missing, added)
    skipped: list[tuple[str, str]] = []
    comparable = []
    for name in common:
        b, n = base[name], new[name]
        if b.unit != n.unit:
            skipped.append((name, f"unit changed from {b.unit!r} to {n.unit!r}"))
        elif b.clock and n.clock and b.clock != n.clock:
            skipped.append((name, f"timed with clock {b.clock!r} in BASE and {n.clock!r} in NEW"))
        elif (why := _across_devices(b, n, config, config.threshold_for(name))) is not None:
            skipped.append((name, why))
        elif not (b.median > 0 and n.median > 0):
            skipped.append((name, f"a value <= 0 (BASE {b.median:g}, NEW {n.median:g}): no ratio to judge"))
        else:
            comparable.append(name)
    host_timed = {name for name in comparable if _host_timed(base[name]) or _host_timed(new[name])}
    judged = [name for name in comparable if name not in host_timed or config.host_timed_threshold is not None]
    # The tested benchmarks are at most those with raw samples on both sides: the Holm family.
    family = sum(base[k].has_samples and new[k].has_samples for k in judged) if config.correction == "holm" else 1
    priors = family_prior(base, new, [k for k in judged if k not in host_timed]) if config.moderate else {}
    findings: dict[str, tuple[Finding, float]] = {}
    for name in comparable:
        if name not in judged:
            findings[name] = (Finding(new[name].median / base[name].median, None, None, None, "not assessed", "none",
                                      "host-timed: eager GPU calls timed by events carry the host's launch path; "
                                      "not judged without a host_timed threshold"), config.threshold_for(name))
            continue
        threshold = config.host_timed_threshold if name in host_timed else config.threshold_for(name)
        finding = judge(base[name], new[name], threshold, config, max(1, family), priors.get(name))
        if name in host_timed:
            finding = replace(finding, note=_join(finding.note, "host-timed: judged on its own threshold"))
        findings[name] = (finding, threshold)

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
            verdict = "inconclusive"
        rows.append(Row(
            name=name, unit=n.unit, higher_is_better=config.is_higher_better(name, n.higher_is_better or
                                                                             b.higher_is_better),
            base_median=_center(b), new_median=_center(n),
            ratio=f.ratio, ci_low=f.ci[0] if f.ci else None, ci_high=f.ci[1] if f.ci else None,
            p_value=raw_p.get(name), p_adjusted=adjusted.get(name) if name in adjusted else None,
            threshold=threshold, verdict=verdict, n_base=_count(b), n_new=_count(n), method=f.method, note=note,
            processes_base=b.processes, processes_new=n.processes, clock=n.clock,
        ))
    order = {v: i for i, v in enumerate(VERDICTS)}
    rows.sort(key=lambda r: (order[r.verdict], -abs(math.log(r.ratio)) if r.ratio > 0 else 0.0, r.name))
    return Comparison(rows=tuple(rows), missing=missing, added=added, renamed=renamed, skipped=tuple(skipped),
                      config=config, base=base_label, new=new_label)


def rename_hints(missing: Sequence[str], added: Sequence[str], cutoff: float = RENAME_SIMILARITY
                 ) -> dict[str, str]:
    """{missing name: the added name most like it}, one to one: the most similar pairs (difflib's ratio, at
    least `cutoff`) are taken first, and a name already paired is not offered again, since one new name cannot
    be the rename of two old ones."""
    scored = []
    for old in missing:
        matcher = difflib.SequenceMatcher(b=old)
        for new in added:
            matcher.set_seq1(new)
            # The quick ratios are upper bounds of ratio(): cheap rejections for a large sweep's lists.
            if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
                score = matcher.ratio()
                if score >= cutoff:
                    scored.append((-score, old, new))
    hints: dict[str, str] = {}
    taken: set[str] = set()
    for _, old, new in sorted(scored):
        if old not in hints and new not in taken:
            hints[old] = new
            taken.add(new)
    return hints


def _center(m: Measurement) -> float:
    """The value a row shows: the runs' geometric mean of medians where several were merged, else the median."""
    if m.groups or not m.has_samples:
        return m.median
    return float(np.median(m.samples))


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def compare_files(
    base: str | os.PathLike | Sequence[str | os.PathLike], new: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Mapping[str, float] | str | os.PathLike | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: str = "holm",
    higher_is_better: Iterable[str] = (),
    seed: int = 0,
    host_timed_threshold: float | None = None,
    cross_device_spread: float | None = None,
) -> Comparison:
    """`perfmamba compare BASE NEW`: read both (any supported format; `DIR@COMMIT` picks a commit of an asv
    results folder; several runs of a side, one per process, as a list or comma-separated) and compare.
    `thresholds` is a {glob: threshold} mapping or a file holding one (`load_thresholds_file`). Raises
    ResultsFileError for a file it cannot read."""
    if thresholds is not None and not isinstance(thresholds, Mapping):
        thresholds = load_thresholds_file(thresholds)
    config = GateConfig(default_threshold=threshold, thresholds=thresholds or {}, alpha=alpha,
                        correction=correction, higher_is_better=tuple(higher_is_better), seed=seed,
                        host_timed_threshold=host_timed_threshold, cross_device_spread=cross_device_spread)
    base_specs, new_specs = split_specs(base), split_specs(new)
    return compare(load_side(base_specs), load_side(new_specs), config, base_label=",".join(base_specs),
                   new_label=",".join(new_specs))
