"""Reading benchmark results for the gate: pytest-benchmark JSON, asv results and perfmamba's own files.

`load_results(path)` detects the format and returns `{name: Measurement}`. Anything it cannot read, a corrupt
file or a foreign format, raises `perfmamba.results.ResultsFileError` naming the file and what is wrong; a
benchmark that failed or was skipped (asv stores null / NaN) is left out, so the gate lists it as missing.

Formats:

* **pytest-benchmark** (`--benchmark-json`, or a file saved with `--benchmark-save` / `--benchmark-autosave`):
  `{"machine_info", "commit_info", "benchmarks": [{"name", "fullname", "params", "stats": {"median", "q1",
  "q3", "iqr", "rounds", ..., "data": [seconds per call]}, "extra_info"}]}`. A benchmark is named by its
  `fullname` (the pytest node id). Samples, in order of preference: `extra_info["samples_s"]` (perfmamba's
  suite puts the CUDA-event times of the same rounds there; pytest-benchmark's own clock is a host clock),
  then `stats["data"]` (always in `--benchmark-json` output; in saved files only with
  `--benchmark-save-data`), else the summary statistics alone (median, quartiles and rounds).
  perfmamba's `--perfmamba-json` files (kind "benchmark", written under pytest-xdist) use the same layout.
* **asv** results: see `perfmamba.gate.asv_results`.
* **perfmamba** result files (`perfmamba.results.write_json`, kind "benchmark" or "profile"): the minimal
  schema every perfmamba producer emits for the gate:

      {"schema_version": 1, "kind": "benchmark" | "profile", "environment": {...},
       "benchmarks": [{"name": "model/mamba2-130m/prefill-L2048", "samples": [0.0123, ...], "unit": "s",
                       "higher_is_better": false}]}

  `unit` defaults to "s" (also "ms", "us", "ns": converted to seconds; "bytes"; or any label such as
  "tokens/s" or "perplexity"); `higher_is_better` defaults to true for rates ("x", "speedup", "*/s") and to
  false otherwise. Other keys of an entry are ignored. An entry may instead carry pytest-benchmark's
  `stats` (the layout above): both kinds of entry can sit in one file.

A folder of perfmamba / pytest-benchmark files (searched recursively) is merged by name: the files must hold
disjoint benchmarks (one host's share of a sweep each); a name in two files is an error, since pooling two
runs, or two commits, would hide the difference between them.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from perfmamba.gate.asv_results import (
    asv_units,
    is_asv_machine_dir,
    is_asv_result,
    is_asv_results_dir,
    read_asv_dir,
    read_asv_file,
)
from perfmamba.gate.measurement import (
    Measurement,
    canonical_unit,
    default_higher_is_better,
    finite_number,
    load_json_object,
    sample_values,
    short_repr,
)
from perfmamba.results import SCHEMA_VERSION, ResultsFileError

__all__ = ["load_results", "split_spec"]

PERFMAMBA_KINDS = ("benchmark", "profile")
# Scalars that perfmamba's benchmark suite stores in pytest-benchmark's extra_info and that the gate compares as
# metrics of their own, named "<fullname>::<key>". They are deterministic for a given commit (bytes of a
# pre-allocated cache, the allocator's peak, the perplexity of a fixed model on fixed text), so one value per
# run is a fair comparison.
EXTRA_INFO_METRICS = {"peak_memory_bytes": "bytes", "cache_bytes": "bytes", "perplexity": "perplexity"}


def split_spec(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """`PATH` or `PATH@COMMIT` (an asv results folder and the commit to take). A path that exists as written
    is never split, so a file name with an '@' still works."""
    text = os.fspath(spec)
    if Path(text).exists() or "@" not in text:
        return Path(text), None
    path, _, commit = text.rpartition("@")
    if not commit:
        return Path(path), None
    return Path(path), commit


def load_results(spec: str | os.PathLike, *, commit: str | None = None) -> dict[str, Measurement]:
    """Every benchmark of a result file or folder, by name (see the module docstring for the formats)."""
    path, spec_commit = split_spec(spec)
    commit = commit or spec_commit
    if not path.exists():
        raise ResultsFileError(f"{path}: no such result file or folder")
    if path.is_dir():
        if is_asv_results_dir(path) or is_asv_machine_dir(path):
            return read_asv_dir(path, commit)
        if commit is not None:
            raise ResultsFileError(f"{path}: a commit ({commit!r}) can only be picked in an asv results folder")
        return _read_json_dir(path)
    doc = load_json_object(path)
    if is_asv_result(doc):
        return read_asv_file(path, doc, asv_units(path.parent.parent))
    if commit is not None:
        raise ResultsFileError(f"{path}: a commit ({commit!r}) can only be picked in an asv results folder")
    return _read_benchmarks_doc(path, doc)


# Plain JSON ----------------------------------------------------------------------------------------------
def _unknown_format(path: Path, doc: Mapping[str, Any]) -> ResultsFileError:
    keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
    if "version" in doc and all(isinstance(v, dict) and "code" in v for k, v in doc.items() if k != "version"):
        hint = "this is asv's benchmarks.json (benchmark definitions, no results): pass the results folder"
    elif {"machine", "arch", "cpu"} <= set(doc):
        hint = "this is asv's machine.json: pass the results folder or a result file beside it"
    else:
        hint = ("expected pytest-benchmark JSON (a 'benchmarks' list), an asv result file ('results' and "
                "'result_columns') or a perfmamba benchmark / profile file")
    return ResultsFileError(f"{path}: unknown result format (top-level keys: {keys}); {hint}")


def _read_benchmarks_doc(path: Path, doc: dict[str, Any]) -> dict[str, Measurement]:
    if "kind" in doc or "schema_version" in doc:  # a perfmamba result file: check what it claims to be
        if doc.get("kind") not in PERFMAMBA_KINDS:
            raise ResultsFileError(
                f"{path}: a perfmamba result file of kind {doc.get('kind')!r}; the gate reads kinds "
                f"{', '.join(map(repr, PERFMAMBA_KINDS))}"
            )
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ResultsFileError(
                f"{path}: unsupported schema_version {version!r} (this perfmamba reads <= {SCHEMA_VERSION})"
            )
    entries = doc.get("benchmarks")
    if entries is None:
        raise _unknown_format(path, doc)
    if not isinstance(entries, list):
        raise ResultsFileError(f"{path}: corrupt result file ('benchmarks' is a {type(entries).__name__}, "
                               "not a list)")
    out: dict[str, Measurement] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: benchmarks[{i}]"
        if not isinstance(entry, dict):
            raise ResultsFileError(f"{where}: expected an object, got {type(entry).__name__}")
        if "stats" in entry:
            m = _pytest_benchmark_entry(entry, where, str(path))
            for extra in _extra_info_metrics(entry, m.name, where, str(path)):
                if extra.name in out:
                    raise ResultsFileError(f"{where}: benchmark {extra.name!r} appears twice in the file")
                out[extra.name] = extra
        elif "samples" in entry:
            m = _perfmamba_entry(entry, where, str(path))
        else:
            raise ResultsFileError(f"{where}: has neither 'stats' (pytest-benchmark) nor 'samples' (perfmamba); "
                                   f"keys: {', '.join(sorted(map(str, entry)))}")
        if m is None:
            continue
        if m.name in out:
            raise ResultsFileError(f"{where}: benchmark {m.name!r} appears twice in the file")
        out[m.name] = m
    # A perfmamba file ran on one GPU: its environment names it for every entry that does not name its own.
    env = doc.get("environment")
    uuid = env.get("gpu_uuid") if isinstance(env, dict) and isinstance(env.get("gpu_uuid"), str) else None
    if uuid:
        out = {k: m if m.device else replace(m, device=uuid) for k, m in out.items()}
    return out


def _name(entry: dict[str, Any], where: str, *keys: str) -> str:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    raise ResultsFileError(f"{where}: no benchmark name (expected a non-empty string under "
                           f"{' or '.join(map(repr, keys))})")

def _perfmamba_entry(entry: dict[str, Any], where: str, source: str) -> Measurement:
    name = _name(entry, where, "name")
    where = f"{where} ({name})"
    unit_raw = entry.get("unit", "s")
    if not isinstance(unit_raw, str) or not unit_raw.strip():
        raise ResultsFileError(f"{where}: 'unit' must be a non-empty string, got {short_repr(unit_raw)}")
    unit, scale = canonical_unit(unit_raw)
    samples = sample_values(entry["samples"], f"{where} samples", scale)
    hib = entry.get("higher_is_better", default_higher_is_better(unit))
    if not isinstance(hib, bool):
        raise ResultsFileError(f"{where}: 'higher_is_better' must be true or false, got {short_repr(hib)}")
    return Measurement(name=name, unit=unit, median=statistics.median(samples), samples=samples, rounds=len(samples),
                       higher_is_better=hib, source=source)


def _pytest_benchmark_entry(entry: dict[str, Any], where: str, source: str) -> Measurement:
    name = _name(entry, where, "fullname", "name")
    where = f"{where} ({name})"
    stats = entry["stats"]
    if not isinstance(stats, dict):
        raise ResultsFileError(f"{where}: 'stats' must be an object, got {short_repr(stats)}")
    extra = entry.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise ResultsFileError(f"{where}: 'extra_info' must be an object, got {short_repr(extra)}")
    raw = extra.get("samples_s") or stats.get("data")
    clock = extra.get("clock") if isinstance(extra.get("clock"), str) else None
    device = extra.get("gpu_uuid") if isinstance(extra.get("gpu_uuid"), str) and extra.get("gpu_uuid") else None
    if raw:
        key = "extra_info.samples_s" if extra.get("samples_s") else "stats.data"
        samples = sample_values(raw, f"{where} {key}")
        return Measurement(name=name, unit="s", median=statistics.median(samples), samples=samples, rounds=len(samples),
                           source=source, clock=clock if extra.get("samples_s") else None, device=device)
    median = finite_number(stats.get("median"), f"{where} stats.median")
    if median <= 0:
        raise ResultsFileError(f"{where}: stats.median must be > 0, got {median}")
    q1 = stats.get("q1")
    q3 = stats.get("q3")
    rounds = stats.get("rounds")
    quartiles = None
    if q1 is not None and q3 is not None:
        quartiles = (finite_number(q1, f"{where} stats.q1"), finite_number(q3, f"{where} stats.q3"))
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise ResultsFileError(f"{where}: stats.rounds must be an integer >= 1, got {short_repr(rounds)}")
    return Measurement(name=name, unit="s", median=median, q1=quartiles[0] if quartiles else None,
                       q3=quartiles[1] if quartiles else None, rounds=rounds, source=source, device=device)


def _extra_info_metrics(entry: dict[str, Any], name: str, where: str, source: str) -> list[Measurement]:
    extra = entry.get("extra_info")
    if not isinstance(extra, dict):
        return []
    out = []
    for key, unit in EXTRA_INFO_METRICS.items():
        value = extra.get(key)
        if value is None:
            continue
        v = finite_number(value, f"{where} extra_info.{key}")
        if v <= 0:
            continue  # a CPU run records no GPU memory peak as 0: nothing to compare
        out.append(Measurement(name=f"{name}::{key}", unit=unit, median=v, samples=(v,), rounds=1, source=source))
    return out


def _read_json_dir(path: Path) -> dict[str, Measurement]:
    files = sorted(p for p in path.rglob("*.json") if p.is_file())
    if not files:
        raise ResultsFileError(f"{path}: no result files (*.json) in this folder")
    out: dict[str, Measurement] = {}
    for file in files:
        doc = load_json_object(file)
        found = read_asv_file(file, doc, asv_units(file.parent.parent)) if is_asv_result(doc) \
            else _read_benchmarks_doc(file, doc)
        for name, m in found.items():
            if name in out:
                raise ResultsFileError(
                    f"{path}: benchmark {name!r} is in both {out[name].source} and {file}; a folder must hold "
                    "one run of each benchmark (pass the two runs' files separately)"
                )
            out[name] = m
    return out

