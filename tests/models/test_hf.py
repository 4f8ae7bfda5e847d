import pytest
import torch

from perfmamba.models import build_model
from perfmamba.models.config import ModelConfig
from perfmamba.models.hf import config_from_hf, hf_config_dict, state_dict_from_hf, state_dict_to_hf

CFGS = [
    ModelConfig(version=1, d_model=32, n_layer=2, vocab_size=64, d_state=8),
    ModelConfig(version=2, d_model=32, n_layer=2, vocab_size=64, pad_vocab_size_multiple=16, d_state=16,
                headdim=16, chunk_size=8),
]


@pytest.mark.parametrize("cfg", CFGS, ids=["mamba1", "mamba2"])
def test_state_dict_and_config_round_trip(cfg):
    state = build_model(cfg).state_dict()
    hf_state = state_dict_to_hf(state)
    assert "backbone.embeddings.weight" in hf_state and "backbone.embedding.weight" not in hf_state
    assert state_dict_from_hf(hf_state).keys() == state.keys()
    back = config_from_hf(hf_config_dict(cfg))
    assert (back.version, back.d_model, back.n_layer, back.d_state, back.padded_vocab_size) == (
        cfg.version, cfg.d_model, cfg.n_layer, cfg.d_state, cfg.padded_vocab_size)


def test_per_layer_d_state_cannot_convert():
    with pytest.raises(ValueError, match="per-layer"):
        hf_config_dict(CFGS[0].replace(layer_d_state=(8, 4)))


@pytest.mark.parametrize("cfg", CFGS, ids=["mamba1", "mamba2"])
def test_transformers_model_gives_our_logits(cfg):
    pytest.importorskip("transformers")
    from perfmamba.models.hf import from_hf, to_hf

    ours = build_model(cfg, seed=1)
    hf = to_hf(ours).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(from_hf(hf)(ids), ours(ids), rtol=0, atol=0)
