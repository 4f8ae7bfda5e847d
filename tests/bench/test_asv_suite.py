"""The asv suite's shared setup_cache: models pruned once per run, saved, and loaded by the benchmark processes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("asv_runner")
from asv_runner.benchmarks._base import get_setup_cache_key  # noqa: E402

import benchmarks.asv.bench_block as bench_block  # noqa: E402
import benchmarks.asv.bench_model as bench_model  # noqa: E402
import benchmarks.asv.bench_op as bench_op  # noqa: E402
from benchmarks.asv import common  # noqa: E402
from perfmamba.bench import workloads  # noqa: E402
from perfmamba.bench.cases import Case  # noqa: E402

CASE = Case("mamba2-tiny", "model", "prefill", 256, 8, 0.5, "contribution")


@pytest.fixture
def in_cache_dir(tmp_path, monkeypatch):
    """asv runs setup_cache and every benchmark process of a run in one cache directory."""
    monkeypatch.chdir(tmp_path)
    common.MODELS.clear()
    yield tmp_path
    common.MODELS.clear()


def test_one_setup_cache_for_every_block_and_model_class_and_none_for_ops():
    # asv keys a setup_cache by module and line: one key means it runs once for all these classes.
    model_classes = [getattr(m, n) for m in (bench_block, bench_model) for n in dir(m)
                     if n.startswith(("Block", "Model")) and isinstance(getattr(m, n), type)]
    assert len(model_classes) == 10
    keys = {get_setup_cache_key(cls.setup_cache) for cls in model_classes}
    assert len(keys) == 1
    assert not any(hasattr(getattr(bench_op, n), "setup_cache") for n in dir(bench_op) if n.startswith("Op"))


def test_prepare_models_saves_each_model_of_the_grid_once(in_cache_dir):
    saved = common.prepare_models()
    wanted = {common.model_dir(c) for level in ("block", "model") for c in common.GRID.cases(level)}
    assert sorted(saved["models"]) == sorted(wanted)
    assert len(wanted) == len(common.GRID.presets) * len(common.GRID.ratios)
    assert all((in_cache_dir / name / "config.json").is_file() for name in saved["models"])


def test_benchmarks_load_the_saved_models_instead_of_pruning_again(in_cache_dir, monkeypatch):
    saved = common.prepare_models()
    common.MODELS.clear()

    def no_pruning(*args, **kwargs):
        raise AssertionError("a benchmark process pruned a model that setup_cache had saved")

    monkeypatch.setattr(workloads, "prune", no_pruning)
    bench = bench_model.ModelPrefill()
    params = (CASE.preset, CASE.seqlen, CASE.batch, CASE.ratio, CASE.criterion)
    bench.setup(saved, *params)
    monkeypatch.undo()

    # The loaded model is the one pruning makes in-process: same states kept, same output.
    fresh = workloads.make_workload(CASE, torch.device("cpu"), workloads.ModelCache())
    assert bench.workload.info["d_states"] == fresh.info["d_states"]
    torch.testing.assert_close(bench.workload.fn(), fresh.fn(), rtol=0, atol=0)
    bench.time_call(saved, *params)


def test_a_speedup_loads_its_dense_twin_too(in_cache_dir, monkeypatch):
    saved = common.prepare_models()
    common.MODELS.clear()
    monkeypatch.setattr(workloads, "build_model", lambda *a, **k: pytest.fail("the dense model was rebuilt"))
    bench = bench_block.BlockPrefillSpeedup()
    bench.setup(saved, CASE.preset, CASE.seqlen, CASE.batch, CASE.ratio, CASE.criterion)
    assert bench.dense.info["d_states"] != bench.pruned.info["d_states"]


def test_a_missing_dependency_in_setup_cache_skips_the_benchmarks(in_cache_dir):
    with pytest.raises(NotImplementedError, match="need perfmamba.pruning"):
        bench_model.ModelDecodeCache().setup({"missing": "pruned cases need perfmamba.pruning"}, "mamba1-tiny", 64,
                                             64, 0.5, "contribution")


def test_the_probe_runs_a_case_of_every_kind_in_a_forked_child():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "benchmarks/asv_probe.py", "--fork", "--timeout-s", "120"], cwd=root,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    for kind in ("OpDecode", "OpPrefill", "BlockPrefill", "ModelPrefill", "ModelDecode"):
        assert f"] {kind}(" in out.stdout
    assert "forked child: done" in out.stdout
    assert not list(root.glob("model-*")), "the probe's setup_cache wrote into the checkout"
