"""pytest-benchmark suite of perfmamba: options, the case parametrisation, GPU pinning under xdist, result files.

    python -m pytest benchmarks -q --benchmark-only                       # quick grid on a CPU (CI subset)
    python -m pytest benchmarks --perfmamba-grid full --benchmark-json out.json --benchmark-save-data
    python -m pytest benchmarks -n 8 --dist loadgroup --perfmamba-grid full --perfmamba-json sweep.json
                                                   # the sweep, one xdist worker per GPU of the host

Tests ask for cases with `@pytest.mark.cases(level=..., mode=...)` (or `quality=True`) and get a `case`
parameter per case of the selected grid (`--perfmamba-grid`, $PERFMAMBA_GRID, else "gpu" with CUDA and
"quick" without; "full" is the sweep). Each case carries markers of its level, mode and "pruned", so
`-m "op and decode"` narrows a run further; the perplexity cases are also marked "slow" (their first run
trains the byte-level models, a few minutes on a CPU, cached afterwards by perfmamba.eval).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from perfmamba.bench.cases import ENV_VAR, LEVELS, MODES, get_grid
from perfmamba.bench.harness import RESULT_KIND, Recorder, case_group, split_xdist_group, worker_gpu_index
from perfmamba.bench.thresholds import load_thresholds
from perfmamba.bench.workloads import ModelCache, default_device
from perfmamba.timing import configure_process

RECORDS_KEY = "perfmamba_bench_records"
_recorder_key = pytest.StashKey[Recorder]()


def pytest_addoption(parser):
    group = parser.getgroup("perfmamba", "perfmamba benchmarks")
    group.addoption("--perfmamba-grid", default=None,
                    help=f"case grid: quick (CPU CI), gpu (GPU PR gate) or full (GPU sweep); default ${ENV_VAR}, "
                         "else gpu with CUDA and quick without")
    group.addoption("--perfmamba-json", default=None, metavar="PATH",
                    help="write every case's samples and extra_info here (pytest-benchmark's layout; also "
                         "under xdist, where pytest-benchmark disables itself)")
    group.addoption("--perfmamba-rounds", type=int, default=None, help="measured rounds per case (grid default)")
    group.addoption("--perfmamba-warmup", type=int, default=None, help="warm-up rounds per case (grid default)")
    group.addoption("--perfmamba-timing", choices=("graph", "eager"), default=None,
                    help="on a GPU: graph (CUDA-graph replay, the grid's default) or eager (events around eager "
                         "calls: host-timed)")


def pytest_configure(config):
    config.addinivalue_line("markers", "cases(level=None, mode=None, quality=False): parametrise `case` over the grid")
    for name in (*LEVELS, *MODES):
        config.addinivalue_line("markers", f"{name}: benchmark cases of this level or mode")
    config.addinivalue_line("markers", "pruned: benchmark cases with a prune ratio > 0")
    config.addinivalue_line("markers", "xdist_group(name): keep these tests on one xdist worker")
    # Under xdist pytest-benchmark disables itself and our Recorder keeps the results: no need to warn per test.
    config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used at all")
    config.stash[_recorder_key] = Recorder()
    configure_process(_grid(config).cpu_threads)
    # Under xdist each worker owns one GPU (worker gwN -> GPU N mod count): set before any CUDA allocation.
    index = worker_gpu_index(os.environ.get("PYTEST_XDIST_WORKER"), torch.cuda.device_count())
    if index is not None:
        torch.cuda.set_device(index)


def _grid(config):
    return get_grid(config.getoption("--perfmamba-grid"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` that keeps each preset (and dtype) on one worker by the case id itself, whatever the
    pytest version (see `case_group`); other --dist modes are xdist's."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    grid = _grid(config)
    presets = (*grid.presets, *grid.quality_presets)

    class CaseGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return case_group(nodeid, presets)

    return CaseGroupScheduling(config, log)


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("cases")
    if marker is None or "case" not in metafunc.fixturenames:
        return
    grid = _grid(metafunc.config)
    quality = bool(marker.kwargs.get("quality"))
    if quality:
        cases = grid.quality_cases()
    else:
        cases = grid.cases(level=marker.kwargs.get("level"), mode=marker.kwargs.get("mode"))
    params = []
    for case in cases:
        marks = [getattr(pytest.mark, case.level), getattr(pytest.mark, case.mode),
                 # one worker keeps one model: pruning it again elsewhere would cost more than the spread saves
                 pytest.mark.xdist_group(f"{case.preset}-{case.dtype}")]
        if case.pruned:
            marks.append(pytest.mark.pruned)
        if quality:  # the first run trains the models (minutes on a CPU; eval's cache keeps them)
            marks.append(pytest.mark.slow)
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("case", params)


@pytest.fixture(scope="session")
def grid(request):
    return _grid(request.config)


@pytest.fixture(scope="session")
def device():
    return default_device()


@pytest.fixture(scope="session")
def thresholds():
    return load_thresholds()


@pytest.fixture(scope="session")
def models():
    # Every model of a preset (dense and each ratio) for two presets: the block and model levels reuse them
    # instead of building and pruning them again (130m shapes: ~0.3 GB each in bf16).
    cache = ModelCache(size=8)
    yield cache
    cache.clear()


@pytest.fixture(scope="session")
def rounds(request, grid):
    return request.config.getoption("--perfmamba-rounds") or grid.rounds


@pytest.fixture(scope="session")
def warmup(request, grid):
    option = request.config.getoption("--perfmamba-warmup")
    return grid.warmup if option is None else option


@pytest.fixture(scope="session")
def graph(request, grid):
    option = request.config.getoption("--perfmamba-timing")
    return grid.graph if option is None else option == "graph"


@pytest.fixture
def record(request, benchmark):
    """record(result): put a CaseResult's extra_info on pytest-benchmark's record and into --perfmamba-json."""
    recorder = request.config.stash[_recorder_key]

    def add(result):
        benchmark.extra_info.update(result.extra_info)
        # xdist's --dist loadgroup appends "@<group>" to node ids; the gate matches runs by the plain id
        recorder.add(request.node.name, split_xdist_group(request.node.nodeid)[0], result.case, result.samples,
                     result.extra_info)

    return add


def pytest_sessionfinish(session):
    config = session.config
    recorder = config.stash[_recorder_key]
    if hasattr(config, "workeroutput"):  # an xdist worker: ship the records to the controller
        config.workeroutput[RECORDS_KEY] = json.dumps(recorder.records)
        return
    path = config.getoption("--perfmamba-json")
    if path and recorder.records:
        from perfmamba.results import write_json

        write_json(path, {"grid": _grid(config).name, **recorder.payload()}, kind=RESULT_KIND)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    records = getattr(node, "workeroutput", {}).get(RECORDS_KEY)
    if records:
        node.config.stash[_recorder_key].extend(json.loads(records))
