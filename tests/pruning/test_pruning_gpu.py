"""Pruned models on a GPU, against mamba-ssm itself. Skipped without CUDA or without mamba-ssm's kernels."""

import pytest
import torch
from gpu_checks import ATOL, RTOL, SMALL_CONFIGS, assert_matches_on_both_paths

from perfmamba.models import build_model, load_model
from perfmamba.pruning import calibrate, prune_states, save_pruned

pytestmark = [pytest.mark.gpu, pytest.mark.mamba_ssm]

CONFIGS = SMALL_CONFIGS


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_uniformly_pruned_checkpoint_loads_into_mamba_ssm(tmp_path, version, ratio):
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    cfg = CONFIGS[version]
    model = build_model(cfg, device="cuda", seed=0)
    ids = torch.randint(0, cfg.vocab_size, (4, 256), device="cuda")
    pruned, report = prune_states(model, ratio, ids, "contribution", "uniform", progress=False)
    n = report.d_state_after[0]
    assert set(report.d_state_after) == {n} and n < cfg.d_state
    save_pruned(pruned, report, tmp_path, heatmap=False)
    theirs = MambaLMHeadModel.from_pretrained(str(tmp_path), device="cuda", dtype=torch.float32)
    assert theirs.config.ssm_cfg["d_state"] == n
    test_ids = torch.randint(0, cfg.vocab_size, (2, 300), device="cuda")
    assert_matches_on_both_paths(pruned, theirs, test_ids, msg=f", d_state={n}")
    assert load_model(tmp_path).config.d_state == n


@pytest.mark.parametrize("version", [1, 2])
def test_calibration_on_gpu_matches_cpu(version):
    cfg = CONFIGS[version].replace(n_layer=2)
    ids = torch.randint(0, cfg.vocab_size, (2, 128))
    cpu = calibrate(build_model(cfg, seed=1).configure(backend="reference"), ids, progress=False)
    # The same weights on both devices: build_model initialises on its device, whose RNG differs from the CPU's.
    gpu = calibrate(build_model(cfg, seed=1).to("cuda"), ids.cuda(), progress=False)
    for a, b in zip(cpu.layers, gpu.layers):
        for name in ("h2", "ch2", "decay2", "delta_absB", "C2"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=2e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("version", [1, 2])
def test_mask_and_remove_agree_on_the_fused_path(version):
    cfg = CONFIGS[version]
    model = build_model(cfg, device="cuda", seed=2)
    ids = torch.randint(0, cfg.vocab_size, (2, 256), device="cuda")
    stats = calibrate(model, ids, progress=False)
    removed, _ = prune_states(model, 0.5, ids, "gramian", "global", stats=stats)
    masked, _ = prune_states(model, 0.5, ids, "gramian", "global", mode="mask", stats=stats)
    with torch.no_grad():
        torch.testing.assert_close(removed.configure(path="fused")(ids), masked.configure(path="fused")(ids),
                                   rtol=RTOL, atol=ATOL)
