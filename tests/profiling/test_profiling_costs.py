import dataclasses

import pytest
import torch
from profiling_configs import TINY

from perfmamba.models import ModelConfig, build_model
from perfmamba.models.config import PRESETS
from perfmamba.profiling.costs import (
    Cost,
    cache_bytes_per_sequence,
    component_costs,
    components_of,
    flop_counter_by_component,
    itemsize_of,
    layer_costs,
    parameter_count,
)

MATMULS = ("in_proj", "x_proj", "out_proj", "lm_head")
PRUNED = {v: dataclasses.replace(c, layer_d_state=tuple(range(3, 3 + c.n_layer))) for v, c in TINY.items()}


def _counted(config: ModelConfig, mode: str, seqlen: int, batch: int) -> dict[str, float]:
    model = build_model(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch, seqlen))
    with torch.inference_mode():
        if mode == "prefill":
            return flop_counter_by_component(lambda: model(ids))
        cache = model.allocate_cache(batch)
        model(ids, cache=cache)
        return flop_counter_by_component(lambda: model.step(ids[:, -1], cache))


@pytest.mark.parametrize("config", [*TINY.values(), *PRUNED.values()], ids=["v1", "v2", "v1-pruned", "v2-pruned"])
@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_matmul_flops_equal_flop_counter(config, mode):
    seqlen, batch = 40, 3
    counted = _counted(config, mode, seqlen, batch)
    costs = component_costs(config, seqlen=seqlen, batch=batch, mode=mode, dtype=torch.float32)
    for name in MATMULS:
        if name in costs:
            assert costs[name].matmul_flops == counted[name] > 0, name
            assert costs[name].flops == costs[name].matmul_flops, name
    # The reference conv pads both sides and drops the tail: flop_counter sees L + d_conv - 1 outputs per channel.
    k = config.d_conv
    scale = 1 if mode == "decode" else (seqlen + k - 1) / seqlen
    assert counted["conv1d"] == pytest.approx(costs["conv1d"].matmul_flops * scale, rel=1e-12)
    assert counted["other"] == 0  # every counted FLOP happens inside a component span


@pytest.mark.parametrize(("preset", "mode"), [
    ("mamba1-130m", "prefill"), ("mamba1-130m", "decode"), ("mamba2-130m", "prefill"), ("mamba2-130m", "decode"),
    ("mamba1-1.4b", "prefill"), ("mamba2-1.3b", "prefill"),
])
def test_matmul_flops_of_published_shapes(preset, mode):
    # The meta device runs the real model code at full size for free: shapes and flop counts, no numbers.
    config = PRESETS[preset]
    model = build_model(config, device="meta").eval()
    L, b = 64, 2
    ids = torch.zeros(b, L, dtype=torch.long, device="meta")
    with torch.inference_mode():
        if mode == "prefill":
            counted = flop_counter_by_component(lambda: model(ids))
        else:
            cache = model.allocate_cache(b)
            counted = flop_counter_by_component(lambda: model.step(ids[:, -1], cache))
    costs = component_costs(config, seqlen=L, batch=b, mode=mode)
    for name in MATMULS:
        if name in costs:
            assert costs[name].matmul_flops == counted[name], name


@pytest.mark.parametrize("config", [*TINY.values(), PRESETS["mamba1-1.4b"], PRESETS["mamba2-1.3b"]],
                         ids=["v1", "v2", "1.4b", "1.3b"])
def test_scan_cost_is_linear_in_length(config):
    # Mamba-2 lengths are whole chunks: the SSD pads to them.
    base = config.chunk_size if config.version == 2 else 100
    costs = [component_costs(config, seqlen=m * base, batch=2)["ssm_scan"] for m in (1, 2, 4, 8)]
    for m, cost in zip((2, 4, 8), costs[1:], strict=True):
        # bytes carry a constant (A, D, dt bias: read once per call, whatever L)
        const = costs[0].bytes - (costs[1].bytes - costs[0].bytes)
        assert cost.flops == pytest.approx(m * costs[0].flops, rel=1e-12)
        assert cost.bytes - const == pytest.approx(m * (costs[0].bytes - const), rel=1e-12)
        per_layer = config.d_inner * (config.d_state + 2) if config.version == 1 else 3 * config.nheads
        assert const == 4 * per_layer * config.n_layer


def test_decode_cost_does_not_depend_on_length():
    config = TINY[1]
    a = component_costs(config, seqlen=16, mode="decode")
    b = component_costs(config, seqlen=4096, mode="decode")
    assert a == b


def test_pruned_states_shrink_the_scan_and_the_cache():
    config = PRESETS["mamba1-130m"]
    half = config.replace(layer_d_state=(8,) * config.n_layer)
    full_cost = component_costs(config, seqlen=1024)["ssm_scan"]
    half_cost = component_costs(half, seqlen=1024)["ssm_scan"]
    assert half_cost.flops < full_cost.flops
    # the 7 FLOPs per (token, channel, state) of the recurrence go with the states
    assert full_cost.flops - half_cost.flops == 7 * 1024 * config.d_inner * 8 * config.n_layer
    assert cache_bytes_per_sequence(half) < cache_bytes_per_sequence(config)


@pytest.mark.parametrize("config", [*TINY.values(), *PRUNED.values()], ids=["v1", "v2", "v1-pruned", "v2-pruned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_match_the_allocated_cache(config, dtype):
    model = build_model(config, device="meta", dtype=dtype)
    cache = model.allocate_cache(3)
    assert sum(c.nbytes for c in cache) == 3 * cache_bytes_per_sequence(config, dtype)


@pytest.mark.parametrize("config", [*TINY.values(), *PRUNED.values(), PRESETS["mamba2-130m"]])
def test_parameter_count(config):
    model = build_model(config, device="meta")
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())


def test_layer_costs_sum_to_the_model_and_honour_per_layer_states():
    config = PRUNED[2]
    costs = component_costs(config, seqlen=64, batch=2)
    layers = [layer_costs(config, i, seqlen=64, batch=2) for i in range(config.n_layer)]
    assert costs["in_proj"] == layers[0]["in_proj"] + layers[1]["in_proj"]
    assert layers[0]["ssm_scan"].flops < layers[1]["ssm_scan"].flops  # layer 1 keeps more states
    assert tuple(costs) == components_of(config)


def test_cost_arithmetic_and_intensity():
    a, b = Cost(10, 4, 6), Cost(2, 1, 0)
    assert a + b == Cost(12, 5, 6)
    assert a.intensity == 2.5
    assert Cost().intensity == 0.0


def test_itemsize_and_errors():
    assert itemsize_of("bfloat16") == 2 == itemsize_of(torch.float16)
    assert itemsize_of(4) == 4
    with pytest.raises(ValueError, match="unknown dtype 'float128x'"):
        itemsize_of("float128x")
    with pytest.raises(ValueError, match=r"mode must be one of \('prefill', 'decode'\), got 'train'"):
        component_costs(TINY[1], seqlen=8, mode="train")
    with pytest.raises(ValueError, match="seqlen=0"):
        component_costs(TINY[1], seqlen=0)
