"""The asv suite's shared setup_cache: a model store where each model of a run is made once and then loaded."""

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("asv_runner")
from asv_runner.benchmarks._base import get_setup_cache_key  # noqa: E402

from perfmamba.bench import workloads  # noqa: E402
from perfmamba.bench.cases import Case  # noqa: E402
from perfmamba.timing import subnormals_flushed  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CASE = Case("mamba2-tiny", "model", "prefill", 256, 8, 0.5, "contribution")
PARAMS = (CASE.preset, CASE.seqlen, CASE.batch, CASE.ratio, CASE.criterion)


@pytest.fixture(scope="module")
def suite():
    """The suite as asv imports it, on the quick grid and the CPU. Importing it sets process-wide state (torch's
    threads, subnormal flushing, an environment variable) that the rest of the test session must not inherit."""
    threads, flushed = torch.get_num_threads(), subnormals_flushed()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERFMAMBA_GRID", "quick")
        mp.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK", "1"))
        import benchmarks.asv.bench_block as block
        import benchmarks.asv.bench_model as model
        import benchmarks.asv.bench_op as op
        from benchmarks.asv import common

        if common.GRID.name != "quick":
            pytest.skip(f"the suite was imported earlier with grid {common.GRID.name!r}")
        mp.setattr(common, "device", lambda: torch.device("cpu"))
        yield SimpleNamespace(common=common, block=block, model=model, op=op)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flushed)


@pytest.fixture
def store(suite, tmp_path, monkeypatch):
    """A fresh run: asv's cache directory (the cwd of setup_cache and of every benchmark process), no model in
    memory."""
    monkeypatch.chdir(tmp_path)
    suite.common.MODELS.clear()
    yield suite.common.model_store()
    suite.common.MODELS.clear()


def _benchmark_classes(*modules) -> list[type]:
    return [cls for m in modules for _, cls in inspect.getmembers(m, inspect.isclass)
            if cls.__module__ == m.__name__ and hasattr(cls, "params")]


def test_every_timing_class_shares_one_setup_cache(suite):
    classes = _benchmark_classes(suite.op, suite.block, suite.model)
    assert len(classes) == 14
    # asv keys a setup_cache by module and line: one key means it runs once per asv invocation for all of them.
    assert {get_setup_cache_key(cls.setup_cache) for cls in classes} == {get_setup_cache_key(suite.common.model_store)}


def test_the_first_process_makes_a_model_and_later_ones_load_it(suite, store, monkeypatch):
    first = suite.model.ModelPrefill()
    first.setup(store, *PARAMS)
    saved = sorted(p.name for p in Path(store).iterdir())
    # The pruned model and the dense one it was pruned from; nothing half-written is left.
    assert saved == sorted({suite.common.model_dir(CASE), suite.common.model_dir(CASE.dense())})

    suite.common.MODELS.clear()  # a new benchmark process
    with monkeypatch.context() as mp:
        mp.setattr(workloads, "prune", lambda *a, **k: pytest.fail("a later process pruned again"))
        mp.setattr(workloads, "build_model", lambda *a, **k: pytest.fail("a later process built a model again"))
        later = suite.model.ModelPrefill()
        later.setup(store, *PARAMS)

    # The loaded model is the one pruning makes in-process: same states kept, same output.
    fresh = workloads.make_workload(CASE, torch.device("cpu"), workloads.ModelCache())
    assert later.workload.info["d_states"] == fresh.info["d_states"] == first.workload.info["d_states"]
    assert max(fresh.info["d_states"]) < CASE.dense().d_state
    torch.testing.assert_close(later.workload.fn(), fresh.fn(), rtol=0, atol=0)
    later.time_call(store, *PARAMS)


def test_a_speedup_loads_its_dense_twin_from_the_store(suite, store, monkeypatch):
    suite.block.BlockPrefill().setup(store, *PARAMS)  # makes both models
    suite.common.MODELS.clear()
    monkeypatch.setattr(workloads, "build_model", lambda *a, **k: pytest.fail("the dense model was rebuilt"))
    bench = suite.block.BlockPrefillSpeedup()
    bench.setup(store, *PARAMS)
    assert bench.dense.info["d_states"] != bench.pruned.info["d_states"]


def test_a_run_makes_only_the_models_its_benchmarks_ask_for(suite, store):
    suite.model.ModelDecodeCache().setup(store, "mamba1-tiny", 64, 64, 0.0, "contribution")
    assert [p.name for p in Path(store).iterdir()] == [suite.common.model_dir(Case("mamba1-tiny", dtype="fp32"))]
    suite.op.OpPrefill().setup(store, CASE.preset, CASE.seqlen, CASE.batch, CASE.ratio, "none")
    assert len(list(Path(store).iterdir())) == 1  # the op level needs no model


def test_the_probe_runs_a_case_of_every_kind_in_a_forked_child():
    env = dict(os.environ, PERFMAMBA_GRID="quick", CUDA_VISIBLE_DEVICES="")  # the CPU path; the GPU's is in docs
    out = subprocess.run([sys.executable, "benchmarks/asv_probe.py", "--fork", "--timeout-s", "120"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    for kind in ("OpDecode", "OpPrefill", "BlockPrefill", "ModelPrefill", "ModelDecode"):
        assert f"] {kind}(" in out.stdout
    assert "forked child: done" in out.stdout
    assert not list(ROOT.glob("model-mamba*")), "the probe's model store was the checkout"
