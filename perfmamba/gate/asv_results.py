"""Reading asv results for the gate: one result file (`.asv/results/<machine>/<commit>-<env>.json`, asv >= 0.5,
"version": 2), a machine folder, or the results folder. Columns are named by the file's `result_columns`; a
parametrised benchmark has one value per combination of its `params`, expanded into names the way `asv compare`
writes them: `bench_model.ModelPrefill.time_call('mamba1-tiny', 256, 8, 0.5, 'energy')`. Samples are the `samples`
column (`asv run --record-samples`); without it the median and asv's 99% interval of it (`stats_ci_99_a` / `_b`) are
used. Units come from `benchmarks.json` in the results folder (else from the name: time_* in seconds, mem_* /
peakmem_* in bytes). A folder with several commits needs one picked: `PATH@<commit prefix>`. With several machines
each name gets ` [machine]` appended, so that results of different hosts are compared host by host, never pooled.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from perfmamba.gate import measurement
from perfmamba.gate.measurement import Measurement
from perfmamba.results import ResultsFileError

# Only asv >= 0.5 result files; older ones store a dict per benchmark.
ASV_API_VERSION = 2
# How asv's own compare tells time and memory benchmarks apart when benchmarks.json is not at hand.
_ASV_PREFIX_UNITS = (("time_", "seconds"), ("peakmem_", "bytes"), ("mem_", "bytes"))


def is_asv_result(doc: Mapping[str, Any]) -> bool:
    return "results" in doc and ("result_columns" in doc or "commit_hash" in doc)


def is_asv_machine_dir(path: Path) -> bool:
    return (path / "machine.json").is_file()


def is_asv_results_dir(path: Path) -> bool:
    return any(is_asv_machine_dir(p) for p in path.iterdir() if p.is_dir())


def asv_units(results_dir: Path) -> dict[str, tuple[str, str]]:
    """{benchmark: (type, unit)} from asv's benchmarks.json, if the results folder has a readable one."""
    file = results_dir / "benchmarks.json"
    if not file.is_file():
        return {}
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsFileError(f"{file}: corrupt asv benchmarks.json ({e})") from e
    if not isinstance(doc, dict):
        raise ResultsFileError(f"{file}: corrupt asv benchmarks.json (top level is not an object)")
    return {k: (str(v.get("type", "")), str(v.get("unit", ""))) for k, v in doc.items() if isinstance(v, dict)}


def _asv_result_files(machine_dir: Path) -> list[Path]:
    return sorted(p for p in machine_dir.glob("*.json") if p.name not in ("machine.json", "benchmarks.json"))


def read_asv_dir(path: Path, commit: str | None) -> dict[str, Measurement]:
    if is_asv_machine_dir(path):
        machine_dirs, results_dir = [path], path.parent
    else:
        machine_dirs = sorted(p for p in path.iterdir() if p.is_dir() and is_asv_machine_dir(p))
        results_dir = path
    units = asv_units(results_dir)
    per_machine: dict[str, tuple[Path, dict[str, Any]]] = {}
    for mdir in machine_dirs:
        docs = [(f, measurement.load_json_object(f)) for f in _asv_result_files(mdir)]
        docs = [(f, d) for f, d in docs if is_asv_result(d)]
        commits = sorted({str(d.get("commit_hash", "")) for _, d in docs})
        if commit is not None:
            docs = [(f, d) for f, d in docs if str(d.get("commit_hash", "")).startswith(commit)]
        elif len(commits) > 1:
            raise ResultsFileError(
                f"{mdir}: results of {len(commits)} commits ({', '.join(c[:8] for c in commits)}); pick one as "
                f"{path}@<commit>"
            )
        if not docs:
            continue
        picked = sorted({str(d.get("commit_hash", "")) for _, d in docs})
        if len(docs) > 1:
            what = f"commits matching {commit!r}" if len(picked) > 1 else "environments of one commit"
            raise ResultsFileError(
                f"{mdir}: {len(docs)} result files ({what}: {', '.join(f.name for f, _ in docs)}); pass one file"
            )
        per_machine[mdir.name] = docs[0]
    if not per_machine:
        which = f" for commit {commit!r}" if commit else ""
        raise ResultsFileError(f"{path}: no asv result files{which}")
    out: dict[str, Measurement] = {}
    # Names carry the machine wherever the folder holds several, whichever of them ran this commit: otherwise a
    # BASE run on two machines and a NEW run on one would share no name.
    several = len(machine_dirs) > 1
    for machine, (file, doc) in per_machine.items():
        found = read_asv_file(file, doc, units)
        for name, m in found.items():
            if several:
                name = f"{name} [{machine}]"
                m = replace(m, name=name)
            out[name] = m
    return out


def _asv_unit(name: str, units: Mapping[str, tuple[str, str]]) -> str:
    if name in units and units[name][1]:
        return units[name][1]
    leaf = name.rsplit(".", 1)[-1]
    for prefix, unit in _ASV_PREFIX_UNITS:
        if leaf.startswith(prefix):
            return unit
    return "unknown"


def _isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _per_combo(col: Mapping[str, Any], key: str, count: int) -> list[Any]:
    """Column `key`, one entry per parameter combination (all None where the column is absent or malformed)."""
    v = col.get(key)
    return v if isinstance(v, list) and len(v) == count else [None] * count


def read_asv_file(path: Path, doc: dict[str, Any], units: Mapping[str, tuple[str, str]]) -> dict[str, Measurement]:
    version = doc.get("version")
    columns = doc.get("result_columns")
    results = doc.get("results")
    if version != ASV_API_VERSION or not isinstance(columns, list):
        raise ResultsFileError(
            f"{path}: asv result file of version {version!r}; the gate reads asv >= 0.5 files (version "
            f"{ASV_API_VERSION}, with 'result_columns'); rerun the benchmarks with a current asv"
        )
    if not isinstance(results, dict):
        raise ResultsFileError(f"{path}: corrupt asv result file ('results' is not an object)")
    for required in ("result", "params"):
        if required not in columns:
            raise ResultsFileError(f"{path}: corrupt asv result file (no {required!r} in result_columns)")
    out: dict[str, Measurement] = {}
    for bench, row in results.items():
        where = f"{path}: results[{bench!r}]"
        if not isinstance(row, list):
            raise ResultsFileError(f"{where}: expected a list of columns, got {measurement.short_repr(row)}")
        col = dict(zip(columns, row))  # asv drops trailing columns that are empty
        values, params = col.get("result"), col.get("params") or []
        if values is None:
            continue
        if not isinstance(values, list) or not isinstance(params, list):
            raise ResultsFileError(f"{where}: corrupt 'result' / 'params' columns")
        combos = list(itertools.product(*params)) if params else [()]
        if len(combos) != len(values):
            raise ResultsFileError(f"{where}: {len(values)} results for {len(combos)} parameter combinations")
        samples, ci_a, ci_b, q25, q75, repeat = (
            _per_combo(col, key, len(values))
            for key in ("samples", "stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_repeat")
        )
        raw_unit = _asv_unit(bench, units)
        unit, scale = measurement.canonical_unit(raw_unit)
        hib = measurement.default_higher_is_better(unit)
        for j, combo in enumerate(combos):
            value = values[j]
            if _isna(value):  # failed (None) or skipped (NaN)
                continue
            name = f"{bench}({', '.join(map(str, combo))})" if combo else bench
            spot = f"{where}[{j}] ({name})"
            median = measurement.finite_number(value, spot) * scale
            s = None
            if samples[j] is not None and not isinstance(samples[j], list):
                raise ResultsFileError(
                    f"{spot}: corrupt 'samples' entry (expected a list, got {measurement.short_repr(samples[j])})")
            if samples[j]:
                kept = [v for v in samples[j] if not _isna(v)]
                s = measurement.sample_values(kept, f"{spot} samples", scale) if kept else None
            interval = None
            lo, hi = ci_a[j], ci_b[j]
            if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not (_isna(lo) or _isna(hi)):
                interval = (float(lo) * scale, float(hi) * scale)
            rounds = repeat[j] if isinstance(repeat[j], int) else None
            out[name] = Measurement(
                name=name, unit=unit, median=median, samples=s, interval=interval,
                interval_confidence=0.99 if interval else None,
                q1=float(q25[j]) * scale if isinstance(q25[j], (int, float)) else None,
                q3=float(q75[j]) * scale if isinstance(q75[j], (int, float)) else None,
                rounds=len(s) if s else rounds, higher_is_better=hib, source=str(path),
            )
    return out
