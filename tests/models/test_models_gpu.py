"""Our models against mamba-ssm's on a GPU. Skipped without CUDA or without mamba-ssm's kernels."""

import pytest
import torch
from gpu_checks import ATOL, RTOL, assert_matches_on_both_paths

from perfmamba.models import ModelConfig, build_model, load_model, save_model

pytestmark = [pytest.mark.gpu, pytest.mark.mamba_ssm]

CONFIGS = {
    1: ModelConfig(version=1, d_model=256, n_layer=3, vocab_size=1000, d_state=16),
    2: ModelConfig(version=2, d_model=256, n_layer=3, vocab_size=1000, pad_vocab_size_multiple=16,
                   d_state=64, headdim=64, chunk_size=64),
}


def mamba_ssm_model(config: ModelConfig):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    return MambaLMHeadModel(MambaConfig(**config.to_mamba_ssm()), device="cuda", dtype=torch.float32)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("d_state", [None, "pruned"])
def test_matches_mamba_ssm_lm_head_model(version, d_state):
    cfg = CONFIGS[version]
    if d_state == "pruned":  # a uniformly pruned model runs on the unmodified kernels
        cfg = cfg.replace(d_state=12 if version == 1 else 32)
    ours = build_model(cfg, device="cuda", seed=0)
    theirs = mamba_ssm_model(cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert_matches_on_both_paths(ours, theirs, torch.randint(0, cfg.vocab_size, (2, 300), device="cuda"))


@pytest.mark.parametrize("version", [1, 2])
def test_cuda_decoding_equals_parallel_forward(version):
    cfg = CONFIGS[version]
    model = build_model(cfg, device="cuda", seed=0).configure(path="unfused")
    ids = torch.randint(0, cfg.vocab_size, (2, 40), device="cuda")
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_cache(2)
        steps = [model(ids[:, :30], cache=cache)]
        steps += [model.step(ids[:, t], cache).unsqueeze(1) for t in range(30, 40)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("version", [1, 2])
def test_cuda_backend_matches_reference_backend(version):
    cfg = CONFIGS[version]
    model = build_model(cfg, device="cuda", seed=0).configure(path="unfused")
    ids = torch.randint(0, cfg.vocab_size, (2, 200), device="cuda")
    with torch.no_grad():
        cuda = model.configure(backend="cuda")(ids)
        ref = model.configure(backend="reference")(ids)
    torch.testing.assert_close(cuda, ref, rtol=RTOL, atol=ATOL)


def test_our_checkpoint_loads_into_mamba_ssm(tmp_path):
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    cfg = CONFIGS[1].replace(d_state=8)
    ours = build_model(cfg, device="cuda", seed=0)
    save_model(ours, tmp_path)
    theirs = MambaLMHeadModel.from_pretrained(str(tmp_path), device="cuda", dtype=torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (1, 64), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=RTOL, atol=ATOL)
    theirs.save_pretrained(str(tmp_path / "back"))
    assert load_model(tmp_path / "back").config.d_state == 8
