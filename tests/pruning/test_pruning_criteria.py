"""Criteria: the documented formulas, zero scores for states that cannot matter, and the baselines."""

import pytest
import torch
from prune_strategies import TINY, model_and_tokens

from perfmamba.pruning import CRITERIA, calibrate, criteria_for, score
from perfmamba.pruning.layout import state_channels, state_rows


def zero_row(model, layer: int, group: int, state: int, which: str) -> None:
    """Make B_n (or C_n) of one state identically zero: its projection row, and for Mamba-2 the conv channel's
    weight and bias (the conv output is silu(bias) != 0 otherwise)."""
    mixer = model.mixers[layer]
    proj, b_rows, c_rows = state_rows(mixer)
    rows = b_rows if which == "B" else c_rows
    with torch.no_grad():
        proj.weight[rows[group, state]] = 0
        channels = state_channels(mixer)
        if channels is not None:
            ch = channels[0 if which == "B" else 1][group, state]
            mixer.conv1d.weight[ch] = 0
            mixer.conv1d.bias[ch] = 0


@pytest.mark.parametrize("version", [1, 2])
def test_formulas_from_statistics(version):
    model, ids = model_and_tokens(TINY[version], seed=1)
    stats = calibrate(model, ids, progress=False)
    s = stats.layers[0]
    T, P, upg = s.tokens, s.per_unit, s.units_per_group

    def group_mean(x):
        return x.reshape(s.ngroups, upg, -1).mean(1)

    expected = {
        "energy": group_mean(s.h2 / (T * P)),
        "contribution": group_mean(s.ch2 / (T * P)),
        "gramian": group_mean(torch.sqrt(
            (s.h2 / (T * P)) * (s.C2 / T).repeat_interleave(upg, 0) / (1 - s.decay2 / T))),
        "weight": s.B_weight * s.C_weight,
        "delta": group_mean((s.delta / T)[:, None] * s.A_abs) if version == 1 else group_mean(s.delta_absB / T),
    }
    if version == 1:
        expected["A"] = 1 / s.A_abs.mean(0, keepdim=True)
    for name, want in expected.items():
        got = score(stats, name)[0]
        assert got.shape == (s.ngroups, s.d_state), name
        torch.testing.assert_close(got, want, rtol=1e-9, atol=0, msg=name)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("which", ["B", "C"])
def test_state_with_zero_row_scores_zero(version, which):
    model, ids = model_and_tokens(TINY[version], seed=2)
    group = TINY[version].ngroups - 1 if version == 2 else 0
    zero_row(model, layer=1, group=group, state=3, which=which)
    stats = calibrate(model, ids, progress=False)
    zero = ["contribution", "gramian", "weight"] + (["energy"] if which == "B" else [])
    zero += ["delta"] if which == "B" and version == 2 else []
    for name in zero:
        s = score(stats, name)[1]
        assert s[group, 3] == 0, f"{name}: {s[group]}"
        assert (s[group, [n for n in range(s.shape[1]) if n != 3]] > 0).all(), name
    if which == "C":  # a state read by nothing still fills up: energy sees it, contribution does not
        assert score(stats, "energy")[1][group, 3] > 0


def test_random_is_seeded_and_A_is_mamba1_only():
    model, ids = model_and_tokens(TINY[2], seed=0)
    stats = calibrate(model, None)
    a, b, c = score(stats, "random", seed=1), score(stats, "random", seed=1), score(stats, "random", seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="'A' is not defined for Mamba-2: .*Mamba-2's A is one scalar per head"):
        score(stats, "A")
    assert "A" not in criteria_for(2) and set(criteria_for(1)) == set(CRITERIA)
    with pytest.raises(ValueError, match="needs calibration data"):
        score(stats, "contribution")
    with pytest.raises(ValueError, match="unknown criterion 'hessian'; choose one of: delta, energy"):
        score(stats, "hessian")


def test_A_criterion_prefers_slow_states():
    model, _ = model_and_tokens(TINY[1], seed=0)  # S4D-real init: |A_n| = n + 1
    s = score(calibrate(model, None), "A")[0][0]
    assert torch.equal(torch.argsort(s, descending=True), torch.arange(s.numel()))


def test_a_criterion_is_one_over_the_mean_decay_across_channels():
    """`A` scores 1 / mean_u |A_un|: a state with one very slow channel among fast ones is still a fast state
    (a mean of 1/|A| would rank it first)."""
    model, _ = model_and_tokens(TINY[1], seed=0)
    mixer = model.mixers[0]
    d = mixer.A_log.shape[0]
    A = torch.full((d, 2), 5.0)
    A[:, 0] = 10.0
    A[0, 0] = 0.01  # state 0: mean |A| ~ 10, but one channel decays slowly
    with torch.no_grad():
        mixer.A_log.copy_(torch.cat([A, torch.full((d, mixer.A_log.shape[1] - 2), 5.0)], 1).log())
    got = score(calibrate(model, None), "A")[0][0, :2]
    torch.testing.assert_close(got, 1 / A.double().mean(0), rtol=1e-6, atol=0)
    assert got[1] > got[0]
