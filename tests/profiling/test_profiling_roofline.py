import pytest

from perfmamba.profiling.costs import Cost
from perfmamba.profiling.roofline import DevicePeaks, measure_peaks, roofline_point

PEAKS = DevicePeaks(device="cuda", name="test", dtype="bfloat16", matmul_flops_per_s=800e12,
                    copy_bytes_per_s=3e12, matmul_size=8192, copy_bytes=1 << 30)


def test_ridge():
    assert PEAKS.ridge_intensity == pytest.approx(800 / 3)


def test_memory_bound_component():
    # 1 GFLOP over 1 GB (intensity 1): attainable 3 TFLOP/s; in 1 ms it achieved 1 TFLOP/s
    p = roofline_point(Cost(1e9, 1e9), 1e-3, PEAKS)
    assert p.bound == "memory"
    assert p.intensity == 1.0
    assert p.attainable_flops_per_s == pytest.approx(3e12)
    assert p.achieved_bytes_per_s == pytest.approx(1e12)
    assert p.fraction == pytest.approx(1 / 3)


def test_compute_bound_component():
    p = roofline_point(Cost(400e9, 1e8), 1e-3, PEAKS)
    assert p.bound == "compute"
    assert p.attainable_flops_per_s == 800e12
    assert p.fraction == pytest.approx(0.5)


def test_bytes_only_component_is_judged_by_bandwidth():
    p = roofline_point(Cost(0, 3e9), 2e-3, PEAKS)
    assert p.fraction == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seconds must be > 0, got 0"):
        roofline_point(Cost(1, 1), 0, PEAKS)


def test_measure_peaks_on_cpu_is_measured_once():
    a = measure_peaks("cpu", matmul_size=128, copy_bytes=1 << 20, rounds=2)
    b = measure_peaks("cpu", matmul_size=128, copy_bytes=1 << 20, rounds=2)
    assert a is b
    assert a.matmul_flops_per_s > 1e8 and a.copy_bytes_per_s > 1e8
    assert (a.device, a.dtype, a.matmul_size) == ("cpu", "float32", 128)
