"""Kernel attribution from profiler traces: kernel classes, the innermost range, GEMMs told apart by their
shapes, the device side of a range not counted twice, and graph replays split by the capture's span markers."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from perfmamba.models import get_preset
from perfmamba.models.components import span
from perfmamba.profiling.kernels import (
    L2_FLUSH,
    classify_kernel,
    fused_gemm_order,
    gemm_key,
    kernel_attribution,
    profile_runs,
    split_by_markers,
    split_fused,
)
from perfmamba.profiling.measure import gemm_names
from perfmamba.profiling.timers import RANGE_PREFIX


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


def _event(name, parent=None, kernels=(), self_us=0.0, shapes=None):
    return SimpleNamespace(
        name=name, cpu_parent=parent, is_async=False, device_type=torch.autograd.DeviceType.CPU,
        kernels=[SimpleNamespace(name=k, duration=d) for k, d in kernels], self_cpu_time_total=self_us,
        input_shapes=shapes,
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


def test_gemm_key_reads_mm_and_addmm_shapes():
    assert gemm_key([[4096, 1536], [1536, 80]]) == (80, 1536, 4096)
    assert gemm_key([[768], [4096, 1536], [1536, 768], [], []]) == (768, 1536, 4096)  # addmm: bias first
    assert gemm_key([[4096, 1536], [80, 1536]]) is None  # inner dimensions disagree: not a product
    assert gemm_key([[4096]]) is None and gemm_key(None) is None


def test_fused_gemms_are_named_by_their_shapes_and_a_ranges_own_device_span_is_not_a_kernel():
    def trace(runs, shapes=True):
        fused = _event(RANGE_PREFIX + "mixer_fused", kernels=[(RANGE_PREFIX + "mixer_fused", 1000.0)])
        mm = lambda dims, us: _event("aten::mm", parent=fused, kernels=[("nvjet_tst", us)],  # noqa: E731
                                     shapes=dims if shapes else None)
        # in_proj; x_proj (few FLOPs, and its time all the same); a product of no known shape
        return [e for _ in range(runs) for e in (fused, mm([[64, 8], [8, 32]], 40.0), mm([[64, 16], [16, 4]], 30.0),
                                                  mm([[64, 3], [3, 5]], 10.0))]

    order = fused_gemm_order(trace(1), {(8, 32, 64): "in_proj", (4, 16, 64): "x_proj"})
    assert order == ["in_proj", "x_proj", ""]
    a = kernel_attribution(trace(2, shapes=False), runs=2, device_time=True, gemm_order=order)
    assert a.components == pytest.approx({"mixer_fused/gemm:in_proj": 40e-6, "mixer_fused/gemm:x_proj": 30e-6,
                                          "mixer_fused/gemm": 10e-6})
    assert a.busy == pytest.approx(80e-6)  # the range's own 1000 us span is not counted
    split = split_fused(a.components, {"in_proj": 3.0, "x_proj": 1.0})
    assert split == pytest.approx({"in_proj": 47.5e-6, "x_proj": 32.5e-6})
    # an order that does not fit the trace (another number of GEMMs) names nothing
    b = kernel_attribution(trace(2, shapes=False), runs=2, device_time=True, gemm_order=order[:2])
    assert b.components == pytest.approx({"mixer_fused/gemm": 80e-6})


def test_gemm_names_cover_every_projection_and_drop_shared_shapes():
    config = get_preset("mamba1-130m")
    names = gemm_names(config, tokens=4096)
    r, N = config.resolved_dt_rank, config.d_state
    assert names == {
        tuple(sorted((4096, 768, 3072))): "in_proj", tuple(sorted((4096, 1536, r + 2 * N))): "x_proj",
        tuple(sorted((4096, r, 1536))): "x_proj", tuple(sorted((4096, 1536, 768))): "out_proj",
    }
    # x_proj's width dt_rank + 2N = 4 + 60 equals d_model: x_proj and out_proj share a shape, neither is named
    clash = dataclasses.replace(get_preset("mamba1-tiny"), d_model=64, d_state=30, dt_rank=None)
    assert sorted(gemm_names(clash, tokens=100).values()) == ["in_proj", "x_proj"]  # in_proj, and dt_proj's


def test_marked_replays_attribute_kernels_to_the_innermost_open_span():
    marks = [("enter", L2_FLUSH), ("exit", L2_FLUSH), ("enter", "in_proj"), ("exit", "in_proj"),
             ("enter", "mixer"), ("enter", "ssm_scan"), ("exit", "ssm_scan"), ("exit", "mixer")]
    m = ("at::cuda::(anonymous namespace)::spin_kernel(long)", 1.0)
    replay = [m, ("amax", 9.0), m, m, ("gemm", 4.0), m, m, ("cast", 0.5), m, ("triton_update", 2.0), m,
              ("gemm", 1.0), m, ("add", 0.25)]
    a = split_by_markers(marks, replay + [(n, 2 * us) for n, us in replay], runs=2)
    # self time: the cast and the last gemm ran inside "mixer" but outside "ssm_scan"; the add outside every span
    assert a.components == pytest.approx({"in_proj": 6e-6, "mixer": 2.25e-6, "ssm_scan": 3e-6})
    assert a.samples["ssm_scan"] == pytest.approx([2e-6, 4e-6])
    assert a.other == pytest.approx(0.375e-6) and a.kernels == 6  # the markers left out
    assert a.busy == pytest.approx(6e-6 + 2.25e-6 + 3e-6 + 0.375e-6)


def test_replays_whose_markers_differ_from_the_capture_are_refused():
    marks = [("enter", "in_proj"), ("exit", "in_proj")]
    with pytest.raises(RuntimeError, match="1 span markers in 1 replays, the capture placed 2 per call"):
        split_by_markers(marks, [("spin_kernel", 1.0), ("gemm", 4.0)], runs=1)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        split_by_markers(marks, [], runs=0)
