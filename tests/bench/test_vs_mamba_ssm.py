"""The vs_mamba_ssm benchmark level on a CPU: its cases in the grids, its threshold, the suite's plumbing (with a
stand-in for mamba-ssm's model, which needs CUDA), the asv classes, and the reference module's refusals."""

import os
import time

import pytest
import torch

from perfmamba.bench import reference_model
from perfmamba.bench.cases import GRIDS, REFERENCE_LEVEL, Case
from perfmamba.bench.suite import check_result, run_case
from perfmamba.bench.thresholds import ThresholdError, load_thresholds
from perfmamba.bench.workloads import ModelCache, Workload, model_inputs
from perfmamba.models import build_model
from perfmamba.timing import Samples, subnormals_flushed

QUICK_CASE = Case("mamba1-tiny", REFERENCE_LEVEL, "prefill", 256, 8)


def test_the_gpu_grid_holds_issue_15s_points_and_the_full_grid_the_large_shapes():
    gpu = {(c.preset, c.mode, c.seqlen, c.batch, c.ratio, c.dtype) for c in GRIDS["gpu"].cases(level=REFERENCE_LEVEL)}
    assert gpu == {(p, m, L, b, 0.0, "bf16") for p in ("mamba1-130m", "mamba2-130m")
                   for m, L, b in (("prefill", 8192, 8), ("decode", 512, 64))}
    full = {c.preset for c in GRIDS["full"].cases(level=REFERENCE_LEVEL)}
    assert {"mamba1-1.4b", "mamba2-1.3b"} <= full
    assert Case("mamba1-130m", REFERENCE_LEVEL, "decode", 512, 64, dtype="bf16").id == (
        "mamba1-130m-vs_mamba_ssm-decode-L512-b64-r0-none-bf16")
    # the other levels keep their own axes: no reference point leaks into them
    assert not [c for c in GRIDS["gpu"].cases(level="model") if c.seqlen == 8192 and c.batch == 8]


def test_grid_rejects_malformed_reference_points():
    from perfmamba.bench.cases import Grid

    with pytest.raises(ValueError, match=r"reference point mode must be one of \('prefill', 'decode'\), got 'x'"):
        Grid("bad", ("mamba1-tiny",), (64,), (64,), (1,), (1,), (0.0,), ("energy",), reference_points=(("x", 1, 1),))
    with pytest.raises(ValueError, match=r"is \(mode, seqlen, batch\), got \('prefill', 8\)"):
        Grid("bad", ("mamba1-tiny",), (64,), (64,), (1,), (1,), (0.0,), ("energy",),
             reference_points=(("prefill", 8),))


@pytest.mark.parametrize("cls", ["h100", "h200"])
def test_gpu_classes_assert_ours_over_mamba_ssm_on_every_gpu_grid_case(cls):
    t = load_thresholds(cls)
    cases = GRIDS["gpu"].cases(level=REFERENCE_LEVEL) + GRIDS["full"].cases(level=REFERENCE_LEVEL)
    assert cases and all(t.rule("vs_mamba_ssm", c).bound == 1.02 for c in cases)
    assert not any(t.rule("vs_mamba_ssm", c) for c in GRIDS["gpu"].cases(level="model"))


def test_the_cpu_class_asserts_nothing_against_mamba_ssm():
    assert not any(load_thresholds("cpu").rule("vs_mamba_ssm", c) for c in GRIDS["quick"].cases())


def _stand_in(fn):
    def reference_workload(case, device, models, seed=0):
        return Workload(case, fn, device, {"logits_rel_error": 0.0})

    return reference_workload


def test_run_case_times_ours_against_the_reference_and_asserts_the_ratio(cpu_bench, monkeypatch):
    models = ModelCache()
    monkeypatch.setattr(reference_model, "reference_workload", _stand_in(lambda: time.sleep(0.3)))
    result = run_case(QUICK_CASE, cpu_bench, models=models, rounds=3, warmup=1)
    extra = result.extra_info
    assert 0 < extra["time_over_mamba_ssm"] < 0.9  # ours (~10-50 ms) against a 300 ms stand-in
    assert extra["mamba_ssm_median_s"] >= 0.3 and len(extra["mamba_ssm_samples_s"]) == 3
    assert extra["mamba_ssm_logits_rel_error"] == 0.0
    assert "vs_mamba_ssm" in check_result(result, load_thresholds("h200"))
    assert "vs_mamba_ssm" not in check_result(result, load_thresholds("cpu"))

    monkeypatch.setattr(reference_model, "reference_workload", _stand_in(lambda: None))
    slow = run_case(QUICK_CASE, cpu_bench, models=models, rounds=3, warmup=1)
    assert slow.extra_info["time_over_mamba_ssm"] > 2
    with pytest.raises(ThresholdError, match=r"vs_mamba_ssm .* is above the maximum threshold 1\.02"):
        check_result(slow, load_thresholds("h200"))


def test_a_ratio_across_clocks_is_refused():
    graph, eager = Samples((1e-3,), "cuda_graph"), Samples((2e-3,), "cuda_event", note="not capturable")
    assert reference_model.ours_over_mamba_ssm(graph, Samples((2e-3,), "cuda_graph"), "x") == 0.5
    with pytest.raises(RuntimeError, match=r"case-x: our model was timed by cuda_graph .* cuda_event \(not capturable"):
        reference_model.ours_over_mamba_ssm(graph, eager, "case-x")


def test_reference_needs_cuda_and_one_d_state():
    assert "runs on CUDA only; the device is cpu" in reference_model.unavailable_reason("cpu")
    with pytest.raises(RuntimeError, match="CUDA only"):
        reference_model.reference_workload(QUICK_CASE, torch.device("cpu"), ModelCache())
    cfg = build_model("mamba1-tiny").config
    uneven = build_model(cfg.replace(layer_d_state=(16,) + (8,) * (cfg.n_layer - 1)))
    with pytest.raises(ValueError, match=r"per-layer d_state \[8, 16\] \(prune with allocation='uniform'"):
        reference_model.mamba_ssm_model(uneven)


def test_both_sides_draw_the_same_tokens():
    decode = Case("mamba2-tiny", REFERENCE_LEVEL, "decode", 64, 4)
    prompt, token = model_inputs(decode, 256, torch.device("cpu"))
    again = model_inputs(decode, 256, torch.device("cpu"))
    assert prompt.shape == (4, 64) and token.shape == (4,)
    assert torch.equal(prompt, again[0]) and torch.equal(token, again[1])
    # a prefill case of the same shape sees the decode case's prompt: one stream of draws per seed
    (ids,) = model_inputs(Case("mamba2-tiny", REFERENCE_LEVEL, "prefill", 64, 4), 256, torch.device("cpu"))
    assert torch.equal(ids, prompt)


def test_asv_classes_span_the_level_and_skip_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setenv("PERFMAMBA_GRID", "quick")
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK", "1"))
    # the classes' setup configures the process as a benchmark's (threads, subnormals): put both back afterwards
    threads, flushed = torch.get_num_threads(), subnormals_flushed()
    import benchmarks.asv.bench_vs_mamba_ssm as bench
    from benchmarks.asv import common

    if common.GRID.name != "quick":
        pytest.skip(f"the suite was imported earlier with grid {common.GRID.name!r}")
    try:
        assert bench.VsMambaSsmPrefill.params == [["mamba1-tiny", "mamba2-tiny"], [256], [8], [0.0], ["none"]]
        assert bench.VsMambaSsmDecode.params == [["mamba1-tiny", "mamba2-tiny"], [64], [64], [0.0], ["none"]]
        monkeypatch.setattr(common, "device", lambda: torch.device("cpu"))
        with pytest.raises(NotImplementedError, match="CUDA only"):
            bench.VsMambaSsmPrefill().setup(str(tmp_path), "mamba1-tiny", 256, 8, 0.0, "none")
        with pytest.raises(NotImplementedError, match="not a case of grid 'quick'"):
            bench.VsMambaSsmDecode().setup(str(tmp_path), "mamba1-tiny", 256, 64, 0.0, "none")
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushed)


def test_mamba_ssm_generate_picks_from_the_real_vocabulary():
    """mamba-ssm's greedy picks range over the padded vocabulary unless `generate` is told its size; ours never
    pick a padding id. A stand-in records what the reference passes and returns prompt + new tokens."""
    calls = []

    class Theirs:
        config = type("Config", (), {"vocab_size": 1000})()

        def generate(self, input_ids, max_length, **kwargs):
            calls.append((max_length, kwargs))
            new = torch.arange(max_length - input_ids.shape[1]).expand(input_ids.shape[0], -1)
            return torch.cat([input_ids, new], dim=1)

    prompt = torch.full((2, 5), 7)
    tokens = reference_model.mamba_ssm_generate(Theirs(), prompt, 3, cg=True)
    assert torch.equal(tokens, torch.arange(3).expand(2, -1))
    assert calls == [(8, {"cg": True, "top_k": 1, "vocab_size": 1000})]
