"""What the gate compares: a `Measurement` per benchmark and run, and the checks every result reader shares."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfmamba.results import ResultsFileError

_TIME_SCALE = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
               "ns": 1e-9}
_BYTE_UNITS = {"b", "byte", "bytes"}
# Units of quantities where more is better (a speedup factor, a throughput); everything else (time, memory,
# perplexity, error) is better lower.
HIGHER_IS_BETTER_UNITS = frozenset({"x", "speedup", "hz", "ops", "flops"})


@dataclass(frozen=True)
class Measurement:
    """One benchmark of one run: raw samples where the source has them, else summary statistics.

    `unit` is canonical ("s" for every time unit, "bytes" for memory, else as the source wrote it), and
    `samples` / `median` / `interval` are in it. `interval` is the source's or the quartiles' interval for
    the median (used only without samples); `rounds` is the number of measurements behind `median`.
    `groups`: the samples of each process (run) of a side where several were merged (`perfmamba.gate.runs`),
    the process being the statistical unit. `clock`: how a timing was taken (`perfmamba.timing.CLOCKS`), where
    the source says; "cuda_event" is eager GPU timing, host-timed. `device`: the GPU it ran on (its UUID), where
    the source says; the GPUs of a side's runs joined by "+" where they differ.
    """

    name: str
    unit: str
    median: float
    samples: tuple[float, ...] | None = None
    interval: tuple[float, float] | None = None
    interval_confidence: float | None = None
    q1: float | None = None
    q3: float | None = None
    rounds: int | None = None
    higher_is_better: bool = False
    source: str = ""
    groups: tuple[tuple[float, ...], ...] | None = None
    clock: str | None = None
    device: str | None = None

    @property
    def has_samples(self) -> bool:
        return self.samples is not None and len(self.samples) > 0

    @property
    def processes(self) -> int:
        return len(self.groups) if self.groups else 1

    @property
    def process_samples(self) -> tuple[tuple[float, ...], ...]:
        """The samples of each process: `groups`, or this one run's samples (its median where it kept none)."""
        if self.groups:
            return self.groups
        return (self.samples if self.has_samples else (self.median,),)

    @property
    def host_timed(self) -> bool:
        return self.clock == "cuda_event"


def canonical_unit(unit: str) -> tuple[str, float]:
    """(canonical unit, factor to it): every time unit becomes seconds, every byte spelling "bytes"."""
    key = unit.strip()
    if key.lower() in _TIME_SCALE:
        return "s", _TIME_SCALE[key.lower()]
    if key in _TIME_SCALE:  # "µs"
        return "s", _TIME_SCALE[key]
    if key.lower() in _BYTE_UNITS:
        return "bytes", 1.0
    return key, 1.0


def default_higher_is_better(unit: str) -> bool:
    u = unit.strip().lower()
    return u in HIGHER_IS_BETTER_UNITS or u.endswith("/s")


def load_json_object(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ResultsFileError(f"{path}: corrupt result file (not UTF-8 text: {e})") from e
    except OSError as e:
        raise ResultsFileError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        doc = json.loads(text)  # asv writes NaN and Infinity, which Python's json reads
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"{path}: corrupt result file (not valid JSON: {e})") from e
    if not isinstance(doc, dict):
        raise ResultsFileError(f"{path}: corrupt result file (top level is a {type(doc).__name__}, not an object)")
    return doc


def sample_values(raw: Any, where: str, scale: float = 1.0) -> tuple[float, ...]:
    if not isinstance(raw, list) or not raw:
        raise ResultsFileError(f"{where}: expected a non-empty list of numbers, got {short_repr(raw)}")
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ResultsFileError(f"{where}: samples must be finite numbers > 0, got {short_repr(v)}")
        out.append(float(v) * scale)
    return tuple(out)


def finite_number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ResultsFileError(f"{where}: expected a finite number, got {short_repr(raw)}")
    return float(raw)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
