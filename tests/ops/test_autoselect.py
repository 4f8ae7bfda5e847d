"""Backend "fastest" (perfmamba.ops.autoselect): measured once per shape, cached, then dispatched to; with fake
candidates and a fake timer, so that the rule itself is what is tested."""

from __future__ import annotations

import warnings

import pytest
import torch

from perfmamba.ops import autoselect, registry
from perfmamba.ops.autoselect import Fastest, device_seconds
from perfmamba.timing import Samples

OP = "autoselect_test_op"


@pytest.fixture
def candidates():
    """Three backends of a fake op that adds 1, 2 or 3 to its first argument in place; `calls` logs each call."""
    calls: list[str] = []

    def backend(name: str, amount: int):
        def fn(state, x, *, scale=1.0):
            calls.append(name)
            state.add_(amount)
            return x * scale + amount

        return fn

    for name, amount in (("slow", 1), ("quick", 2), ("broken", 3)):
        registry.register(OP, name, backend(name, amount),
                          availability=(lambda: "not here") if name == "broken" else None)
    yield calls
    registry._OPS.pop(OP, None)


def charging(log: list[str], seconds: dict[str, float]):
    """A fake timer: calls the candidate once and charges the time listed for the backend it ran."""
    def timer(fn, device, reps):
        fn()
        return seconds[log[-1]]

    return timer


def test_times_each_available_candidate_once_per_shape_and_caches_the_winner(candidates):
    fastest = Fastest(OP, ("slow", "broken", "quick"), mutated=(0,),
                      timer=charging(candidates, {"slow": 2.0, "quick": 1.0}))
    state, x = torch.zeros(3), torch.ones(3)
    out = fastest(state, x, scale=2.0)
    assert [name for name, _ in fastest.choices.values()] == ["quick"]
    assert torch.equal(out, x * 2 + 2)
    # the timing runs wrote to clones: the real state was updated once, by the winner
    assert torch.equal(state, torch.full((3,), 2.0))
    assert candidates == ["slow", "quick", "quick"]
    fastest(state, x, scale=2.0)  # same key: dispatched, not timed again
    assert candidates[3:] == ["quick"]
    fastest(state, x, scale=3.0)  # another argument value: a new key
    fastest(torch.zeros(5), torch.ones(5), scale=2.0)  # another shape: a new key
    assert len(fastest.choices) == 3 and len(candidates) == 10


def test_ties_keep_the_first_candidate(candidates):
    fastest = Fastest(OP, ("slow", "quick"), mutated=(0,), timer=lambda fn, device, reps: (fn(), 1.0)[1])
    fastest(torch.zeros(2), torch.ones(2))
    assert list(fastest.choices.values())[0][0] == "slow"


def test_no_runnable_candidate_is_an_error(candidates):
    fastest = Fastest(OP, ("broken",), timer=lambda fn, device, reps: 0.0)
    assert "broken: not here" in fastest.available()
    with pytest.raises(registry.BackendUnavailableError, match="no candidate of 'fastest'"):
        fastest(torch.zeros(2), torch.ones(2))


def test_capture_without_a_cached_choice_runs_the_first_candidate_and_warns(candidates, monkeypatch):
    import perfmamba.ops.autoselect as autoselect

    monkeypatch.setattr(autoselect, "_capturing", lambda: True)
    fastest = Fastest(OP, ("slow", "quick"), timer=lambda fn, device, reps: pytest.fail("timed during capture"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastest(torch.zeros(2), torch.ones(2))
        fastest(torch.zeros(2), torch.ones(2))
    assert [str(w.message) for w in caught if "CUDA-graph capture" in str(w.message)] and len(caught) == 1
    assert candidates == ["slow", "slow"] and not fastest.choices


def test_device_seconds_times_reps_after_a_warm_up():
    calls = []
    assert device_seconds(lambda: calls.append(1), torch.device("cpu"), 4) >= 0.0
    assert len(calls) == 5


def test_candidates_are_timed_by_perfmamba_timing_not_around_an_eager_launch(candidates, monkeypatch):
    """The default timer is `time_fn` (graph replay, L2 flushed, on a GPU) with its defaults: an eager launch
    measured the host's wrapper (125-180 us) around a ~40 us kernel, and chose by that."""
    seen = []

    def fake_time_fn(fn, device, *, rounds, warmup, **options):
        seen.append((rounds, warmup, options))
        fn()
        return Samples((3.0, 1.0, 2.0) if len(seen) == 1 else (0.5,), "cuda_graph", "flushed", calls=8)

    monkeypatch.setattr(autoselect, "time_fn", fake_time_fn)
    fastest = Fastest(OP, ("slow", "quick"), mutated=(0,), reps=3)
    fastest(torch.zeros(2), torch.ones(2))
    assert seen == [(3, 1, {}), (3, 1, {})]  # graph and L2 flush left at time_fn's defaults
    assert list(fastest.timings.values()) == [{"slow": 2.0, "quick": 0.5}]  # medians of the samples
    assert list(fastest.choices.values())[0][0] == "quick"


def test_state_update_has_a_fastest_backend():
    assert "fastest" in registry._op("selective_state_update").impls
