import pytest
import torch

from perfmamba.bench.cases import GRIDS, NO_CRITERION, Case, Grid, get_grid, kept_states
from perfmamba.bench.workloads import ModelCache
from perfmamba.models.config import PRESETS


def test_case_ids_are_stable():
    # Result files, asv history and the gate match runs by these strings: changing them orphans history.
    assert Case("mamba1-tiny").id == "mamba1-tiny-model-prefill-L256-b1-r0-none-fp32"
    assert (Case("mamba2-1.3b", "op", "decode", 512, 64, 0.5, "energy", "bf16").id
            == "mamba2-1.3b-op-decode-L512-b64-r0.5-none-bf16")
    assert Case("mamba1-130m", "block", "prefill", 2048, 8, 0.1, "energy").id == (
        "mamba1-130m-block-prefill-L2048-b8-r0.1-energy-fp32")


def test_dense_and_op_cases_have_no_criterion():
    assert Case("mamba1-tiny", ratio=0.0, criterion="energy").criterion == NO_CRITERION
    assert Case("mamba1-tiny", "op", ratio=0.5, criterion="energy").criterion == NO_CRITERION
    pruned = Case("mamba1-tiny", "model", ratio=0.5, criterion="energy")
    assert pruned.dense() == Case("mamba1-tiny", "model")
    assert pruned.d_state == 8 and pruned.dense().d_state == 16 and pruned.version == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.2}, r"ratio must be in \[0, 1\), got 1.2"),
    ({"ratio": -0.1}, r"ratio must be in \[0, 1\), got -0.1"),
    ({"level": "layer"}, r"level must be one of \('op', 'block', 'model', 'vs_mamba_ssm'\), got 'layer'"),
    ({"level": "vs_mamba_ssm", "ratio": 0.5, "criterion": "energy"}, "compares dense models; got ratio 0.5"),
    ({"mode": "train"}, "mode must be one of"),
    ({"dtype": "fp8"}, "dtype must be one of"),
    ({"seqlen": 0}, "seqlen must be an integer >= 1, got 0"),
    ({"ratio": 0.5}, "needs a criterion"),
    ({"ratio": 0.5, "criterion": "magnitude"}, "unknown criterion 'magnitude'; choose one of: delta, energy"),
])
def test_case_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Case("mamba1-tiny", **kwargs)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'mamba3-tiny'.*mamba1-tiny"):
        Case("mamba3-tiny")


@pytest.mark.parametrize("preset, ratio, kept", [
    ("mamba1-tiny", 0.5, 8), ("mamba1-130m", 0.9, 1), ("mamba2-tiny", 0.5, 16), ("mamba2-130m", 0.3, 92),
    ("mamba2-130m", 0.9, 12), ("mamba2-130m", 0.7, 40),
])
def test_kept_states_follow_pruning(preset, ratio, kept):
    # mamba-ssm's fused Mamba-2 kernel needs d_inner + 2 * N to be a multiple of 8: N a multiple of 4
    assert kept_states(preset, ratio) == Case(preset, ratio=ratio, criterion="energy").d_state == kept


@pytest.mark.parametrize("case", [c for c in GRIDS["quick"].cases(level="model") if c.pruned], ids=str)
def test_pruned_models_have_the_case_shapes(case):
    """Op-level cases run at `case.d_state` states; the pruned models of block/model cases must agree."""
    model = ModelCache().get(case, torch.device("cpu"))
    assert model.config.d_states == (case.d_state,) * model.config.n_layer


# ids are "<name>-grid": tests/conftest.py skips tests with a "gpu" keyword on CPUs, and a bare param id is one
@pytest.mark.parametrize("grid", GRIDS.values(), ids=lambda g: f"{g.name}-grid")
def test_grids_are_well_formed(grid):
    cases = grid.cases()
    assert len(cases) == len(set(cases)) == len({c.id for c in cases})
    assert {c.level for c in cases} == {"op", "block", "model", "vs_mamba_ssm"}
    assert {c.mode for c in cases} == {"prefill", "decode"}
    assert {c.version for c in cases} == {1, 2}
    # every pruned case has its dense twin in the grid: speedups need a baseline
    assert all(c.dense() in cases for c in cases if c.pruned)
    assert all(c in grid for c in cases + grid.quality_cases())
    quality = grid.quality_cases()
    assert {c.criterion for c in quality if c.pruned} == set(grid.criteria)
    assert all(PRESETS[c.preset].vocab_size == 256 for c in quality)  # trained byte-level models


def test_quick_grid_is_small_and_full_grid_spans_the_paper_axes():
    quick, full = GRIDS["quick"], GRIDS["full"]
    assert len(quick.cases()) == 24 + 4 and quick.ratios == (0.0, 0.5) and quick.cpu_threads == 1
    assert all(c.preset.endswith("-tiny") for c in quick.cases())
    assert {"mamba1-130m", "mamba1-1.4b", "mamba2-130m", "mamba2-1.3b"} <= set(full.presets)
    assert min(full.prefill_seqlens) == 512 and max(full.prefill_seqlens) == 16384
    assert full.ratios == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    assert len(full.cases(level="model", mode="prefill")) == 4 * 6 * 2 * 6


def test_grid_selection_by_name_and_environment(monkeypatch):
    monkeypatch.setenv("PERFMAMBA_GRID", "full")
    assert get_grid().name == "full" and get_grid("quick").name == "quick"
    monkeypatch.setenv("PERFMAMBA_GRID", "huge")
    with pytest.raises(ValueError, match="unknown benchmark grid 'huge'; choose one of: quick, gpu, full"):
        get_grid()
    monkeypatch.delenv("PERFMAMBA_GRID")
    import torch

    assert get_grid().name == ("gpu" if torch.cuda.is_available() else "quick")


def test_grid_needs_a_dense_baseline():
    with pytest.raises(ValueError, match="needs ratio 0"):
        Grid("bad", ("mamba1-tiny",), (64,), (64,), (1,), (1,), ratios=(0.5,), criteria=("energy",))
