"""Conversion to and from Hugging Face transformers' `MambaForCausalLM` / `Mamba2ForCausalLM`.

The two layouts differ only in the embedding's name (`backbone.embeddings` there, `backbone.embedding` here) and in
the config's field names, so the state-dict mapping is a rename; the transformers models themselves are built only
when the `hf` extra is installed. Per-layer d_state has no place in a transformers config: only uniform models
convert.
"""

from __future__ import annotations

from typing import Any

import torch

from perfmamba.models.config import ModelConfig
from perfmamba.models.lm import MambaLM

_OURS, _THEIRS = "backbone.embedding.", "backbone.embeddings."


def state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(_THEIRS + k[len(_OURS):] if k.startswith(_OURS) else k): v for k, v in state.items()}


def state_dict_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(_OURS + k[len(_THEIRS):] if k.startswith(_THEIRS) else k): v for k, v in state.items()}


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of transformers' MambaConfig / Mamba2Config for `config`."""
    if not config.is_uniform:
        raise ValueError(f"transformers configs hold one d_state; this model has per-layer {config.d_states}")
    common = {
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.d_model,
        "state_size": config.d_states[0],
        "num_hidden_layers": config.n_layer,
        "layer_norm_epsilon": config.norm_epsilon,
        "expand": config.expand,
        "conv_kernel": config.d_conv,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": config.residual_in_fp32,
        "tie_word_embeddings": True,
    }
    if config.version == 1:
        return {**common, "time_step_rank": config.resolved_dt_rank}
    return {
        **common, "num_heads": config.nheads, "head_dim": config.headdim, "n_groups": config.ngroups,
        "chunk_size": config.chunk_size, "rms_norm": True, "norm_before_gate": False,
    }


def config_from_hf(hf: Any) -> ModelConfig:
    """A `ModelConfig` from a transformers MambaConfig / Mamba2Config (or its dict)."""
    get = hf.get if isinstance(hf, dict) else lambda k, default=None: getattr(hf, k, default)
    version = 2 if get("num_heads") is not None else 1
    common = dict(
        version=version, d_model=get("hidden_size"), n_layer=get("num_hidden_layers"),
        vocab_size=get("vocab_size"), pad_vocab_size_multiple=1, d_state=get("state_size"),
        d_conv=get("conv_kernel", 4), expand=get("expand", 2), norm_epsilon=get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=get("residual_in_fp32", True),
    )
    if version == 1:
        rank = get("time_step_rank", "auto")
        return ModelConfig(**common, dt_rank=None if rank == "auto" else int(rank))
    return ModelConfig(**common, headdim=get("head_dim"), ngroups=get("n_groups", 1), chunk_size=get("chunk_size"))


def to_hf(model: MambaLM):
    """A transformers `MambaForCausalLM` / `Mamba2ForCausalLM` holding `model`'s weights (needs the hf extra)."""
    import transformers

    kwargs = hf_config_dict(model.config)
    if model.config.version == 1:
        hf = transformers.MambaForCausalLM(transformers.MambaConfig(**kwargs))
    else:
        hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs))
    hf.load_state_dict(state_dict_to_hf(model.state_dict()), strict=True)
    return hf.to(next(model.parameters()).device)


def from_hf(hf_model) -> MambaLM:
    """Our `MambaLM` holding the weights of a transformers Mamba / Mamba2 causal LM."""
    model = MambaLM(config_from_hf(hf_model.config))
    model.load_state_dict(state_dict_from_hf(hf_model.state_dict()), strict=True)
    return model
