import time

import pytest

from perfmamba.models.components import span, tracing
from perfmamba.profiling.timers import SpanTimer, combine


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
