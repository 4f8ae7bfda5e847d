"""Analytical cost model: FLOPs and the minimum bytes moved by each component, for any config and length.

Conventions (so that numbers from different components and runs compare):
- A multiply-add is 2 FLOPs; an elementwise exp, softplus or SiLU counts as one FLOP per operation it needs
  (`_SILU`, `_SOFTPLUS` below), a division or rsqrt as one. Matrix products are counted exactly as
  `torch.utils.flop_counter` counts them (2 * m * n * k), and kept apart in `Cost.matmul_flops`.
- "Minimum bytes" are the compulsory traffic of the component as the model calls it: every input read once,
  every output written once, every weight read once. Intermediates inside a component (dt before dt_proj, the
  scan's states) are assumed to stay on chip, as a fused kernel keeps them; whatever an implementation moves
  beyond this is the distance to the memory roofline.
- Activations and weights are in the model's dtype (`itemsize`); the SSM parameters A, D and the dt bias are fp32
  (the models keep them so); the residual stream that the norms read and write is fp32 when `residual_in_fp32`;
  the decode cache is in the model's dtype; the scans return their final state in fp32.
- Per-layer d_state (pruned models) is honoured: every layer is costed with its own N.

Prefill costs one forward over (batch, seqlen) tokens, returning logits for every position; decode costs one
recurrent step (batch tokens) against a filled cache. Mamba-2's SSD scan is costed as the chunked algorithm its
kernel runs (chunk length min(chunk_size, seqlen), the sequence padded to whole chunks).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from perfmamba.models.components import MODES, tracing
from perfmamba.models.config import ModelConfig

Mode = Literal["prefill", "decode"]

# Components in the order a block runs them, per model version (the names of `perfmamba.models.components`).
COMPONENTS_V1 = ("embedding", "norm", "in_proj", "conv1d", "x_proj", "ssm_scan", "out_proj", "lm_head")
COMPONENTS_V2 = ("embedding", "norm", "in_proj", "conv1d", "ssm_scan", "gated_norm", "out_proj", "lm_head")

# FLOPs per element of the elementwise functions: SiLU x * sigmoid(x) = neg, exp, add, div, mul; softplus
# log(1 + exp(x)) = exp, add, log; RMSNorm per element = square, add (mean), mul (rsqrt), mul (weight).
_SILU = 5
_SOFTPLUS = 3
_RMSNORM = 4
FP32_BYTES = 4
INT64_BYTES = 8


@dataclass(frozen=True)
class Cost:
    """FLOPs and minimum bytes of some work; `matmul_flops` is the part done as matrix products."""

    flops: float = 0.0
    bytes: float = 0.0
    matmul_flops: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes, self.matmul_flops + other.matmul_flops)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte (0 for work that moves no bytes)."""
        return self.flops / self.bytes if self.bytes else 0.0


def components_of(config: ModelConfig) -> tuple[str, ...]:
    return COMPONENTS_V1 if config.version == 1 else COMPONENTS_V2


def itemsize_of(dtype: torch.dtype | str | int) -> int:
    """Bytes per element of a dtype given as a torch dtype, its name ("bfloat16") or the size itself."""
    if isinstance(dtype, int):
        if dtype < 1:
            raise ValueError(f"itemsize must be >= 1, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; expected a torch dtype name such as 'bfloat16'")
        dtype = resolved
    return torch.empty((), dtype=dtype).element_size()


def _matmul(tokens: int, k: int, n: int, s: int, *, weight_bytes: bool = True) -> Cost:
    """tokens x k @ k x n: inputs and outputs in itemsize s, the weight read once."""
    flops = 2.0 * tokens * k * n
    nbytes = s * (tokens * k + tokens * n + (k * n if weight_bytes else 0))
    return Cost(flops, nbytes, flops)


def _norm(tokens: int, d: int, s: int, residual_size: int, first: bool = False) -> Cost:
    """A pre-norm with the residual add in its kernel (as the models run it): reads x and the residual stream,
    writes the normalised x and the new residual stream. The first block has no residual to read, and writes
    none when the stream stays in x's dtype (it is x itself)."""
    reads = s + (0 if first else residual_size)
    writes = s + (residual_size if not first or residual_size != s else 0)
    return Cost((_RMSNORM + (0 if first else 1)) * tokens * d, tokens * d * (reads + writes) + d * s)


def _conv(tokens: int, channels: int, d_conv: int, s: int, mode: Mode, batch: int) -> Cost:
    # depthwise taps (2 per tap) + bias + SiLU per output
    flops = tokens * channels * (2 * d_conv + 1 + _SILU)
    nbytes = s * (2 * tokens * channels + channels * (d_conv + 1))
    matmul = 2.0 * tokens * channels * d_conv  # what flop_counter counts for the convolution
    if mode == "decode":
        nbytes += 2 * s * batch * channels * d_conv  # the conv state is read and written back shifted
    return Cost(flops, nbytes, matmul)


def _selective_scan(tokens: int, batch: int, d: int, N: int, s: int, mode: Mode, with_state: bool) -> Cost:
    """Mamba-1: per (token, channel, state) exp(delta A), delta B u, h = dA h + dBu, y += C h: 7 FLOPs; per
    (token, channel) delta bias + softplus, delta u, D u, silu(z) gate."""
    flops = tokens * d * (7 * N + 1 + _SOFTPLUS + 1 + 2 + _SILU + 1)
    nbytes = s * (4 * tokens * d + 2 * tokens * N) + FP32_BYTES * (d * N + 2 * d)  # u, delta, z, y; B, C; A, D, bias
    if mode == "decode":
        nbytes += 2 * s * batch * d * N  # the state is read and written
    elif with_state:
        nbytes += FP32_BYTES * batch * d * N
    return Cost(flops, nbytes)


def _ssd_scan(config: ModelConfig, N: int, batch: int, seqlen: int, s: int, mode: Mode, with_state: bool) -> Cost:
    """Mamba-2. Decode: the recurrent update over (head, headdim, state) as Mamba-1's. Prefill: the chunked SSD
    of the Mamba-2 paper: C B^T per chunk and group, the decay-masked scores times x per head, chunk states
    B^T x, their passing between chunks, and C times the carried state."""
    H, P, G, di = config.nheads, config.headdim, config.ngroups, config.d_inner
    if mode == "decode":
        flops = batch * (H * P * (7 * N + 2) + H * (1 + _SOFTPLUS))
        nbytes = s * (2 * batch * di + 2 * batch * G * N + batch * H + 2 * batch * H * P * N) + FP32_BYTES * 3 * H
        return Cost(flops, nbytes)
    Q = min(config.chunk_size, seqlen)
    chunks = math.ceil(seqlen / Q)
    Lp = chunks * Q  # padded length
    cb = 2.0 * batch * Lp * Q * N * G
    scores_x = 2.0 * batch * Lp * Q * P * H
    states = 2.0 * batch * Lp * N * di
    passing = 2.0 * batch * chunks * H * P * N
    carried = 2.0 * batch * Lp * N * di
    matmul = cb + scores_x + states + carried
    # cumsum of A dt, exp of the segment sums and the mask multiply per score; the decays applied to x for the
    # states and to the carried-in state; dt bias + softplus per (token, head); x dt and D x per channel.
    elementwise = batch * (3 * Lp * Q * H + 2 * Lp * di + Lp * H * (2 + _SOFTPLUS) + 3 * seqlen * di)
    tokens = batch * seqlen
    nbytes = s * (2 * tokens * di + tokens * H + 2 * tokens * G * N) + FP32_BYTES * 3 * H  # x, y; dt; B, C; A, D, bias
    if with_state:
        nbytes += FP32_BYTES * batch * H * P * N
    return Cost(matmul + passing + elementwise, nbytes, matmul)


def in_proj_width(config: ModelConfig, N: int) -> int:
    if config.version == 1:
        return 2 * config.d_inner
    return 2 * config.d_inner + 2 * config.ngroups * N + config.nheads


def conv_channels(config: ModelConfig, N: int) -> int:
    return config.d_inner if config.version == 1 else config.d_inner + 2 * config.ngroups * N


def layer_costs(
    config: ModelConfig, layer: int, *, seqlen: int, batch: int = 1, mode: Mode = "prefill",
    dtype: torch.dtype | str | int = torch.bfloat16, with_state: bool = False,
) -> dict[str, Cost]:
    """Costs of one block (its pre-norm and mixer) by component. `with_state`: the prefill also returns the
    final SSM state (a prefill that fills a decode cache)."""
    _check(mode, seqlen, batch)
    s = itemsize_of(dtype)
    N = config.layer_state(layer)
    d, di = config.d_model, config.d_inner
    tokens = batch * (seqlen if mode == "prefill" else 1)
    residual = FP32_BYTES if config.residual_in_fp32 else s
    out: dict[str, Cost] = {
        "norm": _norm(tokens, d, s, residual, first=layer == 0),
        "in_proj": _matmul(tokens, d, in_proj_width(config, N), s),
        "conv1d": _conv(tokens, conv_channels(config, N), config.d_conv, s, mode, batch),
    }
    if config.version == 1:
        r = config.resolved_dt_rank
        x_proj = _matmul(tokens, di, r + 2 * N, s)
        dt_proj = _matmul(tokens, r, di, s)
        # The intermediate dt (tokens x r) stays on chip in the minimum: drop its write and re-read.
        out["x_proj"] = Cost(
            x_proj.flops + dt_proj.flops, x_proj.bytes + dt_proj.bytes - 2 * s * tokens * r,
            x_proj.matmul_flops + dt_proj.matmul_flops,
        )
        out["ssm_scan"] = _selective_scan(tokens, batch, di, N, s, mode, with_state)
    else:
        out["ssm_scan"] = _ssd_scan(config, N, batch, seqlen, s, mode, with_state)
        # RMSNorm(y * silu(z)): reads y and z, writes the normalised output
        out["gated_norm"] = Cost(tokens * di * (_RMSNORM + _SILU + 1), s * (3 * tokens * di + di))
    out["out_proj"] = _matmul(tokens, di, d, s)
    return out


def component_costs(
    config: ModelConfig, *, seqlen: int, batch: int = 1, mode: Mode = "prefill",
    dtype: torch.dtype | str | int = torch.bfloat16, with_state: bool = False,
) -> dict[str, Cost]:
    """Costs of the whole model by component (summed over layers, in `components_of(config)` order): one
    prefill forward over (batch, seqlen) tokens, or one decode step of `batch` tokens."""
    _check(mode, seqlen, batch)
    s = itemsize_of(dtype)
    tokens = batch * (seqlen if mode == "prefill" else 1)
    d, V = config.d_model, config.padded_vocab_size
    residual = FP32_BYTES if config.residual_in_fp32 else s
    totals: dict[str, Cost] = {name: Cost() for name in components_of(config)}
    totals["embedding"] = Cost(0.0, tokens * (INT64_BYTES + 2 * d * s))  # ids, gathered rows, output
    for i in range(config.n_layer):
        for name, cost in layer_costs(
            config, i, seqlen=seqlen, batch=batch, mode=mode, dtype=s, with_state=with_state
        ).items():
            totals[name] = totals[name] + cost
    totals["norm"] = totals["norm"] + _norm(tokens, d, s, residual)  # norm_f
    totals["lm_head"] = _matmul(tokens, d, V, s)
    return totals


def total_cost(costs: dict[str, Cost] | Iterable[Cost]) -> Cost:
    values = costs.values() if isinstance(costs, dict) else costs
    out = Cost()
    for cost in values:
        out = out + cost
    return out


def cache_bytes_per_sequence(config: ModelConfig, dtype: torch.dtype | str | int = torch.bfloat16) -> int:
    """Bytes of the decode cache (conv state + SSM state, every layer) per sequence, in the cache's dtype."""
    s = itemsize_of(dtype)
    total = 0
    for i in range(config.n_layer):
        N = config.layer_state(i)
        ssm = config.d_inner * N  # Mamba-1 (d_inner, N); Mamba-2 (nheads, headdim, N) has the same count
        total += s * (conv_channels(config, N) * config.d_conv + ssm)
    return total


def parameter_count(config: ModelConfig) -> int:
    """Parameters of the model (the tied head counted once)."""
    d, di = config.d_model, config.d_inner
    total = config.padded_vocab_size * d + d  # embedding, norm_f
    for i in range(config.n_layer):
        N = config.layer_state(i)
        C = conv_channels(config, N)
        total += d + d * in_proj_width(config, N) + C * (config.d_conv + 1) + di * d
        if config.version == 1:
            r = config.resolved_dt_rank
            total += di * (r + 2 * N) + r * di + di + di * N + di  # x_proj, dt_proj (+bias), A_log, D
        else:
            total += 3 * config.nheads + di  # dt_bias, A_log, D; gated norm weight
    return total


def flop_counter_by_component(fn: Callable[[], object]) -> dict[str, float]:
    """Run `fn` once under `torch.utils.flop_counter.FlopCounterMode` and attribute the FLOPs it counts
    (matrix products, batched products, convolutions: not elementwise work) to the innermost component span
    around them; "other" holds what ran outside every span. The check on `Cost.matmul_flops`."""
    from torch.utils.flop_counter import FlopCounterMode

    counts: dict[str, float] = {}
    open_spans: list[list[float]] = []  # per open span: FLOPs counted inside its children
    with FlopCounterMode(display=False) as counter:

        @contextlib.contextmanager
        def span(name: str) -> Iterator[None]:
            before = counter.get_total_flops()
            open_spans.append([0.0])
            try:
                yield
            finally:
                inside = counter.get_total_flops() - before
                children = open_spans.pop()[0]
                counts[name] = counts.get(name, 0.0) + inside - children
                if open_spans:
                    open_spans[-1][0] += inside

        with tracing(span):
            fn()
        total = counter.get_total_flops()
    counts["other"] = total - sum(counts.values())
    return counts


def _check(mode: str, seqlen: int, batch: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if seqlen < 1 or batch < 1:
        raise ValueError(f"seqlen and batch must be >= 1, got seqlen={seqlen}, batch={batch}")
