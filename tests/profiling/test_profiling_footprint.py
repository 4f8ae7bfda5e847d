"""The memory bound of a point, against the live-tensor tracker's measurements, and the refusal built on it."""

import dataclasses
import importlib
import os

import pytest
import torch
from profiling_configs import QUICK, TINY

from perfmamba.models import build_model
from perfmamba.profiling import measure, profile, sweep
from perfmamba.profiling.footprint import (
    MemoryPlanError,
    available_memory,
    check_fits,
    longest_fitting,
    point_footprint,
    weights_bytes,
)
from perfmamba.profiling.memory import measure_memory, tensor_bytes

# Most bound / measured seen for a prefill of the tiny models at L >= 64 (1.0-1.6): a bound that loose still tells a
# sweep that fits from one that does not; one looser would refuse sweeps that fit.
TIGHTNESS = 2.0


def _measure(version: int, mode: str, batch: int, seqlen: int, dtype: torch.dtype):
    """The tracker's MemoryProfile of one call: a prefill, a prefill into a cache, or a decode step."""
    model = build_model(TINY[version], dtype=dtype).eval()
    ids = torch.randint(0, TINY[version].vocab_size, (batch, seqlen), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if mode == "prefill":
            return measure_memory(lambda: model(ids), "cpu")
        cache = model.allocate_cache(batch)
        if mode == "prefill_cache":
            return measure_memory(lambda: model(ids, cache=cache), "cpu")
        model(ids, cache=cache)
        token = ids[:, -1].contiguous()
        return measure_memory(lambda: model.step(token, cache), "cpu")


def _assert_bounds(measured, bound) -> None:
    assert bound.activations >= measured.peak_activation_bytes
    for name, m in measured.components.items():
        assert bound.components[name] >= m.peak_bytes, name


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_prefill_bound_holds_and_is_not_loose(version, dtype):
    # L = 100: longer than the Mamba-1 scan's chunk and not a whole number of Mamba-2 chunks (padding)
    measured = _measure(version, "prefill", 2, 100, dtype)
    bound = point_footprint(TINY[version], mode="prefill", seqlen=100, batch=2, dtype=dtype)
    _assert_bounds(measured, bound)
    assert bound.activations <= TIGHTNESS * measured.peak_activation_bytes
    assert bound.inputs == 2 * 100 * 8  # the token ids


@pytest.mark.parametrize("version", [1, 2])
def test_the_decode_bound_covers_the_prefill_into_the_cache_and_the_step(version):
    bound = point_footprint(TINY[version], mode="decode", seqlen=100, batch=2, dtype=torch.float32)
    prefill = _measure(version, "prefill_cache", 2, 100, torch.float32)
    step = _measure(version, "decode", 2, 100, torch.float32)
    assert bound.activations >= max(prefill.peak_activation_bytes, step.peak_activation_bytes)
    _assert_bounds(step, bound)  # the components listed are the step's
    cache = sum(c.nbytes for c in build_model(TINY[version]).allocate_cache(2))
    assert bound.inputs == 2 * 100 * 8 + cache + 2 * 8


def test_the_bound_follows_the_reference_scans_chunk_and_segment_sizes(monkeypatch):
    """Shorter Mamba-1 chunks and Mamba-2 segments than the defaults (so that L = 100 spans many): the bound reads
    the ops' sizes when it runs and still holds."""
    monkeypatch.setattr(importlib.import_module("perfmamba.ops.selective_scan"), "CHUNK", 16)
    monkeypatch.setattr(importlib.import_module("perfmamba.ops.ssd"), "SEGMENT_ELEMENTS", 1 << 10)
    for version in (1, 2):
        measured = _measure(version, "prefill", 2, 100, torch.float32)
        bound = point_footprint(TINY[version], mode="prefill", seqlen=100, batch=2, dtype=torch.float32)
        _assert_bounds(measured, bound)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_weights_bytes_are_the_models(version, dtype):
    pruned = dataclasses.replace(TINY[version], layer_d_state=(5, 7) if version == 1 else (8, 16))
    model = build_model(pruned, dtype=dtype)
    assert weights_bytes(pruned, dtype) == tensor_bytes([*model.parameters(), *model.buffers()])
    without = point_footprint(pruned, mode="prefill", seqlen=8, dtype=dtype)
    with_weights = point_footprint(pruned, mode="prefill", seqlen=8, dtype=dtype, weights=True)
    assert with_weights.total == without.total + weights_bytes(pruned, dtype)


def test_a_point_that_does_not_fit_is_refused_in_one_line_naming_the_longest_that_fits():
    config = TINY[1]
    budget = point_footprint(config, mode="prefill", seqlen=5000, dtype="float32").total
    longest = longest_fitting(config, mode="prefill", batch=1, dtype="float32", budget=budget)
    assert longest >= 5000
    assert point_footprint(config, mode="prefill", seqlen=longest + 1, dtype="float32").total > budget
    points = [("prefill", 1, 64), ("prefill", 1, 10**6), ("decode", 1, 10**7)]
    with pytest.raises(MemoryPlanError) as e:
        check_fits(config, points, dtype="float32", device="cpu", name="tiny", weights=False, available=budget)
    message = str(e.value)
    assert "\n" not in message and isinstance(e.value, ValueError)
    assert "tiny: prefill batch 1 L=1000000 needs up to" in message
    assert "1 more point does not fit" in message and f"fits is L={longest}" in message
    check_fits(config, points[:1], dtype="float32", device="cpu", name="tiny", weights=False, available=budget)


def test_available_memory_on_this_cpu_is_at_most_its_ram():
    free = available_memory("cpu")
    if free is None:
        pytest.skip("this system reports no available memory")
    assert 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_the_sweep_skips_a_point_that_would_not_fit_and_ends_its_series(monkeypatch):
    """A library sweep never starts a point its bound says does not fit (the CLI refuses before; a caller of
    `profile` gets skipped rows): here as if only 1 MiB were free, which the L=32 prefill fits and L=64 does not."""
    need = {L: point_footprint(TINY[1], mode="prefill", seqlen=L, dtype="float32").total for L in (32, 64)}
    monkeypatch.setattr(sweep, "available_memory", lambda device: (need[32] + need[64]) // 2)
    monkeypatch.setattr(measure.PointMeasurement, "run", lambda self: pytest.fail(f"L={self.result.seqlen} ran"))
    config = dataclasses.replace(QUICK, modes=("prefill",), seqlens=(64, 128), memory=False, count_flops=False,
                                 roofline=False)
    result = profile(TINY[1], config)
    assert [p.status for p in result.points] == ["skipped", "skipped"]
    assert "needs up to" in result.points[0].message and "free on cpu" in result.points[0].message
    assert "L=64 would not fit in memory" in result.points[1].message
