"""`perfmamba gate` end to end on the CPU: the same mechanism as on a GPU (interleaved processes of two trees,
each on its own PYTHONPATH, judged with the process as the unit), on the reference kernels of the quick grid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perfmamba.gate.run import Launcher, Tree, interleaved, resolve_launch

ROOT = Path(__file__).resolve().parents[2]
# One op-level case of the quick grid: a few seconds a process.
ONE_CASE = ["--grid", "quick", "-k", "mamba1 and op and prefill and r0-"]


def _gate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfmamba", "gate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_processes_alternate_which_tree_goes_first():
    assert interleaved(["base", "pr"], 3) == ["base", "pr", "pr", "base", "base", "pr"]


def test_aa_on_one_tree_passes_and_writes_its_report(tmp_path):
    out = tmp_path / "gate"
    result = _gate(str(ROOT), str(ROOT), "--processes", "2", "--out", str(out), *ONE_CASE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("gate: passed (exit 0)")
    summary = json.loads((out / "gate.json").read_text())
    assert [p["tree"] for p in summary["processes"]] == ["base", "pr", "pr", "base"]
    assert all(p["rc"] == 0 and p["results"] for p in summary["processes"])
    comparison = json.loads((out / "comparison.json").read_text())
    (row,) = comparison["rows"]
    assert row["processes_base"] == row["processes_new"] == 2 and row["method"] == "processes"
    assert row["verdict"] != "regressed" and row["clock"] == "perf_counter"
    assert (out / "comparison.md").read_text().startswith("### perfmamba compare:")


def test_a_slower_kernel_in_the_pr_tree_is_blocked(tmp_path):
    pr = tmp_path / "pr"
    for part in ("perfmamba", "benchmarks"):
        shutil.copytree(ROOT / part, pr / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", pr / "pyproject.toml")
    # A kernel change: the reference selective scan does its work twice (one more pass of the same kernel).
    with (pr / "perfmamba" / "ops" / "__init__.py").open("a") as f:
        f.write("\n\ndef _twice(*args, **kwargs):\n    selective_scan_ref(*args, **kwargs)\n"
                "    return selective_scan_ref(*args, **kwargs)\n\n\nregister('selective_scan', 'reference', _twice)\n")
    out = tmp_path / "gate"
    result = _gate(str(ROOT), str(pr), "--processes", "3", "--out", str(out), *ONE_CASE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gate: blocked (exit 1)" in result.stdout
    (row,) = json.loads((out / "comparison.json").read_text())["rows"]
    assert row["verdict"] == "regressed" and row["ratio"] > 1.5


@pytest.mark.parametrize(("args", "message"), [
    (["no-such-ref", "HEAD"], "base 'no-such-ref' is neither a directory nor a commit"),
    (["HEAD", "HEAD", "--processes", "0"], "processes must be an integer >= 1, got 0"),
])
def test_misuse_is_one_line_and_exit_2(tmp_path, args, message):
    result = _gate(*args, "--out", str(tmp_path / "gate"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_refuses_an_output_folder_in_use(tmp_path):
    out = tmp_path / "gate"
    out.mkdir()
    (out / "comparison.md").write_text("a report someone kept")
    result = _gate(str(ROOT), str(ROOT), "--out", str(out))
    assert result.returncode == 2 and "is not empty; pass --force" in result.stderr
    assert (out / "comparison.md").read_text() == "a report someone kept"


@pytest.mark.parametrize("launch", ["fork", "spawn"])
def test_launcher_runs_pytest_in_the_tree_with_its_own_path(tmp_path, launch):
    tree = tmp_path / "tree"
    (tree / "pkg_of_tree").mkdir(parents=True)
    (tree / "pkg_of_tree" / "__init__.py").write_text("WHERE = 'tree'\n")
    (tree / "test_where.py").write_text("import pkg_of_tree\n\ndef test_where():\n"
                                        "    assert pkg_of_tree.WHERE == 'tree'\n")
    log = tmp_path / "log.txt"
    with Launcher(launch=launch, preimport=("pytest",)) as launcher:
        rc = launcher.run(Tree("t", tree, None, worktree=False), ["-q", "-p", "no:cacheprovider", "test_where.py"],
                          log)
    assert rc == 0, log.read_text()
    assert "1 passed" in log.read_text()


def test_auto_launch_forks_only_where_cuda_times_the_device():
    """On a CPU the children of one fork server share its memory layout and time alike, so the gate spawns."""
    assert resolve_launch("auto", cuda=True) == "fork"
    assert resolve_launch("auto", cuda=False) == "spawn"
    assert resolve_launch("fork", cuda=False) == "fork" and resolve_launch("spawn", cuda=True) == "spawn"
