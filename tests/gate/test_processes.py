"""The process as the statistical unit: each side ran in several processes, each with its own offset (clocks,
memory placement, launch path) on top of the spread of its rounds. A test over rounds calls such offsets
"significant"; the gate must not, and must still flag a real shift beyond the threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from gate_synthetic import binomial_bound, draw, measurement
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmamba.gate import GateConfig, compare
from perfmamba.gate.compare import judge
from perfmamba.gate.measurement import Measurement
from perfmamba.gate.processes import moderation_prior, process_test
from perfmamba.gate.runs import load_side, merge_runs, split_specs
from perfmamba.results import ResultsFileError, write_json

ROUNDS, WITHIN = 30, 0.003


def _processes(rng, offsets, factor=1.0, name="op/scan"):
    """One Measurement per process: rounds with WITHIN relative spread around exp(offset) x factor."""
    return [measurement(name, draw(rng, ROUNDS, WITHIN, "lognormal", factor * math.exp(o))) for o in offsets]


def _side(runs):
    return merge_runs([{m.name: m} for m in runs])


def test_between_process_offsets_are_not_a_regression_but_fooled_the_round_level_rule():
    rng = np.random.default_rng(0)
    # A/A: the same code, each process off by up to 2.5% (as eager GPU timings are between processes)
    base = _processes(rng, [0.0, 0.012, -0.009])
    new = _processes(rng, [0.025, 0.004, -0.006])
    config = GateConfig(default_threshold=0.01)
    # the old behaviour: one process against one process, rounds as the samples: "regressed"
    assert judge(base[0], new[0], 0.01, config).verdict == "regressed"
    # the process as the unit: the offsets are spread between processes, not a change
    row = compare({"op/scan": _side(base)["op/scan"]}, {"op/scan": _side(new)["op/scan"]}, config).rows[0]
    assert row.method == "processes" and row.verdict in ("unchanged", "inconclusive")
    assert (row.processes_base, row.processes_new) == (3, 3) and "3 + 3 processes" in row.note


def test_a_real_shift_beyond_the_threshold_is_flagged_across_processes():
    rng = np.random.default_rng(1)
    offsets = [0.0, 0.004, -0.003]
    base = _side(_processes(rng, offsets))
    slower = _side(_processes(rng, [-0.002, 0.003, 0.001], factor=1.05))
    row = compare(base, slower, GateConfig(default_threshold=0.01)).rows[0]
    assert row.verdict == "regressed" and row.method == "processes"
    assert 1.04 < row.ratio < 1.06 and row.ci_low > 1.01
    faster = _side(_processes(rng, [0.001, -0.001, 0.002], factor=0.95))
    assert compare(base, faster, GateConfig(default_threshold=0.01)).rows[0].verdict == "improved"


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), between=st.floats(0.001, 0.03), processes=st.integers(3, 6))
def test_aa_false_alarms_stay_below_alpha_whatever_the_spread_between_processes(seed, between, processes):
    # Threshold 0: any significant difference is a false alarm; each direction may alarm <= alpha / 2.
    rng = np.random.default_rng(seed)
    alpha, trials = 0.05, 200
    config = GateConfig(default_threshold=0.0, alpha=alpha, correction="none")
    flagged = 0
    for _ in range(trials):
        base = _side(_processes(rng, rng.normal(0, between, processes)))
        new = _side(_processes(rng, rng.normal(0, between, processes)))
        flagged += compare(base, new, config).rows[0].verdict == "regressed"
    assert flagged < binomial_bound(trials, alpha / 2)


def test_one_process_a_side_still_answers_and_says_the_spread_is_unknown():
    rng = np.random.default_rng(2)
    base, new = _processes(rng, [0.0]), _processes(rng, [0.0], factor=1.2)
    f = judge(base[0], new[0], 0.01, GateConfig())
    assert f.verdict == "regressed" and f.method == "bootstrap+rank"
    assert "one process a side: the spread between processes is unknown" in f.note


def test_one_process_against_several_borrows_their_spread():
    rng = np.random.default_rng(3)
    test = process_test([m.samples for m in _processes(rng, [0.0, 0.01, -0.01])],
                        [_processes(rng, [0.0], factor=1.003)[0].samples], 0.01)
    assert test.n_base == 3 and test.n_new == 1 and test.df == 2
    assert test.ci[0] < 1.0 < test.ci[1]
    assert process_test([(1.0, 1.1)], [(1.2,)], 0.01) is None  # one process a side: unknown spread


def test_merge_runs_keeps_each_process_and_checks_they_measure_alike():
    a = Measurement(name="x", unit="s", median=1.0, samples=(1.0, 1.0, 1.1), clock="cuda_graph")
    b = Measurement(name="x", unit="s", median=4.0, samples=(4.0, 4.0), clock="cuda_graph")
    merged = merge_runs([{"x": a}, {"x": b}])["x"]
    assert merged.groups == ((1.0, 1.0, 1.1), (4.0, 4.0)) and merged.processes == 2
    assert merged.median == pytest.approx(2.0)  # the geometric mean of the processes' medians
    with pytest.raises(ResultsFileError, match="clock 'cuda_graph' in run 1 but 'cuda_event' in run 2"):
        merge_runs([{"x": a}, {"x": Measurement(name="x", unit="s", median=1.0, samples=(1.0,),
                                                clock="cuda_event")}])
    with pytest.raises(ResultsFileError, match="unit 's' in run 1 but 'bytes' in run 2"):
        merge_runs([{"x": a}, {"x": Measurement(name="x", unit="bytes", median=1.0, samples=(1.0,))}])


def _run_file(path, samples, commit):
    write_json(path, {"environment": {"git_commit": commit},
                      "benchmarks": [{"name": "op/scan", "samples": list(samples)}]}, kind="benchmark")
    return str(path)


def test_load_side_reads_comma_separated_runs_of_one_commit(tmp_path):
    runs = [_run_file(tmp_path / f"r{i}.json", [1.0 + i / 100] * 5, "abc123") for i in range(3)]
    assert split_specs(",".join(runs)) == runs
    side = load_side(",".join(runs))
    assert side["op/scan"].processes == 3
    other = _run_file(tmp_path / "other.json", [1.0] * 5, "def456")
    with pytest.raises(ResultsFileError, match="runs of one side come from different commits"):
        load_side([*runs, other])


def test_clocks_must_match_and_host_timed_samples_get_their_own_threshold():
    graph = measurement("t", np.full(10, 1e-3) * np.linspace(1, 1.01, 10))
    graph = Measurement(**{**graph.__dict__, "clock": "cuda_graph"})
    eager = Measurement(**{**graph.__dict__, "clock": "cuda_event", "samples": tuple(2 * v for v in graph.samples),
                           "median": 2 * graph.median})
    c = compare({"t": graph}, {"t": eager})
    assert c.rows == () and c.skipped == (("t", "timed with clock 'cuda_graph' in BASE and 'cuda_event' in NEW"),)
    c = compare({"t": eager}, {"t": eager})
    assert c.rows[0].verdict == "not assessed" and "host-timed" in c.rows[0].note
    slower = Measurement(**{**eager.__dict__, "samples": tuple(1.5 * v for v in eager.samples),
                            "median": 1.5 * eager.median})
    row = compare({"t": eager}, {"t": slower}, GateConfig(host_timed_threshold=0.25)).rows[0]
    assert row.verdict == "regressed" and row.threshold == 0.25 and "own threshold" in row.note
    assert json.loads(compare({"t": eager}, {"t": slower}).to_json())["rows"][0]["clock"] == "cuda_event"


def _family(rng, count, spread, shifted=None, factor=1.0, spreads=None):
    base, new = {}, {}
    for i in range(count):
        s = spreads[i] if spreads is not None else spread
        name = f"case{i}"
        base[name] = _side(_processes(rng, rng.normal(0, s, 3), name=name))[name]
        f = factor if i == shifted else 1.0
        new[name] = _side(_processes(rng, rng.normal(0, s, 3), factor=f, name=name))[name]
    return base, new


def test_moderation_gives_three_processes_the_power_the_family_shares():
    # The H200 study's situation: ~100 benchmarks, 3 processes a side, ~0.8% spread between processes, one kernel
    # 8% slower. Alone, a t-test with 4 df cannot pass Holm over the family; moderated, it does.
    rng = np.random.default_rng(1)
    base, new = _family(rng, 100, 0.008, shifted=0, factor=1.08)
    plain = compare(base, new, GateConfig(default_threshold=0.01, moderate=False))
    moderated = compare(base, new, GateConfig(default_threshold=0.01))
    assert {r.name: r for r in plain.rows}["case0"].verdict == "inconclusive"
    row = {r.name: r for r in moderated.rows}["case0"]
    assert row.verdict == "regressed" and "moderated over the benchmarks" in row.note
    assert [r.name for r in moderated.regressions] == ["case0"]


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.floats(0.002, 0.05))
def test_moderated_aa_families_alarm_at_most_at_alpha(seed, wide):
    # Families whose benchmarks spread differently (a tenth of them `wide`, the rest 0.3%), threshold 0, no
    # correction: each benchmark may alarm on identical code with probability <= alpha / 2.
    rng = np.random.default_rng(seed)
    alpha, families, count = 0.05, 20, 30
    config = GateConfig(default_threshold=0.0, alpha=alpha, correction="none")
    spreads = [wide if i % 10 == 0 else 0.003 for i in range(count)]
    flagged = sum(len(compare(*_family(rng, count, 0, spreads=spreads), config).regressions) for _ in range(families))
    assert flagged < binomial_bound(families * count, alpha / 2)


def test_the_prior_follows_the_trend_in_time_so_quiet_benchmarks_get_a_quiet_prior():
    # Fast ops spread ~3% between processes, slow forwards ~0.3% (as on the H200): one flat prior would
    # give the forwards a prior 100x too wide in variance; the trend in log time separates them.
    rng = np.random.default_rng(5)
    times = np.r_[np.full(20, math.log(2e-5)), np.full(20, math.log(3e-2))]
    spread = np.where(times < -8, 0.03, 0.003)
    variances = spread**2 * rng.chisquare(4, 40) / 4
    d0, s0 = moderation_prior(variances, [4] * 40, times)
    assert d0 > 10
    assert np.sqrt(s0[0]) == pytest.approx(0.03, rel=0.3) and np.sqrt(s0[-1]) == pytest.approx(0.003, rel=0.3)
    flat_d0, flat_s0 = moderation_prior(variances, [4] * 40)
    assert flat_d0 < 2 and np.ptp(flat_s0) == 0
