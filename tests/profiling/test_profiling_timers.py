import time
from types import SimpleNamespace

import pytest
import torch

from perfmamba.models.components import span, tracing
from perfmamba.profiling.timers import (
    RANGE_PREFIX,
    SpanTimer,
    classify_kernel,
    combine,
    kernel_attribution,
    profile_runs,
    split_fused,
)


def test_span_timer_records_self_time_per_run():
    timer = SpanTimer("cpu")
    for _ in range(2):
        with timer.run():
            with span("outer"):
                time.sleep(0.02)
                with span("inner"):
                    time.sleep(0.03)
            with span("inner"):
                time.sleep(0.01)
    runs = timer.times()
    assert len(runs) == 2
    for run in runs:
        assert set(run) == {"outer", "inner"}
        # sleeps only ever overrun: lower bounds are exact, upper ones allow a loaded machine some slack
        assert 0.04 <= run["inner"] < 0.04 + 0.05
        assert 0.02 <= run["outer"] < 0.02 + 0.05  # the nested inner span is not counted twice
    assert timer.times() == runs  # reading again returns the same numbers


def test_span_timer_outside_a_run_is_an_error():
    timer = SpanTimer("cpu")
    with pytest.raises(RuntimeError, match=r"timer.run\(\)"), tracing(timer), span("x"):
        pass


def test_combine_enters_every_tracer():
    seen = []

    def tracer(tag):
        import contextlib

        @contextlib.contextmanager
        def t(name):
            seen.append((tag, "enter", name))
            yield
            seen.append((tag, "exit", name))
        return t

    with tracing(combine(tracer("a"), tracer("b"))), span("norm"):
        pass
    assert seen == [("a", "enter", "norm"), ("b", "enter", "norm"), ("b", "exit", "norm"), ("a", "exit", "norm")]


@pytest.mark.parametrize(("name", "label"), [
    ("void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<32, 16, 1, true, true, true>>", "ssm_scan"),
    ("_chunk_scan_fwd_kernel", "ssm_scan"), ("_chunk_state_fwd_kernel", "ssm_scan"),
    ("_state_passing_fwd_kernel", "ssm_scan"), ("_bmm_chunk_fwd_kernel", "ssm_scan"),
    ("void causal_conv1d_fwd_kernel<Causal_conv1d_fwd_kernel_traits<128, 4, true, c10::BFloat16>>", "conv1d"),
    ("_layer_norm_fwd_1pass_kernel", "gated_norm"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", "gemm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", None),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", "copies"),
    ("Memcpy DtoD (Device -> Device)", "copies"),
])
def test_classify_kernel(name, label):
    assert classify_kernel(name) == label


def test_classify_kernel_falls_back_to_the_launching_op():
    cast = "void at::native::vectorized_elementwise_kernel<4, at::native::bfloat16_copy_kernel_cuda>"
    assert classify_kernel(cast, "aten::_to_copy") == "copies"
    add = "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>"
    assert classify_kernel(add, "aten::_to_copy") == "copies"
    assert classify_kernel(add, "aten::add") is None
    # the kernel's own name wins over its op: a GEMM launched through aten::to is still a GEMM
    assert classify_kernel("nvjet_tst_128x256", "aten::to") == "gemm"


def _event(name, parent=None, kernels=(), self_us=0.0):
    return SimpleNamespace(
        name=name, cpu_parent=parent, is_async=False, device_type=torch.autograd.DeviceType.CPU,
        kernels=[SimpleNamespace(name=k, duration=d) for k, d in kernels], self_cpu_time_total=self_us,
    )


def test_kernel_attribution_maps_kernels_to_the_innermost_range():
    conv = _event(RANGE_PREFIX + "conv1d")
    fused = _event(RANGE_PREFIX + "mixer_fused")
    events = [
        conv,
        _event("aten::conv1d", parent=_event("aten::x", parent=conv), kernels=[("conv_depthwise2d", 30.0)]),
        fused,
        _event("aten::mm", parent=fused, kernels=[("nvjet_tst_128x256", 100.0)]),
        _event(RANGE_PREFIX + "ssm_scan", parent=fused, kernels=[("unrelated_name", 5.0)]),
        _event("SelectiveScanFn", parent=fused, kernels=[("selective_scan_fwd_kernel", 200.0),
                                                         ("vectorized_elementwise_kernel", 10.0)]),
        _event("aten::clone", parent=fused, kernels=[("elementwise_kernel", 8.0)]),
        _event("aten::add", kernels=[("vectorized_elementwise_kernel", 20.0)]),  # outside every span
    ]
    a = kernel_attribution(events, runs=2, device_time=True)
    assert a.unit == "device"
    assert a.components == pytest.approx({
        "conv1d": 15e-6, "ssm_scan": 2.5e-6, "mixer_fused/gemm": 50e-6, "mixer_fused/ssm_scan": 100e-6,
        "mixer_fused/other": 5e-6, "mixer_fused/copies": 4e-6,
    })
    assert a.unclassified == pytest.approx({"SelectiveScanFn: vectorized_elementwise_kernel": 5e-6})
    assert a.other == pytest.approx(10e-6)
    assert a.busy == pytest.approx((30 + 100 + 5 + 200 + 10 + 8 + 20) / 2 * 1e-6)
    assert a.kernels == 3.5

    split = split_fused(a.components, {"in_proj": 3.0, "out_proj": 1.0})
    assert split == pytest.approx({"conv1d": 15e-6, "ssm_scan": 102.5e-6, "in_proj": 37.5e-6,
                                   "out_proj": 12.5e-6, "mixer_fused": 5e-6, "copies": 4e-6})


def test_kernel_attribution_needs_runs():
    with pytest.raises(ValueError, match="runs must be >= 1, got 0"):
        kernel_attribution([], runs=0, device_time=True)


def test_profile_runs_on_cpu_attributes_operator_time():
    a = torch.randn(256, 256)

    def fn():
        with span("in_proj"):
            for _ in range(4):
                a @ a
        with span("norm"):
            torch.relu(a)

    with torch.inference_mode():
        attribution = profile_runs(fn, torch.device("cpu"), runs=2)
    assert attribution.unit == "cpu"
    assert set(attribution.components) == {"in_proj", "norm"}
    assert attribution.components["in_proj"] > attribution.components["norm"] > 0
    assert attribution.busy >= sum(attribution.components.values())
