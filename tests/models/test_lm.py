import json

import pytest
import torch

import perfmamba
from perfmamba.models import CheckpointError, ModelConfig, build_model, load_model, save_model
from perfmamba.models.config import PRESETS

TINY = {
    1: ModelConfig(version=1, d_model=32, n_layer=2, vocab_size=50, d_state=8),
    2: ModelConfig(
        version=2, d_model=32, n_layer=2, vocab_size=50, pad_vocab_size_multiple=16, d_state=16, headdim=16,
        chunk_size=8,
    ),
}

# mamba-ssm's MambaLMHeadModel parameter names and shapes for these configs, written out by hand from
# mamba_ssm/modules/mamba_simple.py and mamba2.py.
def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    d, di, n, V = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.padded_vocab_size
    shapes = {"backbone.embedding.weight": (V, d), "backbone.norm_f.weight": (d,), "lm_head.weight": (V, d)}
    for i in range(cfg.n_layer):
        p = f"backbone.layers.{i}."
        shapes[p + "norm.weight"] = (d,)
        m = p + "mixer."
        if cfg.version == 1:
            r = cfg.resolved_dt_rank
            shapes.update({
                m + "A_log": (di, n), m + "D": (di,), m + "in_proj.weight": (2 * di, d),
                m + "conv1d.weight": (di, 1, cfg.d_conv), m + "conv1d.bias": (di,),
                m + "x_proj.weight": (r + 2 * n, di), m + "dt_proj.weight": (di, r), m + "dt_proj.bias": (di,),
                m + "out_proj.weight": (d, di),
            })
        else:
            h, g = cfg.nheads, cfg.ngroups
            conv = di + 2 * g * n
            shapes.update({
                m + "dt_bias": (h,), m + "A_log": (h,), m + "D": (h,),
                m + "in_proj.weight": (2 * di + 2 * g * n + h, d),
                m + "conv1d.weight": (conv, 1, cfg.d_conv), m + "conv1d.bias": (conv,),
                m + "norm.weight": (di,), m + "out_proj.weight": (d, di),
            })
    return shapes


@pytest.mark.parametrize("version", [1, 2])
def test_state_dict_matches_mamba_ssm_layout(version):
    cfg = TINY[version]
    model = build_model(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_shapes(cfg)
    assert model.lm_head.weight.data_ptr() == model.backbone.embedding.weight.data_ptr()


def test_presets_have_published_sizes():
    assert PRESETS["mamba1-130m"].padded_vocab_size == 50280
    assert PRESETS["mamba2-130m"].padded_vocab_size == 50288
    assert PRESETS["mamba2-1.3b"].d_state == 128 and PRESETS["mamba2-1.3b"].d_model == 2048
    assert (PRESETS["mamba1-2.8b"].d_model, PRESETS["mamba1-2.8b"].n_layer) == (2560, 64)
    with pytest.raises(ValueError, match="unknown preset 'mamba3-1b'"):
        build_model("mamba3-1b")


@pytest.mark.parametrize("version", [1, 2])
def test_forward_shape_and_determinism(version):
    cfg = TINY[version]
    ids = torch.randint(0, cfg.vocab_size, (2, 19))
    a = build_model(cfg, seed=3)(ids)
    b = build_model(cfg, seed=3)(ids)
    assert a.shape == (2, 19, cfg.padded_vocab_size)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, build_model(cfg, seed=4)(ids))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("prompt", [1, 3, 11])
def test_recurrent_decoding_equals_parallel_forward(version, prompt):
    cfg = TINY[version].replace(layer_d_state=(TINY[version].d_state, TINY[version].d_state // 2))
    model = build_model(cfg, seed=1)
    ids = torch.randint(0, cfg.vocab_size, (2, prompt + 6))
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_cache(2)
        logits = [model(ids[:, :prompt], cache=cache)]
        for t in range(prompt, ids.shape[1]):
            logits.append(model.step(ids[:, t], cache).unsqueeze(1))
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-4, atol=1e-4)


def test_generate_greedy_matches_argmax_of_forward():
    model = build_model(TINY[1], seed=2)
    ids = torch.randint(0, 50, (1, 5))
    out = model.generate(ids, 4)
    seq = ids
    for _ in range(4):
        nxt = model(seq)[:, -1, :model.config.vocab_size].argmax(-1, keepdim=True)  # padding rows are no tokens
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq[:, 5:])


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("safetensors", [False, True])
def test_checkpoint_round_trip_with_per_layer_d_state(tmp_path, version, safetensors):
    base = TINY[version]
    cfg = base.replace(layer_d_state=(base.d_state, max(1, base.d_state // 4)))
    model = build_model(cfg, seed=5)
    save_model(model, tmp_path / "ckpt", safetensors=safetensors)
    config_json = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    # exactly mamba-ssm's MambaConfig fields; nothing of ours
    assert set(config_json) == {
        "d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
        "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings",
    }
    assert config_json["ssm_cfg"]["layer"] == f"Mamba{version}"
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config.d_states == cfg.d_states
    ids = torch.randint(0, cfg.vocab_size, (1, 9))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    assert loaded.lm_head.weight.data_ptr() == loaded.backbone.embedding.weight.data_ptr()


def test_uniform_checkpoint_is_plain_mamba_ssm(tmp_path):
    model = build_model(TINY[1].replace(d_state=5))
    save_model(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["ssm_cfg"]["d_state"] == 5
    (tmp_path / "perfmamba.json").unlink()  # as mamba-ssm would write it: no sidecar
    assert load_model(tmp_path).config.d_state == 5


def test_shape_mismatch_names_tensor_expected_and_found(tmp_path):
    save_model(build_model(TINY[1]), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["ssm_cfg"]["d_state"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "perfmamba.json").unlink()
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path)
    msg = str(e.value)
    assert "backbone.layers.0.mixer.A_log: expected shape (64, 4) from the config, found (64, 8)" in msg
    assert "x_proj.weight" in msg


def test_missing_checkpoint_and_bad_spec_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="neither a checkpoint directory nor a preset"):
        perfmamba.get_model("not-a-model")


@pytest.mark.parametrize("key, message", [("tie_embeddings", "untied lm_head"), ("rms_norm", "LayerNorm blocks")])
def test_checkpoint_our_lm_cannot_represent_is_refused(tmp_path, key, message):
    """mamba-ssm checkpoints may untie the head or use LayerNorm; ours always ties and uses RMSNorm, so loading
    one must fail by name rather than overwrite the embedding with the head."""
    save_model(build_model(TINY[1]), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[key] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message):
        load_model(tmp_path)


@pytest.mark.parametrize("bias", [False, True])
def test_mamba1_fused_path_gets_xz_in_the_kernels_layout(bias):
    """The fused path hands mamba_inner_fn an xz with unit stride along L (mamba-ssm's own layout, which the
    kernel takes without a copy), holding the same values as in_proj(hidden).transpose(1, 2)."""
    model = build_model(TINY[1])
    mixer = model.mixers[0]
    if bias:
        mixer.in_proj.bias = torch.nn.Parameter(torch.randn(mixer.in_proj.out_features))
    hidden = torch.randn(3, 7, model.config.d_model)
    xz = mixer._xz_for_kernel(hidden)
    assert xz.shape == (3, mixer.in_proj.out_features, 7) and xz.stride(-1) == 1
    torch.testing.assert_close(xz, mixer.in_proj(hidden).transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_configured_restores_every_path_and_backend():
    model = perfmamba.build_model("mamba2-tiny")
    model.configure(path="unfused", backend="reference")
    model.mixers[0].backend = "auto"  # one layer set apart: restored as it was, not to the model's setting
    with model.configured(path="auto", backend="cuda") as configured:
        assert configured is model
        assert all(m.path == "auto" and m.backend == "cuda" for m in model.mixers)
        assert model.backbone.norm_f.backend == "cuda"
    assert [m.backend for m in model.mixers] == ["auto"] + ["reference"] * (len(model.mixers) - 1)
    assert all(m.path == "unfused" for m in model.mixers) and model.backbone.norm_f.backend == "reference"
    with pytest.raises(ValueError, match="path must be one of"), model.configured(path="fast"):
        pass
    assert all(m.path == "unfused" for m in model.mixers)
