"""What a benchmark case runs: one timed call (the scan op, one block or the whole model; prefill or one decode
step) on inputs built once, plus the static facts stored beside its timings (backend, states, cache bytes).

Pruned models come from `perfmamba.pruning.prune_states` with random calibration tokens: timing depends on the
shapes pruning leaves, not on which states it keeps. Op-level cases need no model: the op runs on inputs of the
preset's shapes with `case.d_state` states.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from perfmamba import ops
from perfmamba.bench.cases import Case
from perfmamba.models import MambaLM, build_model
from perfmamba.models.common import init_dt_bias
from perfmamba.models.config import PRESETS, ModelConfig
from perfmamba.pruning.api import prune_states


def default_device() -> torch.device:
    """The current CUDA device (the one pinned to this worker) if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Workload:
    """`fn()` is one timed call of `case`; `info` the facts stored with its timings."""

    case: Case
    fn: Callable[[], object]
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)


# Pruned models -----------------------------------------------------------------------------------------------
def prune(model: MambaLM, ratio: float, criterion: str, *, seed: int = 0, calibration: Tensor | None = None):
    """`perfmamba.pruning.prune_states` (uniform allocation, states removed); returns (pruned copy, report).
    Without `calibration`, two random sequences: timing depends on the shapes left, not on the states kept."""
    if calibration is None:
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        calibration = torch.randint(0, model.config.vocab_size, (2, 128), generator=gen).to(device)
    return prune_states(model, ratio, calibration, criterion=criterion, allocation="uniform", mode="remove")


class ModelCache:
    """Dense and pruned models by (preset, ratio, criterion, dtype, device), the last `size` kept: cases are
    ordered so that consecutive ones share a model, and a speedup needs its dense and pruned models at once."""

    def __init__(self, size: int = 3) -> None:
        self.size = size
        self._models: OrderedDict[tuple, torch.nn.Module] = OrderedDict()

    @staticmethod
    def key(case: Case, device: torch.device) -> tuple:
        """What identifies a case's model: cases differing only in level, mode, length or batch share one."""
        return (case.preset, case.ratio, case.criterion, case.dtype, str(device))

    def put(self, case: Case, device: torch.device, model: MambaLM) -> None:
        """Use `model` (one built elsewhere, e.g. loaded from disk) for `case` on `device`."""
        key = self.key(case, device)
        self._models[key] = model.eval().requires_grad_(False)
        self._models.move_to_end(key)
        while len(self._models) > self.size:
            self._models.popitem(last=False)

    def has(self, case: Case, device: torch.device) -> bool:
        return self.key(case, device) in self._models

    def get(self, case: Case, device: torch.device) -> MambaLM:
        key = self.key(case, device)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        if case.pruned:
            model = prune(self.get(case.dense(), device), case.ratio, case.criterion)[0]
        else:
            model = build_model(case.preset, device=device, dtype=case.torch_dtype, seed=0)
        self.put(case, device, model)
        return model

    def derived(self, case: Case, device: torch.device, tag: str,
                make: Callable[[MambaLM], torch.nn.Module]) -> torch.nn.Module:
        """A module made from `case`'s model by `make` (mamba-ssm's copy of it: perfmamba.bench.reference_model),
        made once and kept beside it under `tag`."""
        key = (*self.key(case, device), tag)
        if key not in self._models:
            self._models[key] = make(self.get(case, device))
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key]

    def clear(self) -> None:
        self._models.clear()


# Op inputs ---------------------------------------------------------------------------------------------------
SCAN_OPS = {("prefill", 1): "selective_scan", ("prefill", 2): "ssd_scan",
            ("decode", 1): "selective_state_update", ("decode", 2): "selective_state_update"}
# The ops of a block beside the scan, whose plugged-in kernels are checked against their references too.
OTHER_OPS = {("prefill", 1): ("causal_conv1d", "rms_norm"), ("prefill", 2): ("causal_conv1d", "rms_norm_gated"),
             ("decode", 1): ("causal_conv1d_update", "rms_norm"), ("decode", 2): ("causal_conv1d_update",)}


def scan_op(case: Case) -> str:
    """The SSM op a case's op level times."""
    return SCAN_OPS[(case.mode, case.version)]


def checked_ops(case: Case) -> tuple[str, ...]:
    return (scan_op(case), *OTHER_OPS[(case.mode, case.version)])


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    # Drawn where the generator lives: on a GPU, 50M-element inputs cost milliseconds instead of ~0.4 s each on
    # the host (the values differ between CPU and CUDA generators; each is fixed by the seed).
    return torch.randn(*shape, generator=gen, device=gen.device) * scale


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def op_arguments(op: str, case: Case, device: torch.device, seed: int = 0) -> tuple[tuple, dict[str, Any]]:
    """Positional and keyword arguments of `op` at the shapes of `case` (its preset with `case.d_state` states),
    in the value ranges a trained model feeds it (deltas after softplus of 1e-3..1e-1, S4D-real A)."""
    cfg: ModelConfig = PRESETS[case.preset]
    gen = _generator(device, seed)
    b, L, N, d = case.batch, case.seqlen, case.d_state, cfg.d_inner
    h, p, g = cfg.nheads, cfg.headdim, cfg.ngroups
    act, fp32 = case.torch_dtype, torch.float32

    def on(t: Tensor, dtype: torch.dtype = act) -> Tensor:
        return t.to(device=device, dtype=dtype)

    if op == "selective_scan":
        A = -torch.arange(1, N + 1, dtype=fp32).repeat(d, 1)
        args = (on(_randn(gen, b, d, L)), on(_randn(gen, b, d, L, scale=0.5)), on(A, fp32),
                on(_randn(gen, b, N, L)), on(_randn(gen, b, N, L)))
        kwargs = {"D": on(torch.ones(d), fp32), "z": on(_randn(gen, b, d, L)),
                  "delta_bias": on(init_dt_bias(d, "cpu"), fp32), "delta_softplus": True}
    elif op == "ssd_scan":
        A = -torch.empty(h, device=gen.device).uniform_(1, 16, generator=gen)
        args = (on(_randn(gen, b, L, h, p)), on(_randn(gen, b, L, h, scale=0.5)), on(A, fp32),
                on(_randn(gen, b, L, g, N)), on(_randn(gen, b, L, g, N)), cfg.chunk_size)
        kwargs = {"D": on(torch.ones(h), fp32), "dt_bias": on(init_dt_bias(h, "cpu"), fp32), "dt_softplus": True}
    elif op == "selective_state_update" and case.version == 1:
        A = -torch.arange(1, N + 1, dtype=fp32).repeat(d, 1)
        args = (on(_randn(gen, b, d, N)), on(_randn(gen, b, d)), on(_randn(gen, b, d, scale=0.5)), on(A, fp32),
                on(_randn(gen, b, N)), on(_randn(gen, b, N)))
        kwargs = {"D": on(torch.ones(d), fp32), "z": on(_randn(gen, b, d)),
                  "dt_bias": on(init_dt_bias(d, "cpu"), fp32), "dt_softplus": True}
    elif op == "selective_state_update":
        # Mamba-2's per-head parameters broadcast over the head dimension, as its mixer passes them.
        A = (-torch.empty(h, device=gen.device).uniform_(1, 16, generator=gen))[:, None, None].expand(h, p, N)
        args = (on(_randn(gen, b, h, p, N)), on(_randn(gen, b, h, p)),
                on(_randn(gen, b, h, scale=0.5)[..., None].expand(b, h, p)), on(A, fp32),
                on(_randn(gen, b, g, N)), on(_randn(gen, b, g, N)))
        kwargs = {"D": on(torch.ones(h, p), fp32), "dt_bias": on(init_dt_bias(h, "cpu")[:, None].expand(h, p), fp32),
                  "dt_softplus": True}
    elif op == "causal_conv1d":
        channels = d if case.version == 1 else d + 2 * g * N
        args = (on(_randn(gen, b, channels, L)), on(_randn(gen, channels, cfg.d_conv, scale=0.5)),
                on(_randn(gen, channels)))
        kwargs = {"activation": "silu"}
    elif op == "causal_conv1d_update":
        channels = d if case.version == 1 else d + 2 * g * N
        state = on(_randn(gen, b, cfg.d_conv, channels)).transpose(1, 2)  # channel-last, as the models keep it
        args = (on(_randn(gen, b, channels)), state, on(_randn(gen, channels, cfg.d_conv, scale=0.5)),
                on(_randn(gen, channels)))
        kwargs = {"activation": "silu"}
    elif op == "rms_norm":
        tokens = L if case.mode == "prefill" else 1
        args = (on(_randn(gen, b, tokens, cfg.d_model)), on(1 + _randn(gen, cfg.d_model, scale=0.1)))
        kwargs = {"eps": cfg.norm_epsilon}
    elif op == "rms_norm_gated":
        tokens = L if case.mode == "prefill" else 1
        args = (on(_randn(gen, b, tokens, d)), on(1 + _randn(gen, d, scale=0.1)), on(_randn(gen, b, tokens, d)))
        kwargs = {"eps": 1e-5, "group_size": d // g, "norm_before_gate": False}
    else:
        raise ValueError(f"no benchmark inputs for op {op!r} of a Mamba-{case.version} {case.mode} case")
    return args, kwargs


def call_op(op: str, args: tuple, kwargs: dict[str, Any], backend: str = "auto"):
    return getattr(ops, op)(*args, **kwargs, backend=backend)


def _clone(args: tuple) -> tuple:
    # In-place ops (the decode updates) must start from the same state for both backends.
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in args)


def _tensors(out) -> list[Tensor]:
    return [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, Tensor)]


def relative_error(got, want) -> float:
    """max |got - want| / max |want| over all output tensors (inf when shapes differ)."""
    got_t, want_t = _tensors(got), _tensors(want)
    if len(got_t) != len(want_t) or any(a.shape != b.shape for a, b in zip(got_t, want_t)):
        return float("inf")
    err = max((a.float() - b.float()).abs().max().item() for a, b in zip(got_t, want_t))
    scale = max(b.float().abs().max().item() for b in want_t)
    return err / max(scale, 1e-30)


@dataclass(frozen=True)
class KernelCheck:
    op: str
    backend: str  # what "auto" resolved to
    rel_error: float  # vs the reference; 0.0 when auto is the reference itself


def kernel_error(op: str, case: Case, device: torch.device, seed: int = 0) -> KernelCheck:
    """How far the implementation that "auto" runs for `op` (a plug-in, or the CUDA kernel on a GPU) is from the
    reference on `case`'s shapes, in float32 (where a kernel's own error is not hidden by rounding to bf16)."""
    args, kwargs = op_arguments(op, replace(case, dtype="fp32"), device, seed)
    backend, _ = ops.resolve(op, "auto", *[a for a in args if isinstance(a, Tensor)])
    if backend == "reference":
        return KernelCheck(op, backend, 0.0)
    with torch.inference_mode():
        got_args = _clone(args)
        got = call_op(op, got_args, kwargs, "auto")
        ref_args = _clone(args)
        want = call_op(op, ref_args, kwargs, "reference")
    if op.endswith("_update"):  # the updated state is an output too
        got, want = (_tensors(got) + [got_args[1 if op.startswith("causal") else 0]],
                     _tensors(want) + [ref_args[1 if op.startswith("causal") else 0]])
    return KernelCheck(op, backend, relative_error(got, want))


# Workloads ---------------------------------------------------------------------------------------------------
def op_workload(case: Case, device: torch.device, *, backend: str = "auto", seed: int = 0) -> Workload:
    op = scan_op(case)
    args, kwargs = op_arguments(op, case, device, seed)
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
    resolved, _ = ops.resolve(op, backend, *tensors)
    state_bytes = _nbytes(args[0]) if case.mode == "decode" else None

    @torch.inference_mode()
    def fn():
        return call_op(op, args, kwargs, backend)

    info = {"op": op, "backend": resolved, "d_state": case.d_state, "resident_bytes": sum(map(_nbytes, tensors))}
    if state_bytes is not None:
        info["state_bytes"] = state_bytes
    return Workload(case, fn, device, info)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _model_info(case: Case, model: MambaLM, module: torch.nn.Module) -> dict[str, Any]:
    weight = next(model.parameters())
    mixer = model.backbone.layers[0].mixer
    return {
        "d_states": list(model.config.d_states),
        "param_bytes": sum(map(_nbytes, module.parameters())),
        "fused": case.mode == "prefill" and mixer.use_fused(weight, None),
        "backends": {op: ops.resolve(op, "auto", weight)[0] for op in checked_ops(case)},
    }


def block_workload(case: Case, model: MambaLM, device: torch.device, seed: int = 0) -> Workload:
    """The first block (pre-norm + mixer) of `model`."""
    block = model.backbone.layers[0]
    gen = _generator(device, seed)
    d_model, b = model.config.d_model, case.batch
    info = _model_info(case, model, block)
    if case.mode == "prefill":
        hidden = _randn(gen, b, case.seqlen, d_model).to(device=device, dtype=case.torch_dtype)

        @torch.inference_mode()
        def fn():
            return block(hidden, None)[0]
    else:
        cache = block.mixer.allocate_cache(b)
        with torch.inference_mode():
            block(_randn(gen, b, case.seqlen, d_model).to(device=device, dtype=case.torch_dtype), None, cache)
        step = _randn(gen, b, d_model).to(device=device, dtype=case.torch_dtype)
        info["cache_bytes"] = cache.nbytes

        @torch.inference_mode()
        def fn():
            return block.step(step, None, cache)[0]

    info["resident_bytes"] = info["param_bytes"] + info.get("cache_bytes", 0)
    return Workload(case, fn, device, info)


def model_inputs(case: Case, vocab_size: int, device: torch.device, seed: int = 0) -> tuple[Tensor, ...]:
    """Token ids of a model-level case: (ids,) for prefill, (prompt, token) for decode; drawn on the CPU from
    `seed`, so that our model and mamba-ssm's (perfmamba.bench.reference_model) see the same tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (case.batch, case.seqlen), generator=gen).to(device)
    if case.mode == "prefill":
        return (ids,)
    return ids, torch.randint(0, vocab_size, (case.batch,), generator=gen).to(device)


def model_workload(case: Case, model: MambaLM, device: torch.device, seed: int = 0) -> Workload:
    info = _model_info(case, model, model)
    inputs = model_inputs(case, model.config.vocab_size, device, seed)
    if case.mode == "prefill":
        ids = inputs[0]

        @torch.inference_mode()
        def fn():
            return model(ids)
    else:
        prompt, token = inputs
        cache = model.allocate_cache(case.batch)
        with torch.inference_mode():
            model(prompt, cache=cache)
        info["cache_bytes"] = sum(layer.nbytes for layer in cache)

        @torch.inference_mode()
        def fn():
            return model.step(token, cache)

    info["resident_bytes"] = info["param_bytes"] + info.get("cache_bytes", 0)
    return Workload(case, fn, device, info)


def make_workload(case: Case, device: torch.device, models: ModelCache | None = None) -> Workload:
    """The workload of any case; block and model levels take their (pruned) model from `models`. Of a
    vs_mamba_ssm case, our model's side (mamba-ssm's: `reference_model.reference_workload`)."""
    if case.level == "op":
        return op_workload(case, device)
    model = (models or ModelCache(size=2)).get(case, device)
    if case.level == "block":
        return block_workload(case, model, device)
    return model_workload(case, model, device)


def transient_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes a call of `fn` allocates on a CUDA device beyond what was allocated before it (activations,
    workspaces); None on a CPU, where torch keeps no allocator statistics. Measured as an increment so that
    other models resident on the device (the dense twin of a pruned model) do not count."""
    if device.type != "cuda":
        return None
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def peak_memory_bytes(workload: Workload) -> int | None:
    """Peak GPU memory of one call of the workload: what it keeps resident (weights, decode cache, op inputs)
    plus what the call allocates on top. None on a CPU. (asv's peakmem_ reads host RSS, blind to the GPU.)"""
    transient = transient_memory_bytes(workload.fn, workload.device)
    return None if transient is None else workload.info["resident_bytes"] + transient
