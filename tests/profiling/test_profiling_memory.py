import pytest
import torch
from profiling_configs import TINY

from perfmamba.models import build_model
from perfmamba.models.components import span, tracing
from perfmamba.profiling.memory import LiveTensorTracker, MemorySpans, measure_memory, tensor_bytes


def test_tracker_counts_new_storages_once_and_forgets_dead_ones():
    with LiveTensorTracker() as tracker:
        a = torch.empty(1000)  # 4000 bytes
        assert tracker.current() == 4000
        v = a.view(10, 100)[2:]  # a view: no new storage
        a.add_(1)  # in place
        torch.add(a, 1, out=a)  # out= aliasing an input
        assert tracker.current() == 4000
        b = a * 2  # a new one
        assert tracker.current() == 8000
        del a
        assert tracker.current() == 8000  # the view keeps a's storage alive
        del v
        assert tracker.current() == 4000
        del b
        assert tracker.current() == 0
        assert tracker.peak() == 8000
        assert tracker.allocated_total() == 8000
        tracker.reset_peak()
        assert tracker.peak() == 0


def test_memory_spans_peak_allocated_retained_with_nesting():
    with LiveTensorTracker() as tracker:
        spans = MemorySpans(tracker)
        with tracing(spans):
            with span("outer"):
                kept = torch.empty(100)  # 400 bytes, kept
                with span("inner"):
                    tmp = torch.empty(1000)  # 4000 bytes, freed
                    del tmp
                big = torch.empty(250)  # 1000 bytes, freed
                del big
        peak = spans.finish()
    assert spans.components["inner"].peak_bytes == 4000
    assert spans.components["inner"].retained_bytes == 0
    assert spans.components["inner"].allocated_bytes == 4000
    assert spans.components["outer"].peak_bytes == 4400  # the inner span's peak is folded into the outer one
    assert spans.components["outer"].allocated_bytes == 5400
    assert spans.components["outer"].retained_bytes == 400
    assert peak == 4400
    del kept


@pytest.mark.parametrize("version", [1, 2])
def test_model_memory_is_deterministic_and_consistent(version):
    model = build_model(TINY[version]).eval()
    ids = torch.randint(0, 64, (2, 48))
    with torch.inference_mode():
        first = measure_memory(lambda: model(ids), "cpu")
        second = measure_memory(lambda: model(ids), "cpu")
    assert first == second
    assert first.method == "live_tensors"
    logits = 2 * 48 * TINY[version].padded_vocab_size * 4
    # the logits are alive at the end of the forward; nothing outlives the call
    assert first.peak_bytes >= logits
    assert first.components["lm_head"].retained_bytes == logits
    assert max(c.peak_bytes for c in first.components.values()) <= first.peak_bytes
    # cumulative allocations exceed the peak: the paper's "memory" column summed these
    assert first.allocated_bytes > first.peak_bytes


def test_tensor_bytes_counts_tied_weights_once():
    model = build_model(TINY[1])
    params = list(model.parameters())
    expected = sum(p.numel() * p.element_size() for p in params)  # parameters() already dedups the tied head
    assert tensor_bytes(params + [model.lm_head.weight]) == expected
