"""`selective_state_update` in Triton, with the state dimension tiled so that the decode step's cost follows N'.

mamba-ssm's kernel loads the state as one block of next_power_of_2(N) columns: a pruned N' = 116 pays for 128
lanes, and its rows (232 bytes) lose the 16-byte alignment its loads were vectorised for. Here the state is walked
in blocks of BLOCK_N columns, N' is a compile-time constant (one specialisation per N', like mamba-ssm's one per
power of two), only the last block is masked, and the host passes each row's alignment to the compiler. Where two
rows back to back take fewer blocks than two rows apart (`pairs_rows`), the kernel walks them as one.
Registered as backend "triton" of the op "selective_state_update"; same arguments and results as mamba-ssm's.

On CPU tensors the kernel runs in Triton's interpreter when $TRITON_INTERPRET=1 (how CI tests it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os

import torch
from torch import Tensor

from perfmamba.ops.registry import BackendUnavailableError, register

INTERPRET_VAR = "TRITON_INTERPRET"
# Mamba-1's N <= 16: one block of N columns, rows up to this many elements per program (128 x 16, 4 warps: 5.9 us
# against mamba-ssm's 7.1 at the 130m shape, batch 64, H200).
TARGET_TILE = 8192
# Wider N': strips of 64 columns (32 at N' <= 48), 1024 elements per strip over 2 warps: 16 per thread, two
# 16-byte loads. From the tile sweeps on an H200 (docs/results/state_update.md): the kernel is bound by what each
# thread has in flight, not by bytes; at 128 this tile ran 21 us where the first default ([64, 16], 4 warps) ran
# 67 us and mamba-ssm's kernel 36 us, and it stayed within 8% of the best tile at every N' from 16 to 128.
STRIP_ELEMENTS, STRIP_WARPS = 1024, 2
# Above WIDE_FROM columns, one strip of 128 over 16 rows (32 elements per thread, 2 warps): 3-11% faster than two
# strips of 64 at N' = 128, 116, 96 and 88, both Mamba-2 shapes; at 68 and 76 two strips were 3-7% faster (H200
# sweeps, docs/results/state_update.md, sessions 10 and 11; 77-87 not timed, 80 lies between the measured 76 and 88).
WIDE_TILE, WIDE_FROM = (16, 128, 2), 80


def _interpreting() -> bool:
    return os.environ.get(INTERPRET_VAR, "0") == "1"


def _language_interpreted() -> bool:
    """Whether triton.language was imported under $TRITON_INTERPRET=1. Triton jits its own helpers (tl.zeros,
    tl.sum, tl.sigmoid) when it is imported, and the interpreter can run them only if they were interpreted
    then: the variable must be set before the process first imports triton."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_problem() -> str | None:
    """None when CPU tensors can run through Triton's interpreter in this process, else why not."""
    if not _triton_installed():
        return "triton is not installed (pip install 'triton>=3.0')"
    if not _interpreting():
        return f"CPU tensors run in Triton's interpreter, which needs {INTERPRET_VAR}=1"
    if not _language_interpreted():
        return f"{INTERPRET_VAR}=1 was set after triton was imported; set it before the first import of triton"
    return None


def unavailable_reason() -> str | None:
    """None when the kernel can run here: Triton installed, and a CUDA device or the interpreter."""
    if not _triton_installed():
        return "triton is not installed (pip install 'triton>=3.0')"
    if torch.cuda.is_available():
        return None
    problem = interpreter_problem()
    return None if problem is None else f"no CUDA device, and {problem}"


@functools.cache
def _kernel(interpret: bool):
    """The kernel, jitted for the GPU or for the interpreter. `triton.jit` reads $TRITON_INTERPRET when it runs,
    so the decision is made here, per call, and not by whatever the variable was when this module was imported."""
    import triton

    from perfmamba.ops._state_update_kernel import state_update_kernel

    previous = os.environ.get(INTERPRET_VAR)
    os.environ[INTERPRET_VAR] = "1" if interpret else "0"
    try:
        return triton.jit(state_update_kernel)
    finally:
        if previous is None:
            del os.environ[INTERPRET_VAR]
        else:
            os.environ[INTERPRET_VAR] = previous


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def default_config(dim: int, dstate: int, pairs: bool = False) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for a state of `dim` rows of `dstate` columns per head; with `pairs`, a tile
    row is two state rows (BLOCK_M counts pairs; the same strips walk the run of 2 * dstate columns)."""
    if dstate <= 16:
        block_n = _next_pow2(dstate)
        return min(_next_pow2(dim), max(16, min(128, _next_pow2(TARGET_TILE // block_n)))), block_n, 4
    if dstate > WIDE_FROM and not pairs:
        rows, block_n, warps = WIDE_TILE
        return min(_next_pow2(dim), rows), block_n, warps
    block_n = 128 if dstate > WIDE_FROM else 64 if dstate > 48 else 32
    rows = dim // 2 if pairs else dim
    # A masked strip of 64 moves fewer bytes a program: twice the rows keep more in flight (H200 sweeps, sessions
    # 12 and 13, at 52, 60 and 80: 2-14% faster at 1.3b, from 1% slower to 9% faster at 130m; at a full 64 not).
    elements = 2 * STRIP_ELEMENTS if block_n == 64 and dstate % 64 and not pairs else STRIP_ELEMENTS
    return min(_next_pow2(rows), elements // block_n), block_n, STRIP_WARPS


def _alignment(stride: int) -> int:
    """The largest power of two (at most 16) dividing `stride`: what every row offset is a multiple of."""
    return 16 if stride == 0 else min(16, stride & -stride)


def _pairable(state: Tensor) -> bool:
    """Whether the kernel can take a (b, h, p, N) state's rows two at a time: an even dim, each row right after the
    one before it."""
    return state.shape[2] % 2 == 0 and state.stride(2) == state.shape[3] * state.stride(3)


def pairs_rows(state: Tensor) -> bool:
    """Whether the kernel takes the state's rows two at a time by default: where a row's bytes are not a multiple
    of 16 but two rows' are (bf16 N' = 4 mod 8), the rows are contiguous and dim is even, and a pair takes fewer
    strips than two rows do (68 and 76 in strips of 64: 3 strips a pair against 2 a row; 36 and 44 in strips of
    32). In three H200 calls (session 13) pairs took 3-10% less time there than the unpaired default, and were
    equal or up to 2.7% slower where the strips are as many (116, 60, 52, 28): 116's 16-byte vectors did not make
    it cheaper. Above 128 not measured."""
    _, _, dim, dstate = state.shape
    stride, size = state.stride(2), state.element_size()
    if not (16 < dstate <= 128 and _pairable(state) and state.stride(3) == 1
            and (stride * size) % 16 != 0 and (2 * stride * size) % 16 == 0):
        return False
    block_n = default_config(dim, dstate)[1]
    return math.ceil(2 * dstate / block_n) < 2 * math.ceil(dstate / block_n)


def chosen_config(state: Tensor) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, pairs) the kernel runs a (b, h, p, N) state with when given no config."""
    pairs = pairs_rows(state)
    return *default_config(state.shape[2], state.shape[3], pairs), int(pairs)


def check_config(config: tuple) -> None:
    """Refuse a `config` that is not (BLOCK_M, BLOCK_N, num_warps[, pairs 0/1]) of positive integers."""
    if (len(config) not in (3, 4) or any(type(v) is not int or v < 0 for v in config) or min(config[:3]) < 1
            or tuple(config[3:]) not in ((), (0,), (1,))):
        raise ValueError(f"config must be (BLOCK_M, BLOCK_N, num_warps[, pairs 0/1]), positive integers, got {config}")


def _lift(t: Tensor | None, dims: int, at: int) -> Tensor | None:
    return t if t is None or t.dim() == dims else t.unsqueeze(at)


def selective_state_update_triton(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False, *,
    config: tuple[int, ...] | None = None,
) -> Tensor:
    """mamba-ssm's `selective_state_update`: one decode step, `state` updated in place; returns y in x's dtype.

    Mamba-1: state (b, d, N), x/dt/z (b, d), A (d, N), B/C (b, N), D/dt_bias (d,).
    Mamba-2: state (b, h, p, N), x/dt/z (b, h, p), A (h, p, N), B/C (b, g, N), D/dt_bias (h, p).
    `config`: (BLOCK_M, BLOCK_N, num_warps) instead of `default_config`'s, and optionally pairs (1: a tile row is
    two state rows; 0: one) instead of `pairs_rows`'s choice, for tuning sweeps."""
    mamba2 = state.dim() == 4
    if state.dim() not in (3, 4):
        raise ValueError(f"state must be (b, d, N) or (b, h, p, N), got {tuple(state.shape)}")
    state4 = _lift(state, 4, 1)
    x, dt, z = (_lift(t, 3, 1) for t in (x, dt, z))
    A, D, dt_bias = _lift(A, 3, 0), _lift(D, 2, 0), _lift(dt_bias, 2, 0)
    B, C = _lift(B, 3, 1), _lift(C, 3, 1)
    batch, nheads, dim, dstate = state4.shape
    groups = B.shape[1]
    expected = {"x": (x, (batch, nheads, dim)), "dt": (dt, (batch, nheads, dim)), "z": (z, (batch, nheads, dim)),
                "A": (A, (nheads, dim, dstate)), "B": (B, (batch, groups, dstate)), "C": (C, (batch, groups, dstate)),
                "D": (D, (nheads, dim)), "dt_bias": (dt_bias, (nheads, dim))}
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {shape} for state {tuple(state.shape)}, got {tuple(t.shape)}")
    if nheads % groups:
        raise ValueError(f"heads ({nheads}) must be a multiple of the B/C groups ({groups})")
    # CPU tensors can only be interpreted; CUDA tensors too when triton itself was imported to interpret.
    interpret = not state.is_cuda or (_interpreting() and _language_interpreted())
    problem = interpreter_problem() if interpret else None
    if problem is not None:
        raise BackendUnavailableError(f"the triton selective_state_update cannot run on {state.device}: {problem}")
    # Mamba-2's per-head dt and A arrive as stride-0 views over the head dimension: load one scalar per head.
    tie = (A.stride(-1) == 0 and A.stride(-2) == 0 and dt.stride(-1) == 0
           and (dt_bias is None or dt_bias.stride(-1) == 0))
    if config is None:
        block_m, block_n, warps, pairs = chosen_config(state4)
    else:
        check_config(config)
        (block_m, block_n, warps), pairs = config[:3], bool(config[3]) if len(config) == 4 else pairs_rows(state4)
    if pairs and not _pairable(state4):
        raise ValueError(f"config {config} pairs rows, which needs contiguous rows and an even dim, got state "
                         f"{tuple(state.shape)} with strides {state.stride()}")
    out = torch.empty_like(x)
    zero2, zero3 = (0, 0), (0, 0, 0)
    tile_rows = dim // 2 if pairs else dim
    launch = _kernel(interpret)[(math.ceil(tile_rows / block_m), nheads, batch)]
    with torch.cuda.device(state.device) if state.is_cuda else contextlib.nullcontext():
        launch(
            state4, x, dt, dt_bias if dt_bias is not None else x, A, B, C, D if D is not None else x,
            z if z is not None else x, out, dim, nheads // groups,
            *state4.stride(), *x.stride(), *dt.stride(), *(dt_bias.stride() if dt_bias is not None else zero2),
            *A.stride(), *B.stride(), *C.stride(), *(D.stride() if D is not None else zero2),
            *(z.stride() if z is not None else zero3), *out.stride(),
            DSTATE=dstate, BLOCK_M=block_m, BLOCK_N=block_n, STATE_ALIGN=_alignment(state4.stride(2) * (1 + pairs)),
            PAIRS=pairs, EVEN_M=tile_rows % block_m == 0, TIE_HDIM=tie, DT_SOFTPLUS=bool(dt_softplus),
            HAS_DT_BIAS=dt_bias is not None, HAS_D=D is not None, HAS_Z=z is not None, num_warps=warps,
        )
    return out if mamba2 else out.squeeze(1)


register("selective_state_update", "triton", selective_state_update_triton, availability=unavailable_reason)
