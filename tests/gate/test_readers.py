"""Reading results for the gate: real pytest-benchmark JSON (made by running pytest-benchmark), asv result files
in asv 0.6's layout, perfmamba result files; corrupt and foreign files raise ResultsFileError naming the file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perfmamba.gate import compare_files, load_results
from perfmamba.gate.measurement import canonical_unit
from perfmamba.results import ResultsFileError, write_json

TOY_BENCH = textwrap.dedent('''
    import os, time
    import pytest

    SLOW = float(os.environ.get("TOY_SLOW", "1.0"))

    @pytest.mark.parametrize("ms", [1, 2])
    def test_sleep(benchmark, ms):
        benchmark.pedantic(time.sleep, args=(ms * 1e-3 * SLOW,), rounds=15, iterations=1, warmup_rounds=1)

    def test_steady(benchmark):
        benchmark.pedantic(time.sleep, args=(1e-3,), rounds=15, iterations=1)
        benchmark.extra_info["samples_s"] = [2e-3, 2e-3, 2e-3]
        benchmark.extra_info["peak_memory_bytes"] = 1000 if SLOW == 1.0 else 1100

    @pytest.mark.skipif(SLOW != 1.0, reason="gone in the slow run")
    def test_only_in_base(benchmark):
        benchmark.pedantic(time.sleep, args=(1e-4,), rounds=5, iterations=1)
''')


@pytest.fixture(scope="module")
def pytest_benchmark_runs(tmp_path_factory):
    """Two real pytest-benchmark runs of a toy suite: BASE (--benchmark-json --benchmark-save-data) and NEW,
    whose sleeps are twice as long (a margin that scheduler delays on a loaded machine cannot eat), saved with
    --benchmark-save only (a stored file without raw data)."""
    pytest.importorskip("pytest_benchmark", reason="the test extra's pytest-benchmark makes these files")
    root = tmp_path_factory.mktemp("pb")
    (root / "test_toy.py").write_text(TOY_BENCH)

    def run(out_args: list[str], slow: str) -> None:
        env = {**os.environ, "TOY_SLOW": slow}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
               "-p", "no:xdist", "--rootdir", str(root),
               "-c", os.devnull, str(root / "test_toy.py"), *out_args]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run(["--benchmark-json", str(root / "base.json"), "--benchmark-save-data"], "1.0")
    run(["--benchmark-json", str(root / "new.json"), "--benchmark-save", "new",
         "--benchmark-storage", f"file://{root / 'storage'}"], "2.0")
    (saved,) = (root / "storage").rglob("*.json")
    return root / "base.json", root / "new.json", saved


def test_pytest_benchmark_json_with_data(pytest_benchmark_runs):
    base_path, _, _ = pytest_benchmark_runs
    results = load_results(base_path)
    raw = {b["fullname"]: b for b in json.loads(base_path.read_text())["benchmarks"]}
    assert set(raw) == {"test_toy.py::test_sleep[1]", "test_toy.py::test_sleep[2]", "test_toy.py::test_steady",
                        "test_toy.py::test_only_in_base"}
    assert set(results) == set(raw) | {"test_toy.py::test_steady::peak_memory_bytes"}
    sleep = results["test_toy.py::test_sleep[2]"]
    assert sleep.unit == "s" and len(sleep.samples) == 15
    assert sleep.median == pytest.approx(raw["test_toy.py::test_sleep[2]"]["stats"]["median"], rel=1e-12)
    assert 2e-3 <= sleep.median < 4e-3
    # perfmamba's suite stores device-clock samples in extra_info.samples_s; they win over stats.data
    assert results["test_toy.py::test_steady"].samples == (2e-3, 2e-3, 2e-3)
    peak = results["test_toy.py::test_steady::peak_memory_bytes"]
    assert (peak.unit, peak.median) == ("bytes", 1000.0)


def test_pytest_benchmark_saved_without_data_uses_the_summary(pytest_benchmark_runs):
    _, _, saved = pytest_benchmark_runs
    assert "data" not in json.loads(saved.read_text())["benchmarks"][0]["stats"]
    results = load_results(saved)
    sleep = results["test_toy.py::test_sleep[1]"]
    assert sleep.samples is None
    assert sleep.rounds == 15 and sleep.q1 <= sleep.median <= sleep.q3


def test_gate_on_real_pytest_benchmark_runs(pytest_benchmark_runs):
    base_path, new_path, saved = pytest_benchmark_runs
    c = compare_files(base_path, new_path)  # raw samples on both sides
    rows = {r.name: r for r in c.rows}
    for ms in (1, 2):
        row = rows[f"test_toy.py::test_sleep[{ms}]"]
        assert row.verdict == "regressed" and row.method == "bootstrap+rank", row
        assert 1.2 < row.ratio < 2.5
    peak = rows["test_toy.py::test_steady::peak_memory_bytes"]
    assert (peak.verdict, peak.method, peak.ratio) == ("regressed", "exact", 1.1)  # 1000 -> 1100 bytes
    assert c.missing == ("test_toy.py::test_only_in_base",)
    assert c.exit_code() == 1
    # NEW saved without raw data: judged from the quartiles. How wide that interval is depends on how steady
    # the sleeps were (this machine's load), so the verdict may honestly be either; the numbers may not.
    c = compare_files(base_path, saved)
    for ms in (1, 2):
        row = {r.name: r for r in c.rows}[f"test_toy.py::test_sleep[{ms}]"]
        assert row.method == "summary" and row.n_new == 15, row
        assert 1.2 < row.ratio < 2.5 and row.ci_low <= row.ratio <= row.ci_high
        assert row.verdict in ("regressed", "unchanged")
        assert row.verdict == ("regressed" if row.ci_low > 1.02 else "unchanged")
    assert c.missing == ("test_toy.py::test_only_in_base",)


# asv --------------------------------------------------------------------------------------------------------
# The layout of asv 0.6 result files, as `asv run --record-samples` writes them (trimmed from a real run):
# parametrised benchmarks hold one value per combination of params, a failed combination null, a skipped
# one NaN; trailing empty columns are dropped.
ASV_COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
               "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]


def _asv_results(scale: float = 1.0) -> dict:
    s1 = [x * scale for x in (0.000578, 0.000613, 0.000618, 0.000617, 0.000613, 0.000599, 0.000606, 0.000600,
                              0.000601, 0.000601)]
    s2 = [x * scale for x in (0.001091, 0.001093, 0.001088, 0.001095, 0.001090, 0.001092, 0.001089, 0.001094,
                              0.001091, 0.001090)]
    return {
        "bench_x.Suite.time_sleep": [
            [s1[4], float("nan"), s2[4], None], [["1", "2"], ["'a'", "'b'"]], "4da6", 1795394235403, 3.29,
            [s1[0], None, s2[2], None], [s1[2], None, s2[3], None], [s1[5], None, s2[6], None],
            [s1[3], None, s2[5], None], [18, None, 10, None], [10, None, 10, None], [s1, None, s2, None]],
        "bench_x.time_plain": [[0.0011028 * scale], [], "c382", 1795394238183, 0.83, [0.0010781 * scale],
                               [0.0011715 * scale], [0.0011016], [0.001114], [10], [10]],
        "bench_x.Suite.peakmem_list": [[36839424, 36761600, 37621760, 37552128], [["1", "2"], ["'a'", "'b'"]],
                                       "dea5", 1795394234380, 1.02],
        "bench_x.Suite.track_value": [[10, 10, 20, None], [["1", "2"], ["'a'", "'b'"]], "0b6e", 1795394237084, 0.88],
    }


ASV_BENCHMARKS = {
    "bench_x.Suite.time_sleep": {"name": "bench_x.Suite.time_sleep", "type": "time", "unit": "seconds",
                                 "param_names": ["n", "s"], "params": [["1", "2"], ["'a'", "'b'"]], "code": "..."},
    "bench_x.time_plain": {"name": "bench_x.time_plain", "type": "time", "unit": "seconds", "params": [],
                           "code": "..."},
    "bench_x.Suite.peakmem_list": {"name": "bench_x.Suite.peakmem_list", "type": "peakmemory", "unit": "bytes",
                                   "params": [["1", "2"], ["'a'", "'b'"]], "code": "..."},
    "bench_x.Suite.track_value": {"name": "bench_x.Suite.track_value", "type": "track", "unit": "x",
                                  "params": [["1", "2"], ["'a'", "'b'"]], "code": "..."},
    "version": 2,
}


def _write_asv(results_dir: Path, machine: str, commit: str, results: dict) -> Path:
    mdir = results_dir / machine
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "machine.json").write_text(json.dumps({"arch": "x86_64", "cpu": "EPYC", "machine": machine,
                                                   "num_cpu": "2", "version": 1}))
    (results_dir / "benchmarks.json").write_text(json.dumps(ASV_BENCHMARKS))
    doc = {"commit_hash": commit, "env_name": "existing-py", "date": 1795394231000,
           "params": {"machine": machine}, "python": "3.11", "requirements": {}, "env_vars": {},
           "result_columns": ASV_COLUMNS, "results": results, "durations": {}, "version": 2}
    path = mdir / f"{commit[:8]}-existing-py.json"
    # asv writes NaN as a bare NaN token, which json.dumps does too
    path.write_text(json.dumps(doc))
    return path


def test_asv_result_file(tmp_path):
    path = _write_asv(tmp_path / "results", "m1", "11b9dd48a5ee", _asv_results())
    results = load_results(path)
    assert set(results) == {
        "bench_x.Suite.time_sleep(1, 'a')", "bench_x.Suite.time_sleep(2, 'a')",  # (1,'b') NaN, (2,'b') null
        "bench_x.time_plain",
        "bench_x.Suite.peakmem_list(1, 'a')", "bench_x.Suite.peakmem_list(1, 'b')",
        "bench_x.Suite.peakmem_list(2, 'a')", "bench_x.Suite.peakmem_list(2, 'b')",
        "bench_x.Suite.track_value(1, 'a')", "bench_x.Suite.track_value(1, 'b')",
        "bench_x.Suite.track_value(2, 'a')",
    }
    sleep = results["bench_x.Suite.time_sleep(2, 'a')"]
    assert sleep.unit == "s" and len(sleep.samples) == 10 and sleep.median == pytest.approx(0.001090)
    plain = results["bench_x.time_plain"]
    assert plain.samples is None and plain.interval == (0.0010781, 0.0011715) and plain.interval_confidence == 0.99
    mem = results["bench_x.Suite.peakmem_list(2, 'a')"]
    assert (mem.unit, mem.median, mem.higher_is_better) == ("bytes", 37621760.0, False)
    assert results["bench_x.Suite.track_value(2, 'a')"].higher_is_better  # unit "x": a speedup


def test_asv_units_from_names_without_benchmarks_json(tmp_path):
    path = _write_asv(tmp_path / "results", "m1", "11b9dd48a5ee", _asv_results())
    (tmp_path / "results" / "benchmarks.json").unlink()
    results = load_results(path)
    assert results["bench_x.time_plain"].unit == "s"
    assert results["bench_x.Suite.peakmem_list(1, 'a')"].unit == "bytes"
    assert results["bench_x.Suite.track_value(1, 'a')"].unit == "unknown"


def test_asv_folders_pick_commits_and_keep_machines_apart(tmp_path):
    results_dir = tmp_path / "results"
    _write_asv(results_dir, "m1", "aaaa1111", _asv_results())
    _write_asv(results_dir, "m1", "bbbb2222", _asv_results(scale=1.2))
    with pytest.raises(ResultsFileError, match=r"2 commits.*aaaa1111.*@<commit>"):
        load_results(results_dir)
    c = compare_files(f"{results_dir}@aaaa", f"{results_dir}@bbbb")
    row = {r.name: r for r in c.rows}["bench_x.Suite.time_sleep(2, 'a')"]
    assert row.ratio == pytest.approx(1.2) and row.verdict == "regressed" and row.method == "bootstrap+rank"
    assert {r.name: r for r in c.rows}["bench_x.time_plain"].method == "summary"
    assert c.exit_code() == 1
    with pytest.raises(ResultsFileError, match="no asv result files for commit 'cccc'"):
        load_results(results_dir, commit="cccc")
    # a second host: names carry the machine, so hosts are compared host by host
    _write_asv(results_dir, "m2", "aaaa1111", _asv_results())
    names = set(load_results(results_dir, commit="aaaa"))
    assert "bench_x.time_plain [m1]" in names and "bench_x.time_plain [m2]" in names
    assert set(load_results(results_dir / "m2", commit="aaaa")) >= {"bench_x.time_plain"}
    # BASE ran on both hosts, NEW on one: the names still match host by host (the folder has two machines)
    c = compare_files(f"{results_dir}@aaaa", f"{results_dir}@bbbb")
    rows = {r.name: r for r in c.rows}
    assert rows["bench_x.Suite.time_sleep(2, 'a') [m1]"].verdict == "regressed"
    assert "bench_x.time_plain [m2]" in c.missing and c.exit_code() == 1


def test_asv_corrupt_samples_entry_is_a_clear_error(tmp_path):
    results = _asv_results()
    results["bench_x.time_plain"] = [*results["bench_x.time_plain"], [0.5]]  # a number where a list of samples goes
    path = _write_asv(tmp_path / "results", "m1", "abcd1234", results)
    with pytest.raises(ResultsFileError, match=r"time_plain.*corrupt 'samples' entry"):
        load_results(path)


# perfmamba files ----------------------------------------------------------------------------------------------
def test_perfmamba_result_file_and_folder(tmp_path):
    write_json(tmp_path / "run" / "host1.json", {"benchmarks": [
        {"name": "op/scan", "samples": [1.0, 1.1, 1.2], "unit": "ms"},
        {"name": "model/tok_s", "samples": [5000.0, 5100.0], "unit": "tokens/s"},
    ]}, kind="benchmark")
    write_json(tmp_path / "run" / "host2.json", {"benchmarks": [
        {"name": "model/ppl", "samples": [12.5], "unit": "perplexity", "extra": "ignored"},
    ]}, kind="profile")
    one = load_results(tmp_path / "run" / "host1.json")
    assert one["op/scan"].unit == "s" and one["op/scan"].samples == pytest.approx((1e-3, 1.1e-3, 1.2e-3))
    assert one["model/tok_s"].higher_is_better and not one["op/scan"].higher_is_better
    both = load_results(tmp_path / "run")
    assert set(both) == {"op/scan", "model/tok_s", "model/ppl"}
    # the same benchmark in two files of a folder is an error, not a silent pool
    write_json(tmp_path / "run" / "again.json", {"benchmarks": [{"name": "op/scan", "samples": [1.0]}]},
               kind="benchmark")
    with pytest.raises(ResultsFileError, match=r"'op/scan' is in both .*again\.json.* and .*host1\.json"):
        load_results(tmp_path / "run")


def test_canonical_units():
    assert canonical_unit("ms") == ("s", 1e-3)
    assert canonical_unit("µs") == ("s", 1e-6)
    assert canonical_unit("seconds") == ("s", 1.0)
    assert canonical_unit("B") == ("bytes", 1.0)
    assert canonical_unit("tokens/s") == ("tokens/s", 1.0)


# corrupt and foreign files ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "message"), [
    ('{"benchmarks": [', "corrupt result file (not valid JSON"),
    ("[1, 2]", "top level is a list"),
    ('{"hello": 1}', "unknown result format (top-level keys: hello)"),
    ('{"benchmarks": {"a": 1}}', "'benchmarks' is a dict, not a list"),
    ('{"benchmarks": [{"name": "a", "samples": [1.0, -2.0]}]}', "samples must be finite numbers > 0, got -2.0"),
    ('{"benchmarks": [{"name": "a", "samples": ["fast"]}]}', "got 'fast'"),
    ('{"benchmarks": [{"name": "a"}]}', "neither 'stats' (pytest-benchmark) nor 'samples'"),
    ('{"benchmarks": [{"samples": [1.0]}]}', "no benchmark name"),
    ('{"benchmarks": [{"name": "a", "samples": [1.0]}, {"name": "a", "samples": [1.0]}]}', "appears twice"),
    ('{"benchmarks": [{"fullname": "t", "stats": {"median": "x"}}]}', "stats.median: expected a finite number"),
    ('{"schema_version": 1, "kind": "pruning_report", "benchmarks": []}', "kind 'pruning_report'"),
    ('{"schema_version": 99, "kind": "benchmark", "benchmarks": []}', "unsupported schema_version 99"),
    ('{"version": 2, "a.time_x": {"code": "...", "unit": "seconds"}}', "asv's benchmarks.json"),
    ('{"version": 1, "results": {}, "commit_hash": "abc"}', "asv result file of version 1"),
    ('{"version": 2, "result_columns": ["result", "params"], "results": {"b": [[1.0, 2.0], [["1"]]]}}',
     "2 results for 1 parameter combinations"),
])
def test_corrupt_or_foreign_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultsFileError) as info:
        load_results(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ResultsFileError, match="no such result file or folder"):
        load_results(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ResultsFileError, match=r"bin\.json: corrupt result file \(not UTF-8"):
        load_results(tmp_path / "bin.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsFileError, match=r"no result files \(\*\.json\)"):
        load_results(tmp_path / "empty")


def test_nan_in_samples_is_rejected_but_nan_results_are_skipped(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text('{"benchmarks": [{"name": "a", "samples": [1.0, NaN]}]}')
    with pytest.raises(ResultsFileError, match="got nan"):
        load_results(path)
    asv = _write_asv(tmp_path / "results", "m1", "abcd", {"b.time_x": [[math.nan], [], "v", 0, 0.1]})
    assert load_results(asv) == {}


def test_asv_runs_of_one_commit_are_processes_of_one_side(tmp_path):
    # Three asv runs per commit (e.g. three CI jobs, each its own results folder): each run is a process.
    base = [_write_asv(tmp_path / f"base{i}", "m1", "aaaa1111", _asv_results(1 + i / 1000)) for i in range(3)]
    new = [_write_asv(tmp_path / f"new{i}", "m1", "bbbb2222", _asv_results(1.3 + i / 1000)) for i in range(3)]
    c = compare_files(",".join(map(str, base)), ",".join(map(str, new)), threshold=0.05)
    row = {r.name: r for r in c.rows}["bench_x.Suite.time_sleep(2, 'a')"]
    assert (row.processes_base, row.processes_new, row.method) == (3, 3, "processes")
    assert row.verdict == "regressed" and row.ratio == pytest.approx(1.3, rel=0.01)
