"""Several runs of one side: each run is a process (or a set of processes that ran disjoint benchmarks), and the
process is the statistical unit of the gate.

`load_side(["base-1.json", "base-2.json", "base-3.json"])` reads each run (any format `load_results` reads) and
merges them by benchmark name into one `Measurement` per benchmark whose `groups` hold each run's samples. The
runs of one side must be repeats of one tree: files that name their commit must name the same one.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from perfmamba.gate.measurement import Measurement
from perfmamba.gate.readers import load_results, split_spec
from perfmamba.results import ResultsFileError


def split_specs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A side given as one spec, a comma-separated list of specs (`base-1.json,base-2.json`) or a sequence."""
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        parts = [text] if Path(text).exists() else [p for p in text.split(",") if p]
        return parts or [text]
    return [os.fspath(s) for s in spec]


def run_commit(spec: str | os.PathLike) -> str | None:
    """The commit a result file says it measured (perfmamba files: environment.git_commit; pytest-benchmark:
    commit_info.id; an asv spec: its @COMMIT), or None where it does not say."""
    path, commit = split_spec(spec)
    if commit is not None:
        return commit
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # load_results reports the problem
    if not isinstance(doc, dict):
        return None
    env, info = doc.get("environment"), doc.get("commit_info")
    found = (env or {}).get("git_commit") if isinstance(env, dict) else None
    if found is None and isinstance(info, dict):
        found = info.get("id")
    return found if isinstance(found, str) and found else None


def merge_runs(runs: Sequence[Mapping[str, Measurement]], labels: Sequence[str] | None = None
               ) -> dict[str, Measurement]:
    """One Measurement per benchmark over `runs`: `groups` holds each run's samples (its median where it kept
    none), `samples` all of them, `median` the geometric mean of the runs' medians (what the gate's ratio
    compares). A benchmark must have the same unit and clock in every run that has it."""
    if not runs:
        raise ValueError("need at least one run")
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(runs))]
    if len(runs) == 1:
        return dict(runs[0])
    names = list(dict.fromkeys(name for run in runs for name in run))
    out = {}
    for name in names:
        found = [(label, run[name]) for label, run in zip(labels, runs) if name in run]
        first_label, first = found[0]
        for label, m in found[1:]:
            for what in ("unit", "clock"):
                if getattr(m, what) != getattr(first, what):
                    raise ResultsFileError(
                        f"{name}: {what} {getattr(first, what)!r} in {first_label} but {getattr(m, what)!r} in "
                        f"{label}; the runs of one side must measure alike")
        groups = tuple(g for _, m in found for g in m.process_samples)
        medians = [statistics.median(g) for g in groups]
        pooled = tuple(v for g in groups for v in g)
        out[name] = Measurement(
            name=name, unit=first.unit, median=math.exp(statistics.fmean(math.log(v) for v in medians)),
            samples=pooled, rounds=len(pooled), higher_is_better=first.higher_is_better,
            source="; ".join(m.source for _, m in found), groups=groups, clock=first.clock,
            device="+".join(sorted({m.device for _, m in found if m.device})) or None,
        )
    return out


def load_side(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Measurement]:
    """Every benchmark of one side, its runs merged (`merge_runs`); raises ResultsFileError for runs of
    different commits or a file it cannot read."""
    specs = split_specs(specs)
    commits = {spec: run_commit(spec) for spec in specs}
    named = {c for c in commits.values() if c is not None}
    if len(named) > 1:
        listed = ", ".join(f"{spec}: {c[:12]}" for spec, c in commits.items() if c)
        raise ResultsFileError(f"the runs of one side come from different commits ({listed}); a side must be "
                               "repeats of one tree")
    return merge_runs([load_results(spec) for spec in specs], specs)
