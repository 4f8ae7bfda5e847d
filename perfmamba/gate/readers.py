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
* **asv** results: one result file (`.asv/results/<machine>/<commit>-<env>.json`, asv >= 0.5, "version": 2),
  a machine folder, or the results folder. Columns are named by the file's `result_columns`; a parametrised
  benchmark has one value per combination of its `params`, expanded into names the way `asv compare` writes
  them: `bench_model.ModelPrefill.time_call('mamba1-tiny', 256, 8, 0.5, 'energy')`. Samples are the
  `samples` column (`asv run --record-samples`); without it the median and asv's 99% interval of it
  (`stats_ci_99_a` / `_b`) are used. Units come from `benchmarks.json` in the results folder (else from the
  name: time_* in seconds, mem_* / peakmem_* in bytes). A folder with several commits needs one picked:
  `PATH@<commit prefix>`. With several machines each name gets ` [machine]` appended, so that results of
  different hosts are compared host by host, never pooled.
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

import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from perfmamba.results import SCHEMA_VERSION, ResultsFileError

PERFMAMBA_KINDS = ("benchmark", "profile")
_TIME_SCALE = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
               "ns": 1e-9}
_BYTE_UNITS = {"b", "byte", "bytes"}
# Units of quantities where more is better (a speedup factor, a throughput); everything else (time, memory,
# perplexity, error) is better lower.
HIGHER_IS_BETTER_UNITS = frozenset({"x", "speedup", "hz", "ops", "flops"})
# Only asv >= 0.5 result files; older ones store a dict per benchmark.
ASV_API_VERSION = 2
# Scalars that perfmamba's benchmark suite stores in pytest-benchmark's extra_info and that the gate compares as
# metrics of their own, named "<fullname>::<key>". They are deterministic for a given commit (bytes of a
# pre-allocated cache, the allocator's peak, the perplexity of a fixed model on fixed text), so one value per
# run is a fair comparison.
EXTRA_INFO_METRICS = {"peak_memory_bytes": "bytes", "cache_bytes": "bytes", "perplexity": "perplexity"}
# How asv's own compare tells time and memory benchmarks apart when benchmarks.json is not at hand.
_ASV_PREFIX_UNITS = (("time_", "seconds"), ("peakmem_", "bytes"), ("mem_", "bytes"))


@dataclass(frozen=True)
class Measurement:
    """One benchmark of one run: raw samples where the source has them, else summary statistics.

    `unit` is canonical ("s" for every time unit, "bytes" for memory, else as the source wrote it), and
    `samples` / `median` / `interval` are in it. `interval` is the source's or the quartiles' interval for
    the median (used only without samples); `rounds` is the number of measurements behind `median`.
    `groups`: the samples of each process (run) of a side where several were merged (`perfmamba.gate.runs`),
    the process being the statistical unit. `clock`: how a timing was taken (`perfmamba.timing.CLOCKS`), where
    the source says; "cuda_event" is eager GPU timing, host-timed.
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
        if _is_asv_results_dir(path) or _is_asv_machine_dir(path):
            return _read_asv_dir(path, commit)
        if commit is not None:
            raise ResultsFileError(f"{path}: a commit ({commit!r}) can only be picked in an asv results folder")
        return _read_json_dir(path)
    doc = _load_json(path)
    if _is_asv_result(doc):
        return _read_asv_file(path, doc, _asv_units(path.parent.parent))
    if commit is not None:
        raise ResultsFileError(f"{path}: a commit ({commit!r}) can only be picked in an asv results folder")
    return _read_benchmarks_doc(path, doc)


# Plain JSON ----------------------------------------------------------------------------------------------
def _load_json(path: Path) -> dict[str, Any]:
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
    return out


def _name(entry: dict[str, Any], where: str, *keys: str) -> str:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    raise ResultsFileError(f"{where}: no benchmark name (expected a non-empty string under "
                           f"{' or '.join(map(repr, keys))})")


def _values(raw: Any, where: str, scale: float = 1.0) -> tuple[float, ...]:
    if not isinstance(raw, list) or not raw:
        raise ResultsFileError(f"{where}: expected a non-empty list of numbers, got {_short(raw)}")
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ResultsFileError(f"{where}: samples must be finite numbers > 0, got {_short(v)}")
        out.append(float(v) * scale)
    return tuple(out)


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ResultsFileError(f"{where}: expected a finite number, got {_short(raw)}")
    return float(raw)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _median(values: Iterable[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _perfmamba_entry(entry: dict[str, Any], where: str, source: str) -> Measurement:
    name = _name(entry, where, "name")
    where = f"{where} ({name})"
    unit_raw = entry.get("unit", "s")
    if not isinstance(unit_raw, str) or not unit_raw.strip():
        raise ResultsFileError(f"{where}: 'unit' must be a non-empty string, got {_short(unit_raw)}")
    unit, scale = canonical_unit(unit_raw)
    samples = _values(entry["samples"], f"{where} samples", scale)
    hib = entry.get("higher_is_better", default_higher_is_better(unit))
    if not isinstance(hib, bool):
        raise ResultsFileError(f"{where}: 'higher_is_better' must be true or false, got {_short(hib)}")
    return Measurement(name=name, unit=unit, median=_median(samples), samples=samples, rounds=len(samples),
                       higher_is_better=hib, source=source)


def _pytest_benchmark_entry(entry: dict[str, Any], where: str, source: str) -> Measurement:
    name = _name(entry, where, "fullname", "name")
    where = f"{where} ({name})"
    stats = entry["stats"]
    if not isinstance(stats, dict):
        raise ResultsFileError(f"{where}: 'stats' must be an object, got {_short(stats)}")
    extra = entry.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise ResultsFileError(f"{where}: 'extra_info' must be an object, got {_short(extra)}")
    raw = extra.get("samples_s") or stats.get("data")
    clock = extra.get("clock") if isinstance(extra.get("clock"), str) else None
    if raw:
        key = "extra_info.samples_s" if extra.get("samples_s") else "stats.data"
        samples = _values(raw, f"{where} {key}")
        return Measurement(name=name, unit="s", median=_median(samples), samples=samples, rounds=len(samples),
                           source=source, clock=clock if extra.get("samples_s") else None)
    median = _number(stats.get("median"), f"{where} stats.median")
    if median <= 0:
        raise ResultsFileError(f"{where}: stats.median must be > 0, got {median}")
    q1 = stats.get("q1")
    q3 = stats.get("q3")
    rounds = stats.get("rounds")
    quartiles = None
    if q1 is not None and q3 is not None:
        quartiles = (_number(q1, f"{where} stats.q1"), _number(q3, f"{where} stats.q3"))
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise ResultsFileError(f"{where}: stats.rounds must be an integer >= 1, got {_short(rounds)}")
    return Measurement(name=name, unit="s", median=median, q1=quartiles[0] if quartiles else None,
                       q3=quartiles[1] if quartiles else None, rounds=rounds, source=source)


def _extra_info_metrics(entry: dict[str, Any], name: str, where: str, source: str) -> list[Measurement]:
    extra = entry.get("extra_info")
    if not isinstance(extra, dict):
        return []
    out = []
    for key, unit in EXTRA_INFO_METRICS.items():
        value = extra.get(key)
        if value is None:
            continue
        v = _number(value, f"{where} extra_info.{key}")
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
        doc = _load_json(file)
        found = _read_asv_file(file, doc, _asv_units(file.parent.parent)) if _is_asv_result(doc) \
            else _read_benchmarks_doc(file, doc)
        for name, m in found.items():
            if name in out:
                raise ResultsFileError(
                    f"{path}: benchmark {name!r} is in both {out[name].source} and {file}; a folder must hold "
                    "one run of each benchmark (pass the two runs' files separately)"
                )
            out[name] = m
    return out


# asv -----------------------------------------------------------------------------------------------------
def _is_asv_result(doc: Mapping[str, Any]) -> bool:
    return "results" in doc and ("result_columns" in doc or "commit_hash" in doc)


def _is_asv_machine_dir(path: Path) -> bool:
    return (path / "machine.json").is_file()


def _is_asv_results_dir(path: Path) -> bool:
    return any(_is_asv_machine_dir(p) for p in path.iterdir() if p.is_dir())


def _asv_units(results_dir: Path) -> dict[str, tuple[str, str]]:
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


def _read_asv_dir(path: Path, commit: str | None) -> dict[str, Measurement]:
    if _is_asv_machine_dir(path):
        machine_dirs, results_dir = [path], path.parent
    else:
        machine_dirs = sorted(p for p in path.iterdir() if p.is_dir() and _is_asv_machine_dir(p))
        results_dir = path
    units = _asv_units(results_dir)
    per_machine: dict[str, tuple[Path, dict[str, Any]]] = {}
    for mdir in machine_dirs:
        docs = [(f, _load_json(f)) for f in _asv_result_files(mdir)]
        docs = [(f, d) for f, d in docs if _is_asv_result(d)]
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
        found = _read_asv_file(file, doc, units)
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


def _read_asv_file(path: Path, doc: dict[str, Any], units: Mapping[str, tuple[str, str]]) -> dict[str, Measurement]:
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
            raise ResultsFileError(f"{where}: expected a list of columns, got {_short(row)}")
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
        unit, scale = canonical_unit(raw_unit)
        hib = default_higher_is_better(unit)
        for j, combo in enumerate(combos):
            value = values[j]
            if _isna(value):  # failed (None) or skipped (NaN)
                continue
            name = f"{bench}({', '.join(map(str, combo))})" if combo else bench
            spot = f"{where}[{j}] ({name})"
            median = _number(value, spot) * scale
            s = None
            if samples[j] is not None and not isinstance(samples[j], list):
                raise ResultsFileError(f"{spot}: corrupt 'samples' entry (expected a list, got {_short(samples[j])})")
            if samples[j]:
                kept = [v for v in samples[j] if not _isna(v)]
                s = _values(kept, f"{spot} samples", scale) if kept else None
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
