"""`perfmamba gate BASE PR`: the GPU CI job in one command. Runs the benchmark suite of two trees in several
processes each, interleaved on one machine (BASE PR, PR BASE, BASE PR, ...: a drift of clocks or load over the
run hits both sides alike), then compares them with the process as the statistical unit.

A tree is a git ref of the current repository (checked out as a detached worktree under OUT/trees) or a checkout
directory. Each process runs that tree's own `benchmarks/` with that tree on PYTHONPATH, as the CI workflow
does. On a GPU, processes are forked from one server per tree that has imported the heavy third-party modules
(torch, Triton, mamba-ssm: ~10 s a process otherwise) without touching CUDA, so each child still creates its own
CUDA context, allocations and Triton state. On a CPU each process is a fresh interpreter (`launch="spawn"`): there
the host's memory layout is part of what is timed, and the children of one server share it (docs/gate.md: A/A
runs called identical code improved or regressed when forked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from perfmamba.checks import check_at_least, check_choice

SUITES = ("benchmarks/test_bench_op.py", "benchmarks/test_bench_block.py", "benchmarks/test_bench_model.py")
LAUNCHES = ("auto", "fork", "spawn")  # auto: fork where CUDA times the device's work, spawn on a CPU
# Imported once per tree by the fork server; a module that is not installed is skipped.
PREIMPORT = ("numpy", "torch", "pytest", "pytest_benchmark.plugin", "hypothesis", "triton", "causal_conv1d",
             "mamba_ssm")

_SERVER = r"""
import json, os, sys, time, traceback
os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # torch.cuda.is_available() without creating a context
start, failed = time.monotonic(), {}
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"[:200]
import torch
if torch.cuda.is_initialized():
    print(json.dumps({"error": "importing the kernels initialised CUDA; forked children could not use it"}),
          flush=True)
    sys.exit(3)
print(json.dumps({"ready": True, "import_s": time.monotonic() - start, "failed": failed}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        rc = 3
        try:
            import pytest
            rc = int(pytest.main(job["args"]))
        except BaseException:
            traceback.print_exc()
        print(f"[perfmamba gate] pytest returned {rc} after {time.monotonic() - t0:.1f} s", flush=True)
        sys.stderr.flush()
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - t0}), flush=True)
"""


class GateError(RuntimeError):
    """The gate cannot run as asked (a bad ref, an output folder in use, a process that wrote no results)."""


@dataclass(frozen=True)
class Tree:
    label: str
    path: Path
    commit: str | None
    worktree: bool  # made here, removed afterwards


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise GateError(f"git {' '.join(args)}: {out.stderr.strip().splitlines()[-1] if out.stderr else 'failed'}")
    return out.stdout.strip()


def prepare_tree(label: str, spec: str, repo: Path, workdir: Path) -> Tree:
    """A checkout directory as it is, or a git ref of `repo` checked out as a detached worktree in `workdir`."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "benchmarks" / "conftest.py").is_file():
            raise GateError(f"{label} {spec!r}: a directory without benchmarks/conftest.py is not a perfmamba tree")
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True)
        return Tree(label, path.resolve(), commit.stdout.strip() or None, worktree=False)
    try:
        commit = git(repo, "rev-parse", "--verify", f"{spec}^{{commit}}")
    except GateError:
        raise GateError(f"{label} {spec!r} is neither a directory nor a commit of the git repository at {repo}"
                        ) from None
    target = workdir / label
    git(repo, "worktree", "add", "--detach", "--force", str(target), commit)
    return Tree(label, target.resolve(), commit, worktree=True)


def remove_tree(tree: Tree, repo: Path) -> None:
    if tree.worktree:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree.path)], cwd=repo, capture_output=True)


def tree_env(tree: Tree) -> dict[str, str]:
    """The environment of a tree's processes: the tree first on PYTHONPATH (ahead of any installed perfmamba),
    and Triton's autotuning picks cached on disk, so that every process of both trees runs the kernel
    configurations the first one chose (a fresh autotune per process would add its own variance)."""
    from perfmamba.bench.suite import DEFER_VAR

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree.path), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    env[DEFER_VAR] = "1"  # the ratios' thresholds are judged over the processes (`gate`), not in each one
    env["PERFMAMBA_GIT_COMMIT"] = tree.commit or ""
    if not env["PERFMAMBA_GIT_COMMIT"]:
        env.pop("PERFMAMBA_GIT_COMMIT")
    return env


def resolve_launch(launch: str, cuda: bool | None = None) -> str:
    """"auto" as "fork" where a CUDA device is present (the timed work is the GPU's) and "spawn" elsewhere (see the
    module docstring); "fork" and "spawn" as given."""
    if launch != "auto":
        return launch
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "fork" if cuda else "spawn"


class Launcher:
    """Starts benchmark processes of trees: forked from a per-tree server (`launch="fork"`), or fresh
    interpreters (`"spawn"`). Use as a context manager; `run` blocks until the process exits."""

    def __init__(self, python: str = sys.executable, launch: str = "auto", preimport: Sequence[str] = PREIMPORT):
        check_choice("launch", launch, LAUNCHES)
        self.python, self.launch, self.preimport = python, resolve_launch(launch), tuple(preimport)
        self._servers: dict[Path, subprocess.Popen] = {}
        self.imports: dict[str, dict] = {}  # per tree: the server's import time and the modules it could not import

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers.values():
            if server.stdin:
                server.stdin.close()
            server.wait(timeout=60)
        self._servers.clear()

    def start(self, trees: Sequence[Tree]) -> None:
        """Start the fork servers of `trees` side by side (each imports the kernels: ~11 s on an H200)."""
        if self.launch != "fork":
            return
        pending = {}
        for tree in trees:
            if tree.path not in self._servers and tree.path not in pending:
                pending[tree.path] = (tree, subprocess.Popen(
                    [self.python, "-c", _SERVER, *self.preimport], cwd=tree.path, env=tree_env(tree),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for tree, server in pending.values():
            hello = json.loads(server.stdout.readline() or '{"error": "the fork server exited"}')
            if "error" in hello:
                raise GateError(f"{tree.label}: {hello['error']} (use --launch spawn)")
            self.imports[tree.label] = hello
            self._servers[tree.path] = server

    def _server(self, tree: Tree) -> subprocess.Popen:
        self.start([tree])
        return self._servers[tree.path]

    def run(self, tree: Tree, args: Sequence[str], log: Path) -> int:
        if self.launch == "spawn":
            with log.open("w") as f:
                return subprocess.run([self.python, "-m", "pytest", *args], cwd=tree.path, env=tree_env(tree),
                                      stdout=f, stderr=subprocess.STDOUT).returncode
        server = self._server(tree)
        server.stdin.write(json.dumps({"args": list(args), "log": str(log)}) + "\n")
        server.stdin.flush()
        reply = server.stdout.readline()
        if not reply:
            raise GateError(f"{tree.label}: the fork server exited (log: {log})")
        return int(json.loads(reply)["rc"])


def benchmark_args(out_json: Path, *, grid: str | None, select: str | None, markers: str | None,
                   suites: Sequence[str] = SUITES, extra: Sequence[str] = ()) -> list[str]:
    """The pytest arguments of one benchmark process (pytest-benchmark's own timer off: the suite times)."""
    args = [*suites, "-q", "-p", "no:cacheprovider", "--benchmark-disable", "--perfmamba-json", str(out_json)]
    if grid:
        args += ["--perfmamba-grid", grid]
    if markers:
        args += ["-m", markers]
    if select:
        args += ["-k", select]
    return [*args, *extra]


@dataclass
class ProcessRecord:
    tree: str
    index: int  # 1-based, per tree
    position: int  # order on the machine, 0-based
    rc: int
    seconds: float
    results: str | None  # the JSON it wrote, None if none
    log: str


@dataclass
class Schedule:
    """Which processes ran, in which order, and how long each took."""

    records: list[ProcessRecord] = field(default_factory=list)

    def results(self, tree: str) -> list[str]:
        return [r.results for r in self.records if r.tree == tree and r.results]

    def payload(self) -> dict:
        return {"processes": [asdict(r) for r in self.records],
                "seconds": sum(r.seconds for r in self.records)}


def interleaved(labels: Sequence[str], processes: int) -> list[str]:
    """The order of processes: each round runs every tree once, in an order that reverses every other round
    (A B, B A, A B ...), so that a linear drift over the run does not favour the tree that always goes first."""
    order = []
    for i in range(processes):
        order += list(labels) if i % 2 == 0 else list(reversed(labels))
    return order


def run_interleaved(trees: Sequence[Tree], processes: int, args_for: Callable[[Tree, Path], list[str]], out: Path,
                    launcher: Launcher, progress: Callable[[str], None] = print,
                    budget_s: float = float("inf")) -> Schedule:
    """Run `processes` benchmark processes of each tree, interleaved; results in out/runs, logs in out/logs. No
    process starts once `budget_s` seconds have passed."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    by_label = {t.label: t for t in trees}
    start = time.monotonic()  # the budget includes the fork servers' start (their kernel imports)
    launcher.start(trees)
    schedule, count = Schedule(), dict.fromkeys(by_label, 0)
    order = interleaved(list(by_label), processes)
    for position, label in enumerate(order):
        if time.monotonic() - start > budget_s:
            progress(f"budget of {budget_s:.0f} s spent after {position} processes")
            break
        tree = by_label[label]
        count[label] += 1
        stem = f"{label}-{count[label]}"
        results, log = out / "runs" / f"{stem}.json", out / "logs" / f"{stem}.log"
        t0 = time.monotonic()
        rc = launcher.run(tree, args_for(tree, results), log)
        seconds = time.monotonic() - t0
        schedule.records.append(ProcessRecord(label, count[label], position, rc, seconds,
                                              str(results) if results.is_file() else None, str(log)))
        progress(f"[{position + 1}/{len(order)}] {stem}: exit {rc}, {seconds:.0f} s "
                 f"({time.monotonic() - start:.0f} s in all)")
    return schedule


def prepare_out(out: Path, force: bool) -> None:
    """An empty output folder: refuse one that holds anything unless `force` (then clear it)."""
    if out.exists() and not out.is_dir():
        raise GateError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise GateError(f"--out {out} is not empty; pass --force to replace what is there")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise GateError(f"--out {out} is not writable ({e.strerror or e})") from e


@dataclass(frozen=True)
class GateOptions:
    """What `perfmamba gate` runs. `processes`: per tree (>= 1; with 1 the spread between processes is unknown
    and the report says so; None: the device class's `processes` in thresholds.toml, 6 on the H200, 3 on a CPU).
    `grid` / `select` / `markers`: the benchmark grid, pytest -k and -m."""

    base: str
    pr: str
    out: Path
    processes: int | None = None
    grid: str | None = None
    select: str | None = None
    markers: str | None = "not slow"
    launch: str = "auto"
    python: str = sys.executable
    threshold: float | None = None  # overrides the device class's default
    thresholds_file: str | None = None
    force: bool = False
    keep_trees: bool = False

    def __post_init__(self) -> None:
        if self.processes is not None:  # None: the device class's
            check_at_least("processes", self.processes)
        check_choice("launch", self.launch, LAUNCHES)


def gate_config(options: GateOptions, device_class_name: str | None = None):
    """The gate's thresholds: the device class's [<class>.gate] table of thresholds.toml, overridden by the
    options."""
    from perfmamba.bench.thresholds import load_thresholds
    from perfmamba.gate.config import GateConfig, load_thresholds_file

    table = load_thresholds(device_class_name).gate
    patterns = dict(table.patterns)
    if options.thresholds_file:
        patterns = load_thresholds_file(options.thresholds_file)
    default = table.default if options.threshold is None else options.threshold
    return GateConfig(default_threshold=default, thresholds=patterns, host_timed_threshold=table.host_timed,
                      cross_device_spread=table.cross_device_spread)


def gate(options: GateOptions, progress: Callable[[str], None] = print) -> tuple[int, dict]:
    """Run the gate end to end; returns (exit code: 0 no regression, 1 regression or the PR failing its
    thresholds, and the summary written to OUT/gate.json). Raises GateError for what it cannot do."""
    from perfmamba.bench.suite import thresholds_over_processes
    from perfmamba.bench.thresholds import load_thresholds
    from perfmamba.gate.compare import compare
    from perfmamba.gate.comparison import EXIT_REGRESSED, RESULT_KIND
    from perfmamba.gate.render import blocking_notes, to_markdown, to_text
    from perfmamba.gate.runs import load_side
    from perfmamba.results import atomic_write_text, write_json

    out = options.out
    prepare_out(out, options.force)
    config = gate_config(options)
    processes = options.processes or load_thresholds().gate.processes
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel")) if not all(
        Path(s).is_dir() for s in (options.base, options.pr)) else Path.cwd()
    trees = [prepare_tree("base", options.base, repo, out / "trees"),
             prepare_tree("pr", options.pr, repo, out / "trees")]
    start = time.monotonic()
    try:
        progress(f"perfmamba gate: {processes} processes a side, interleaved; base {trees[0].commit or ''} "
                 f"({trees[0].path}), pr {trees[1].commit or ''} ({trees[1].path})")
        with Launcher(options.python, options.launch) as launcher:
            schedule = run_interleaved(
                trees, processes,
                lambda tree, path: benchmark_args(path, grid=options.grid, select=options.select,
                                                  markers=options.markers),
                out, launcher, progress)
    finally:
        if not options.keep_trees:
            for tree in trees:
                remove_tree(tree, repo)
    for label in ("base", "pr"):
        lost = [r for r in schedule.records if r.tree == label and r.results is None]
        if lost:
            raise GateError(f"{label} process {lost[0].index} wrote no results (exit {lost[0].rc}; log: "
                            f"{lost[0].log})")
    comparison = compare(load_side(schedule.results("base")), load_side(schedule.results("pr")), config,
                         base_label=f"base {trees[0].commit or options.base}",
                         new_label=f"pr {trees[1].commit or options.pr}")
    if not comparison.rows:
        raise GateError("nothing was compared: no benchmark ran in both trees (check --select / --grid)")
    # A PR process that failed (a kernel off the reference, a plug-in too slow) blocks; the measured ratios'
    # thresholds are judged on their median over the PR's processes, with the PR tree's own thresholds.toml.
    pr_failed = [r for r in schedule.records if r.tree == "pr" and r.rc != 0]
    toml = trees[1].path / "perfmamba" / "bench" / "thresholds.toml"
    ratio_failures = thresholds_over_processes(
        [json.loads(Path(p).read_text()) for p in schedule.results("pr")],
        load_thresholds(path=toml if toml.is_file() else None))
    # Comparison.exit_code's (2 when every row is "not assessed"), or 1 when the PR failed its thresholds.
    code = EXIT_REGRESSED if pr_failed or ratio_failures else comparison.exit_code()
    summary = {
        "exit_code": code, "counts": comparison.counts, "wall_s": time.monotonic() - start,
        "trees": [{"label": t.label, "spec": s, "commit": t.commit} for t, s in zip(trees, (options.base, options.pr))],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "pr_failed_processes": [r.log for r in pr_failed], "pr_threshold_failures": ratio_failures,
        **schedule.payload(),
    }
    write_json(out / "comparison.json", comparison.payload(), kind=RESULT_KIND)
    notes = blocking_notes([str(r.log) for r in pr_failed], processes, ratio_failures)
    atomic_write_text(out / "comparison.md", notes + to_markdown(comparison))
    write_json(out / "gate.json", summary, kind="gate")
    progress(notes + to_text(comparison))
    progress(f"gate: {('passed', 'blocked', 'judged nothing')[code]} (exit {code}) after {summary['wall_s']:.0f} s; "
             f"wrote {out / 'comparison.md'}, {out / 'comparison.json'} and {out / 'gate.json'}")
    return code, summary
