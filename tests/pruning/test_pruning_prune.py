"""prune_states end to end: pruned and unpruned models agree where they must."""

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prune_strategies import TINY, VOCAB, allocations, criteria, model_and_tokens, ratios, seeds, tiny_configs, tokens
from test_pruning_criteria import zero_row

from perfmamba.models import build_model, load_model
from perfmamba.pruning import (
    CRITERIA,
    PruneConfig,
    allocate,
    apply,
    calibrate,
    criteria_for,
    prune_states,
    save_pruned,
)
from perfmamba.pruning.calibration import NoSSMLayersError

HYPO = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def logits(model, ids):
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
@pytest.mark.parametrize("mode", ["remove", "mask"])
def test_ratio_zero_is_bit_identical(version, allocation, mode):
    model, ids = model_and_tokens(TINY[version], seed=0)
    want = logits(model, ids)
    for criterion in criteria_for(version):
        pruned, report = prune_states(model, 0.0, ids, criterion, allocation, mode, progress=False)
        assert pruned is not model
        assert torch.equal(logits(pruned, ids), want), criterion
        assert report.d_state_after == report.d_state_before and report.params_after == report.params_before


@HYPO
@given(st.data(), tiny_configs(), ratios, allocations, seeds)
def test_mask_and_remove_agree(data, config, ratio, allocation, seed):
    criterion = data.draw(criteria(config.version))
    model, ids = model_and_tokens(config, seed)
    stats = calibrate(model, ids, progress=False)
    try:
        removed, report = prune_states(model, ratio, ids, criterion, allocation, "remove", stats=stats, seed=seed)
    except ValueError as e:  # ratios that would leave a layer without states are refused, by name
        assert "states" in str(e) and "ratio" in str(e)
        event("refused: no state left")
        return
    masked, mreport = prune_states(model, ratio, ids, criterion, allocation, "mask", stats=stats, seed=seed)
    assert [layer.kept for layer in report.layers] == [layer.kept for layer in mreport.layers]
    assert removed.config.d_states == tuple(report.d_state_after)
    assert masked.config == model.config
    torch.testing.assert_close(logits(removed, ids), logits(masked, ids), rtol=1e-5, atol=1e-5)
    for mixer, layer in zip(removed.mixers, report.layers):
        assert mixer.d_state == layer.d_state_after == len(layer.kept[0])


@pytest.mark.parametrize("which", ["B", "C"])
def test_criteria_find_and_remove_a_state_with_zero_row(which):
    """Mamba-1: contribution ranks a state with a zero B or C row last; pruning one state removes exactly it
    and leaves the logits as they were."""
    model, ids = model_and_tokens(TINY[1], seed=4)
    zero_row(model, layer=0, group=0, state=5, which=which)
    want = logits(model, ids)
    N = model.mixers[0].d_state
    pruned, report = prune_states(model, 1 / N, ids, "contribution", "uniform", progress=False)
    assert report.d_state_after == [N - 1, N - 1]
    assert 5 not in report.layers[0].kept[0] and len(report.layers[0].kept[0]) == N - 1
    assert report.layers[0].kept[0] == sorted(report.layers[0].kept[0])
    # layer 1 lost a real state, so compare against the dense model with only layer 1's cut applied
    only_layer1 = apply(_copy(model), [torch.arange(N)[None], torch.tensor(report.layers[1].kept)], "remove")
    torch.testing.assert_close(logits(pruned, ids), logits(only_layer1, ids), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(logits(only_layer1, ids), want, rtol=1e-5, atol=1e-6)


def _copy(model):
    import copy

    return copy.deepcopy(model)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("which", ["B", "C"])
def test_zero_state_removed_by_surgery_leaves_logits(version, which):
    """Remove exactly the zeroed state (in every group, for Mamba-2) and nothing else: logits unchanged."""
    model, ids = model_and_tokens(TINY[version], seed=6)
    G = TINY[version].ngroups if version == 2 else 1
    for g in range(G):
        zero_row(model, layer=1, group=g, state=2, which=which)
    want = logits(model, ids)
    kept = [torch.arange(m.d_state).repeat(G, 1) for m in model.mixers]
    kept[1] = torch.tensor([[n for n in range(model.mixers[1].d_state) if n != 2]] * G)
    pruned = apply(_copy(model), kept, "remove")
    assert pruned.mixers[1].d_state == model.mixers[1].d_state - 1
    torch.testing.assert_close(logits(pruned, ids), want, rtol=1e-5, atol=1e-6)


@HYPO
@given(tiny_configs(), ratios, allocations, seeds, st.integers(1, 6))
def test_pruned_model_decodes_like_its_parallel_forward(config, ratio, allocation, seed, prompt):
    model, ids = model_and_tokens(config, seed)
    try:
        pruned, _ = prune_states(model, ratio, ids, "contribution", allocation, progress=False)
    except ValueError:
        event("refused: no state left")
        return
    ids = tokens(seed + 1, batch=2, length=prompt + 5)
    with torch.no_grad():
        full = pruned(ids)
        cache = pruned.allocate_cache(2)
        steps = [pruned(ids[:, :prompt], cache=cache)]
        steps += [pruned.step(ids[:, t], cache).unsqueeze(1) for t in range(prompt, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("safetensors", [False, True])
def test_save_load_round_trip(tmp_path, version, safetensors):
    model, ids = model_and_tokens(TINY[version], seed=8)
    pruned, report = prune_states(model, 0.4, ids, "gramian", "global", progress=False)
    assert len(set(report.d_state_after)) > 1 or version == 2, "global allocation should differ per layer here"
    out = save_pruned(pruned, report, tmp_path / "pruned", heatmap=False, safetensors=safetensors)
    loaded = load_model(out)
    assert loaded.config == pruned.config
    assert torch.equal(logits(loaded, ids), logits(pruned, ids))
    assert (out / "prune_report.json").is_file()


def test_uniform_prune_writes_a_plain_checkpoint(tmp_path):
    import json

    model, ids = model_and_tokens(TINY[2], seed=9)
    pruned, report = prune_states(model, 0.5, ids, progress=False)
    save_pruned(pruned, report, tmp_path, heatmap=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ssm_cfg"]["d_state"] == 8 and pruned.config.layer_d_state is None and pruned.config.d_state == 8


def test_caller_model_is_untouched_unless_inplace():
    model, ids = model_and_tokens(TINY[1], seed=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, _ = prune_states(model, 0.5, ids, mode="mask", progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    same, _ = prune_states(model, 0.5, ids, inplace=True, progress=False)
    assert same is model and model.mixers[0].d_state == 4 and model.config.d_state == 4


def test_config_object_and_overrides():
    model, ids = model_and_tokens(TINY[2], seed=11)
    cfg = PruneConfig(ratio=0.5, criterion="energy", allocation="global", multiple=4, min_states=4)
    _, report = prune_states(model, calibration=ids, config=cfg, progress=False)
    assert (report.criterion, report.allocation, report.multiple, report.min_states) == ("energy", "global", 4, 4)
    assert all(n % 4 == 0 and n >= 4 for n in report.d_state_after)
    _, report = prune_states(model, 0.25, ids, config=cfg, criterion="random", seed=3, progress=False)
    assert (report.ratio, report.criterion, report.seed) == (0.25, "random", 3)


def test_user_errors_are_named():
    model, ids = model_and_tokens(TINY[1], seed=12)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got 1.0"):
        prune_states(model, 1.0, ids)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got -0.5"):
        prune_states(model, -0.5, ids)
    with pytest.raises(ValueError, match="unknown criterion 'magic'; choose one of: " + ", ".join(CRITERIA)):
        prune_states(model, 0.5, ids, "magic")
    with pytest.raises(NoSSMLayersError, match="Sequential has no SSM layers"):
        prune_states(torch.nn.Sequential(torch.nn.Linear(3, 3)), 0.5, ids)
    with pytest.raises(ValueError, match=r"layer 0: ratio 0.95 keeps floor\(8 \* \(1 - 0.95\)\) = 0 states"):
        prune_states(model, 0.95, ids, progress=False)
    with pytest.raises(ValueError, match="needs calibration tokens"):
        prune_states(model, 0.5, None, "contribution")
    with pytest.raises(TypeError, match="needs a ratio"):
        prune_states(model, calibration=ids)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bogus'\]"):
        prune_states(model, 0.5, ids, bogus=1)
    with pytest.raises(ValueError, match="criterion 'A' is not defined for Mamba-2"):
        prune_states(build_model(TINY[2]), 0.5, ids, "A")
    with pytest.raises(ValueError, match="calibrated on a model with d_state"):
        prune_states(model, 0.5, ids, stats=calibrate(build_model(TINY[1].replace(d_state=4)), ids))
    pruned, _ = prune_states(model, 0.5, None, "random", progress=False)  # data-free criteria need no tokens
    assert pruned.mixers[0].d_state == 4


def test_apply_checks_kept_indices():
    model = build_model(TINY[2])
    N = model.mixers[0].d_state
    good = [torch.arange(N).repeat(2, 1) for _ in model.mixers]
    with pytest.raises(ValueError, match="kept indices for 1 layers, but the model has 2"):
        apply(model, good[:1])
    with pytest.raises(ValueError, match=r"layer 0: kept indices must be \(ngroups=2, k\)"):
        apply(model, [torch.arange(N)[None]] + good[1:])
    with pytest.raises(ValueError, match="strictly increasing"):
        apply(model, [torch.tensor([[1, 0], [0, 1]])] + good[1:])
    with pytest.raises(ValueError, match=r"must be in \[0, 16\)"):
        apply(model, [torch.tensor([[0, 16], [0, 1]])] + good[1:])
    with pytest.raises(ValueError, match="at least one state"):
        apply(model, [torch.zeros(2, 0, dtype=torch.long)] + good[1:])
    with pytest.raises(ValueError, match="mode must be one of"):
        apply(model, good, "drop")


def test_groups_may_keep_different_states():
    """Mamba-2 with two groups: each group's B/C rows are sliced with its own indices; mask agrees."""
    model, ids = model_and_tokens(TINY[2], seed=13)
    kept = allocate([torch.tensor([[5.0, 4, 3, 2, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
                                   [0.0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 5, 4, 3, 2, 1]])] * 2, 0.5)
    assert kept[0][0].tolist() != kept[0][1].tolist()
    removed = apply(_copy(model), kept, "remove")
    masked = apply(_copy(model), kept, "mask")
    torch.testing.assert_close(logits(removed, ids), logits(masked, ids), rtol=1e-5, atol=1e-6)
    assert removed.mixers[0].conv1d.weight.shape[0] == removed.mixers[0].d_inner + 2 * 2 * 8
    assert removed.mixers[0].in_proj.out_features == 2 * 32 + 2 * 2 * 8 + removed.mixers[0].nheads
    assert VOCAB == 40


def test_pow2_rounding_keeps_mamba2_sizes_legal():
    """"pow2" rounds down, but never below the fused kernel's legal multiple: ngroups * N' % 4 == 0."""
    from perfmamba.models import build_model
    from perfmamba.models.config import ModelConfig

    cfg = ModelConfig(version=2, d_model=32, n_layer=2, vocab_size=64, pad_vocab_size_multiple=16, d_state=16,
                      headdim=16, ngroups=1, chunk_size=8)
    _, report = prune_states(build_model(cfg), 0.85, None, "weight", multiple="pow2", progress=False)
    assert report.d_state_after == [4, 4]
