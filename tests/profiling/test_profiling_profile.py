import dataclasses
import math
import time

import pytest
import torch
from profiling_configs import QUICK, TINY

from perfmamba.models import build_model
from perfmamba.profiling import ProfileConfig, fit_scaling, measure, merge_results, profile, sweep
from perfmamba.profiling.analysis import KERNEL_OVERLAP, device_time, kernels_overlap, power_law
from perfmamba.profiling.costs import cache_bytes_per_sequence, components_of
from perfmamba.profiling.measure import is_out_of_memory
from perfmamba.profiling.result import ComponentStats, PointResult

GEMMS = ("in_proj", "x_proj", "out_proj", "lm_head")


def test_every_point_finishes_with_every_component(tiny_profile):
    result = tiny_profile
    config = build_model(TINY[result.model.version], device="meta").config
    assert [p.status for p in result.points] == ["ok"] * 6
    assert [(p.mode, p.seqlen) for p in result.points] == [(m, L) for m in ("prefill", "decode") for L in (32, 64, 128)]
    for p in result.points:
        assert [c.name for c in p.components] == [*components_of(config), "other"]
        assert sum(c.share for c in p.components) == pytest.approx(1.0)
        assert p.time_s > 0 and len(p.samples_s) >= QUICK.rounds
        assert all(len(c.samples_s) == len(p.samples_s) for c in p.components)
        assert p.peak_bytes > 0 and p.memory_method == "live_tensors"
        assert p.flops == pytest.approx(sum(c.flops for c in p.components))
        for c in p.components:
            if c.name in GEMMS:
                assert c.roofline_fraction > 0 and c.bound in ("compute", "memory")
    for p in result.points:
        if p.mode == "decode":
            assert p.ttft_s > 0 and len(p.ttft_samples_s) == QUICK.rounds
            assert p.cache_bytes_per_sequence == p.cache_bytes_per_sequence_model == cache_bytes_per_sequence(
                config, "float32")
            assert p.tokens_per_s == pytest.approx(1 / p.time_s)
        else:
            assert p.tokens_per_s == pytest.approx(p.seqlen / p.time_s)
    assert result.peaks is not None and result.peaks.device == "cpu"
    assert result.model.backends["rms_norm"] == "reference"


def test_flop_counter_check_at_the_first_point_of_each_series(tiny_profile):
    for p in tiny_profile.points:
        first = p.seqlen == 32
        for c in p.components:
            if c.name in GEMMS:
                assert (c.counted_flops == c.matmul_flops) if first else (c.counted_flops is None)


def test_component_times_sum_to_end_to_end_time(monkeypatch):
    """The issue's check: the components (named spans, without "other") account for the end-to-end time
    within 10%, on a CPU at a length where the work is real.

    The clocks read the thread's CPU time instead of the wall clock: on one torch thread all the work runs on
    the calling thread, so the check is the same, but immune to other processes taking the cores (on a shared
    2-core machine at load 8 the wall-clock ratio swung between 0.75 and 1.3; the CPU-time one stayed within
    0.97-1.0)."""
    monkeypatch.setattr(time, "perf_counter", time.thread_time)
    config = dataclasses.replace(QUICK, seqlens=(256,), modes=("prefill",), rounds=10, memory=False,
                                 count_flops=False, roofline=False)
    point = profile(TINY[1], config).points[0]
    assert point.status == "ok"
    named = sum(c.time_s for c in point.components if c.name != "other")
    assert 0.9 <= point.coverage <= 1.1, point.coverage  # paired, round by round
    assert 0.9 <= named / point.time_s <= 1.1, (named, point.time_s)  # of the medians
    assert point.component("ssm_scan").share > 0.5  # the reference scan's loop dominates a CPU forward


def test_scaling_fits_exist_per_series_and_component(tiny_profile):
    fits = {(f.mode, f.component): f for f in tiny_profile.fits}
    for mode in ("prefill", "decode"):
        for name in ("total", "ssm_scan", "in_proj", "other"):
            assert fits[(mode, name)].seqlens == [32, 64, 128] and math.isfinite(fits[(mode, name)].k)


def test_prefill_scales_with_length_and_decode_does_not(monkeypatch):
    monkeypatch.setattr(time, "perf_counter", time.thread_time)  # see test_component_times_sum_to_end_to_end_time
    config = dataclasses.replace(QUICK, seqlens=(64, 256, 1024), memory=False, count_flops=False, roofline=False)
    fits = {(f.mode, f.component): f.k for f in profile(TINY[1], config).fits}
    assert 0.6 < fits[("prefill", "ssm_scan")] < 1.3  # a linear-time scan (plus a per-call floor at short L)
    assert abs(fits[("decode", "ssm_scan")]) < 0.25  # one step against a fixed-size state, whatever the prompt


def test_power_law_recovers_the_exponent():
    L = [64, 128, 256, 512, 1024]
    k, r2 = power_law(L, [3e-6 * x**1.5 for x in L])
    assert k == pytest.approx(1.5) and r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two distinct lengths"):
        power_law([64, 64], [1.0, 2.0])


def test_fit_scaling_tail_uses_the_longer_half():
    points = []
    for L in (64, 128, 256, 512, 1024, 2048):
        t = 1e-3 if L <= 256 else 1e-3 * (L / 256)  # flat (launch-bound), then linear
        points.append(PointResult(path="unfused", mode="prefill", batch=1, seqlen=L, status="ok", time_s=t))
    (fit,) = fit_scaling(points)
    assert fit.component == "total" and fit.k_tail == pytest.approx(1.0) and 0 < fit.k < 1


def _gpu_point(L: int, wall: float, scan_span: float, scan_kernels: float, busy_fraction: float,
               graph: float | None = None) -> PointResult:
    scan = ComponentStats("ssm_scan", time_s=scan_span, busy_s=scan_kernels)
    return PointResult(path="unfused", mode="prefill", batch=1, seqlen=L, status="ok", time_s=wall,
                       graph_time_s=graph, busy_fraction=busy_fraction, launch_bound=busy_fraction < 0.7,
                       components=[scan])


def test_device_time_is_the_kernels_time_unless_their_records_overlap():
    launch_bound = _gpu_point(64, wall=20e-3, scan_span=5e-3, scan_kernels=0.2e-3, busy_fraction=0.1)
    overlapping = _gpu_point(64, wall=0.5, scan_span=0.2, scan_kernels=0.35, busy_fraction=KERNEL_OVERLAP + 0.5)
    assert device_time(launch_bound, launch_bound.components[0]) == 0.2e-3  # spans there are CPU launch time
    assert not kernels_overlap(launch_bound) and kernels_overlap(overlapping)
    assert device_time(overlapping, overlapping.components[0]) == 0.2  # summed kernel records exceed the wall
    cpu = PointResult(path="unfused", mode="prefill", batch=1, seqlen=64, status="ok", time_s=1.0,
                      components=[ComponentStats("ssm_scan", time_s=0.4, busy_s=0.3)])
    assert device_time(cpu, cpu.components[0]) == 0.4  # on a CPU busy_s is operator time: the spans are kept


def test_fit_scaling_fits_device_time_in_a_launch_bound_series():
    # The wall time is the CPU's (flat in L); the scan's kernels and the graph replay grow linearly.
    points = [_gpu_point(L, wall=20e-3, scan_span=5e-3, scan_kernels=1e-6 * L, busy_fraction=0.05 * L / 64,
                         graph=2e-6 * L) for L in (64, 128, 256, 512)]
    fits = {f.component: f for f in fit_scaling(points)}
    assert fits["ssm_scan"].k == pytest.approx(1.0) and fits["total"].k == pytest.approx(1.0)


def test_out_of_memory_is_reported_and_ends_the_series(monkeypatch):
    real_run = measure.PointMeasurement.run

    def run(self):
        if self.result.seqlen >= 64 and self.result.mode == "prefill":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run(self)

    monkeypatch.setattr(measure.PointMeasurement, "run", run)
    config = dataclasses.replace(QUICK, memory=False, count_flops=False, roofline=False)
    result = profile(TINY[1], config)
    status = {(p.mode, p.seqlen): p.status for p in result.points}
    assert status == {("prefill", 32): "ok", ("prefill", 64): "oom", ("prefill", 128): "skipped",
                      ("decode", 32): "ok", ("decode", 64): "ok", ("decode", 128): "ok"}
    oom = result.point(mode="prefill", seqlen=64)
    assert "out of memory" in oom.message and oom.time_s is None and oom.components == []
    assert "out of memory at L=64" in result.point(mode="prefill", seqlen=128).message


def test_other_errors_are_recorded_and_the_sweep_goes_on(monkeypatch):
    real_run = measure.PointMeasurement.run

    def run(self):
        if self.result.seqlen == 64:
            raise ValueError("bad kernel")
        return real_run(self)

    monkeypatch.setattr(measure.PointMeasurement, "run", run)
    config = dataclasses.replace(QUICK, modes=("prefill",), memory=False, count_flops=False, roofline=False)
    result = profile(TINY[2], config)
    assert [p.status for p in result.points] == ["ok", "error", "ok"]
    assert result.points[1].message == "ValueError: bad kernel"


def test_time_budget_skips_points_cleanly():
    config = dataclasses.replace(QUICK, modes=("prefill",), seqlens=(32, 16384), memory=False, count_flops=False,
                                 roofline=False, budget_s=3.0)
    result = profile(TINY[1], config)
    assert [p.status for p in result.points] == ["ok", "skipped"]
    assert "time budget" in result.points[1].message


def test_fused_path_is_skipped_on_cpu():
    config = dataclasses.replace(QUICK, seqlens=(32,), paths=("fused",), memory=False, count_flops=False,
                                 roofline=False)
    result = profile(TINY[1], config)
    assert {p.status for p in result.points} == {"skipped"}
    assert "needs CUDA" in result.points[0].message


def test_resume_takes_over_finished_points_and_reports_progress(monkeypatch):
    config = dataclasses.replace(QUICK, modes=("prefill",), memory=False, count_flops=False, roofline=False)
    first = profile(TINY[1], dataclasses.replace(config, seqlens=(32,)), name="m")
    seen = []
    result = profile(TINY[1], config, name="m", resume=first, on_point=lambda r: seen.append(
        [p.status for p in r.points]))
    assert result.points[0] is first.points[0]  # taken over, not measured again
    assert [p.status for p in result.points] == ["ok", "ok", "ok"]
    assert seen == [["ok", "ok", "pending"], ["ok", "ok", "ok"]]
    with pytest.raises(ValueError, match="another model"):
        profile(TINY[2], config, resume=first)


def test_merge_results_unions_points_and_refits():
    config = dataclasses.replace(QUICK, modes=("prefill",), memory=False, count_flops=False, roofline=False)
    a = profile(TINY[1], dataclasses.replace(config, seqlens=(32,)), name="m")
    b = profile(TINY[1], dataclasses.replace(config, seqlens=(64, 128)), name="m")
    merged = merge_results([a, b])
    assert [p.seqlen for p in merged.points] == [32, 64, 128]
    assert merged.config.seqlens == (32, 64, 128)
    assert any(f.component == "total" and f.seqlens == [32, 64, 128] for f in merged.fits)
    other = profile(TINY[2], dataclasses.replace(config, seqlens=(32,)), name="other")
    with pytest.raises(ValueError, match="different models"):
        merge_results([a, other])


def test_a_model_object_keeps_its_settings_and_must_match_the_config():
    model = build_model(TINY[1])
    model.configure(path="unfused", backend="reference")
    config = dataclasses.replace(QUICK, seqlens=(16,), modes=("prefill",), memory=False, count_flops=False,
                                 roofline=False, backend="auto")
    result = profile(model, config, name="mine")
    assert result.model.name == "mine" and result.points[0].status == "ok"
    assert all(m.backend == "reference" for m in model.mixers)  # restored
    with pytest.raises(ValueError, match="float32.*bfloat16"):
        profile(model, config, dtype="bfloat16")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seqlens", (0, 64), "seqlens must be"), ("batch_sizes", (), "batch_sizes must be"),
    ("modes", ("train",), "modes must be among"), ("paths", ("fast",), "paths must be among"),
    ("dtype", "float64", "dtype must be one of"), ("rounds", 0, "rounds must be >= 1, got 0"),
    ("budget_s", -1.0, "budget_s must be > 0, got -1.0"), ("device", "mps", "device must be 'cpu' or 'cuda"),
    ("launch_bound_threshold", 1.5, r"launch_bound_threshold must be in \(0, 1\], got 1.5"),
])
def test_config_errors_name_the_bad_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        ProfileConfig(**{field: value})


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 1099511627776 bytes"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_resolved_defaults_on_cpu():
    cfg = ProfileConfig(device="cpu").resolved()
    assert cfg.seqlens == (64, 128, 256, 512, 1024) and cfg.dtype == "float32"
    assert (cfg.rounds, cfg.warmup, cfg.kernel_attribution) == (5, 1, False)
    assert math.isclose(cfg.launch_bound_threshold, 0.7)


def test_profile_leaves_the_callers_floating_point_mode_alone():
    """`profile` flushes subnormals while it measures (as the benchmarks do) and restores the mode afterwards:
    a library call must not change how the rest of the caller's process rounds (hypothesis, for one, refuses
    to draw floats once subnormals are flushed)."""
    from perfmamba.timing import subnormals_flushed

    assert not subnormals_flushed()
    profile(TINY[1], QUICK, seqlens=(16,), modes=("prefill",))
    assert not subnormals_flushed()


def test_the_plan_has_no_fused_decode_points():
    cfg = ProfileConfig(paths=("unfused", "fused"), modes=("prefill", "decode"), seqlens=(64, 128), batch_sizes=(1,))
    keys = {(p.path, p.mode) for p in sweep.plan_points(cfg)}
    assert keys == {("unfused", "prefill"), ("unfused", "decode"), ("fused", "prefill")}


def test_decode_timing_is_graph_or_eager():
    assert ProfileConfig().decode_timing == "graph"
    with pytest.raises(ValueError, match="decode_timing must be one of \\('graph', 'eager'\\), got 'replay'"):
        ProfileConfig(decode_timing="replay")
