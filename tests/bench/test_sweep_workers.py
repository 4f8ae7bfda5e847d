"""The sweep as the README runs it across a host's GPUs (`pytest benchmarks -n N --dist loadgroup
--perfmamba-json`), on the CPU with two workers: every case runs once and none is lost, a preset's cases stay on
one worker, each record names its worker, and the merged file reads in `perfmamba compare`. Dense cases only:
pruned ones assert speedups, which two workers on a shared 2-core runner cannot promise, and this is about
scheduling."""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("xdist", reason="the sweep's workers are pytest-xdist's")
REPO = Path(__file__).resolve().parents[2]


def pytest_in_repo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PERFMAMBA_GRID": "quick", "PERFMAMBA_DEVICE_CLASS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_bench_op.py"), "-q",
                           "-p", "no:cacheprovider", "-p", "no:randomly", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_two_workers_run_every_case_once_and_the_merge_reads_in_compare(tmp_path):
    collected = pytest_in_repo("--collect-only", "-m", "not pruned")
    assert collected.returncode == 0, collected.stdout[-2000:]
    expected = sorted(line for line in collected.stdout.splitlines() if "::" in line)

    out = tmp_path / "sweep.json"
    run = pytest_in_repo("-m", "not pruned", "-n", "2", "--dist", "loadgroup", "--perfmamba-rounds", "3",
                         "--perfmamba-json", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    records = json.loads(out.read_text())["benchmarks"]
    names = [r["fullname"] for r in records]
    assert len(names) == len(set(names)), "a case ran twice"
    assert sorted(f"benchmarks/{n.split('benchmarks/', 1)[1]}" for n in names) == expected, "a case was lost"

    workers = defaultdict(set)
    for r in records:
        workers[r["params"]["preset"]].add(r["extra_info"]["xdist_worker"])
    assert all(len(w) == 1 for w in workers.values()), f"a preset's cases were split over workers: {workers}"
    assert set().union(*workers.values()) == {"gw0", "gw1"}  # two presets, two groups: one per worker

    report = tmp_path / "compare.json"
    compare = subprocess.run([sys.executable, "-m", "perfmamba", "compare", str(out), str(out), "--json", str(report)],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    compared = json.loads(report.read_text())
    assert len(compared["rows"]) == len(records) == len(expected) >= 4 and not compared["missing"]
