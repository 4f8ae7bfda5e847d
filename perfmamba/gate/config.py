"""How the gate judges: its configuration (thresholds per benchmark pattern, significance, correction) and the
threshold files it reads."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from perfmamba.checks import check_at_least, check_choice, check_in_range, check_relative_change
from perfmamba.results import ResultsFileError, parse_toml

DEFAULT_THRESHOLD = 0.02
DEFAULT_ALPHA = 0.01
CORRECTIONS = ("holm", "none")


@dataclass(frozen=True)
class GateConfig:
    """How the gate judges. `thresholds` maps glob patterns of benchmark names (fnmatch, case-sensitive) to the
    tolerated relative change; the first pattern that matches wins (list specific patterns first), else
    `default_threshold`. `higher_is_better` holds patterns of metrics where more is better, besides those whose
    unit says so (x, speedup, anything per second). `host_timed_threshold`: the threshold of host-timed GPU
    samples (eager calls timed by events: the host's launch path is in them); None leaves them not assessed.
    `cross_device_spread`: the measured spread between the GPUs of a host (max/min - 1 of the same work on each);
    a benchmark timed on one GPU in BASE and another in NEW is judged only where it is within the threshold,
    and never where it is None (unmeasured)."""

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
    host_timed_threshold: float | None = None
    cross_device_spread: float | None = None
    # Moderate each benchmark's between-process variance towards the family's (perfmamba.gate.processes).
    moderate: bool = True

    def __post_init__(self) -> None:
        check_relative_change("default_threshold", self.default_threshold)
        if self.host_timed_threshold is not None:
            check_relative_change("host_timed_threshold", self.host_timed_threshold)
        if self.cross_device_spread is not None:
            check_relative_change("cross_device_spread", self.cross_device_spread)
        for pattern, value in self.thresholds.items():
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"threshold patterns must be non-empty strings, got {pattern!r}")
            check_relative_change(f"threshold for {pattern!r}", value)
        # A private copy, so that the caller's dict cannot change a frozen config.
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        check_in_range("alpha", self.alpha, 0, 0.5, closed="()")
        check_choice("correction", self.correction, CORRECTIONS)
        if isinstance(self.higher_is_better, str):
            raise ValueError(f"higher_is_better must be a sequence of patterns, got {self.higher_is_better!r}")
        object.__setattr__(self, "higher_is_better", tuple(self.higher_is_better))
        check_at_least("resamples", self.resamples, 100, integer=False)
        check_at_least("max_bootstrap_samples", self.max_bootstrap_samples, 10, integer=False)

    def threshold_for(self, name: str) -> float:
        if name in self.thresholds:
            return float(self.thresholds[name])
        for pattern, value in self.thresholds.items():
            if fnmatch.fnmatchcase(name, pattern):
                return float(value)
        return self.default_threshold

    def is_higher_better(self, name: str, measured: bool) -> bool:
        return measured or any(fnmatch.fnmatchcase(name, p) for p in self.higher_is_better)





def load_thresholds_file(path: str | os.PathLike) -> dict[str, float]:
    """{glob: threshold} from a JSON or TOML file: the mapping at the top level, or under a "thresholds" key
    (TOML: a [thresholds] table, or [gate.thresholds]). Values are relative changes (0.02 = 2%)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsFileError(f"{path}: cannot read thresholds file ({e.strerror or e})") from e
    try:
        doc = parse_toml(text) if path.suffix == ".toml" else json.loads(text)
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
            check_relative_change(f"threshold for {pattern!r}", value)
        except ValueError as e:
            raise ResultsFileError(f"{path}: {e}") from None
        out[str(pattern)] = float(value)
    return out

