"""mamba-ssm's `MambaLMHeadModel` holding our model's weights: the reference that the vs_mamba_ssm benchmark level
and `benchmarks/vs_mamba_ssm.py` time our model against (issue 15).

The weights travel as a user's would: `save_model` writes our checkpoint, mamba-ssm's model is built from its
`config.json` and loads the weights strictly, and the two must give the same logits before anything is timed, so
a comparison never times two different models. Prefill is a forward over (batch, L); the decode step is what
mamba-ssm's own `generate(..., cg=True)` captures in its graph: a forward of one token per sequence with an
`InferenceParams` whose `seqlen_offset` is past the prompt. Everything here needs CUDA and mamba-ssm;
`unavailable_reason` says why not without raising.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from perfmamba.bench.cases import Case
from perfmamba.bench.workloads import ModelCache, Workload, model_inputs, relative_error
from perfmamba.models.checkpoint import CONFIG_FILE, TORCH_WEIGHTS, save_model
from perfmamba.models.lm import MambaLM
from perfmamba.timing import Samples, paired_ratio

# bf16 logits of the two models differ by ~1-2% (issue 15: 1.0% Mamba-1, 1.7% Mamba-2; other summation orders);
# a model with other weights is off by ~100%.
MAX_LOGITS_REL_ERROR = 0.1
CHECK_TOKENS = 512  # positions of one sequence compared before timing


def unavailable_reason(device: torch.device | str) -> str | None:
    """Why mamba-ssm's model cannot run on `device` here (None: it can)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"mamba-ssm's MambaLMHeadModel runs on CUDA only; the device is {device}"
    try:
        import mamba_ssm.models.mixer_seq_simple  # noqa: F401
        import mamba_ssm.utils.generation  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a CUDA extension that does not load
        return f"mamba-ssm is not importable ({type(e).__name__}: {e})"
    return None


def mamba_ssm_model(model: MambaLM) -> nn.Module:
    """mamba-ssm's `MambaLMHeadModel` with `model`'s weights, on its device and in its dtype, through a checkpoint
    written by `save_model` and loaded strictly."""
    states = set(model.config.d_states)
    if len(states) != 1:
        raise ValueError(f"mamba-ssm's config holds one d_state for every layer; this model has per-layer "
                         f"d_state {sorted(states)} (prune with allocation='uniform' to compare)")
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    weight = next(model.parameters())
    with tempfile.TemporaryDirectory(prefix="perfmamba-vs-mamba-ssm-") as tmp:
        path = save_model(model, Path(tmp) / "model")
        config = json.loads((path / CONFIG_FILE).read_text())
        state = torch.load(path / TORCH_WEIGHTS, map_location=weight.device, weights_only=True)
    theirs = MambaLMHeadModel(MambaConfig(**config), device=weight.device, dtype=weight.dtype)
    theirs.load_state_dict(state, strict=True)
    return theirs.eval().requires_grad_(False)


def logits_rel_error(ours: MambaLM, theirs: nn.Module, ids: Tensor) -> float:
    """max |ours - theirs| / max |theirs| of the logits over `ids`."""
    with torch.inference_mode():
        return relative_error(ours(ids), theirs(ids).logits)


def check_same_model(ours: MambaLM, theirs: nn.Module, ids: Tensor) -> float:
    """The logits' relative error over the first sequence of `ids` (at most CHECK_TOKENS positions); raises
    when the two are not the same model."""
    error = logits_rel_error(ours, theirs, ids[:1, :CHECK_TOKENS])
    if not error <= MAX_LOGITS_REL_ERROR:
        raise AssertionError(f"mamba-ssm's model does not give our logits (relative error {error:.3g} > "
                             f"{MAX_LOGITS_REL_ERROR}): the comparison would time two different models")
    return error


def inference_params(theirs: nn.Module, batch: int, max_seqlen: int):
    """mamba-ssm's decode state for `batch` sequences: an `InferenceParams` over `allocate_inference_cache`, in
    the model's dtype (as its `generate` allocates it)."""
    from mamba_ssm.utils.generation import InferenceParams

    dtype = next(theirs.parameters()).dtype
    params = InferenceParams(max_seqlen=max_seqlen, max_batch_size=batch)
    params.key_value_memory_dict = theirs.allocate_inference_cache(batch, max_seqlen, dtype=dtype)
    return params


def cache_bytes(params) -> int:
    return sum(t.numel() * t.element_size() for states in params.key_value_memory_dict.values() for t in states)


def prefill_fn(theirs: nn.Module, ids: Tensor) -> Callable[[], Tensor]:
    @torch.inference_mode()
    def fn() -> Tensor:
        return theirs(ids).logits

    return fn


def decode_step_fn(theirs: nn.Module, prompt: Tensor, token: Tensor) -> tuple[Callable[[], Tensor], Any]:
    """One decode step of `token` (batch,) after `prompt` (batch, L), as mamba-ssm's generate runs it; returns
    (step, its InferenceParams). Every call updates the states in place, as a step of ours does."""
    batch, seqlen = prompt.shape
    params = inference_params(theirs, batch, seqlen + 1)
    with torch.inference_mode():
        theirs(prompt, inference_params=params, num_last_tokens=1)
    params.seqlen_offset = seqlen
    ids = token[:, None].contiguous()
    position_ids = torch.full((batch, 1), seqlen, dtype=torch.long, device=prompt.device)

    @torch.inference_mode()
    def fn() -> Tensor:
        return theirs(ids, position_ids=position_ids, inference_params=params, num_last_tokens=1).logits

    return fn, params


def reference_workload(case: Case, device: torch.device, models: ModelCache, seed: int = 0) -> Workload:
    """mamba-ssm's model on the inputs of our model-level workload of `case` (same seed, same tokens): the
    baseline of a vs_mamba_ssm case. Checks first that it gives our model's logits."""
    reason = unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(reason)
    ours, theirs = models.get(case, device), models.derived(case, device, "mamba_ssm", mamba_ssm_model)
    inputs = model_inputs(case, ours.config.vocab_size, device, seed)
    info: dict[str, Any] = {"logits_rel_error": check_same_model(ours, theirs, inputs[0])}
    if case.mode == "prefill":
        fn = prefill_fn(theirs, inputs[0])
    else:
        fn, params = decode_step_fn(theirs, *inputs)
        info["cache_bytes"] = cache_bytes(params)
    return Workload(case, fn, device, info)


def ours_over_mamba_ssm(ours: Samples, theirs: Samples, what: str) -> float:
    """Median over interleaved rounds of ours_i / mamba-ssm_i. Raises when the two were timed by different clocks
    (one call captured in a graph, the other not): that ratio would measure the host, not the models."""
    if ours.clock != theirs.clock:
        raise RuntimeError(f"{what}: our model was timed by {ours.clock} ({ours.note}) and mamba-ssm's by "
                           f"{theirs.clock} ({theirs.note}); their ratio would not compare the models")
    return paired_ratio(ours, theirs)


def mamba_ssm_generate(theirs: nn.Module, input_ids: Tensor, max_new_tokens: int, *, cg: bool = True) -> Tensor:
    """Greedy tokens of mamba-ssm's own `generate` (a CUDA-graph decode step with `cg`): (batch, max_new_tokens).
    Over the real vocabulary, as `MambaLM.generate` picks: left alone, mamba-ssm's picks range over the padded
    vocabulary too, and a random model's padding rows win a greedy pick now and then (ids 1003 and 1006 of 1000,
    on the H200 in session 11)."""
    out = theirs.generate(input_ids, max_length=input_ids.shape[1] + max_new_tokens, cg=cg, top_k=1,
                          vocab_size=theirs.config.vocab_size)
    return out[:, input_ids.shape[1]:]
