"""Deliberately bad kernels, to prove that the benchmark thresholds and the regression gate catch bad ones.

Each is a drop-in plug-in (mamba-ssm's signature, reference numerics underneath) for `perfmamba.ops`, by
dotted path, e.g.

    PERFMAMBA_OPS="selective_scan=perfmamba.bench.plugins:selective_scan_slow50" pytest benchmarks ...

- `*_slow<P>`: the reference plus P% more of the same real work (the scan re-run over the first P% of the time
  steps; whole repeats past 100%), so it is P% slower at every size and exactly as accurate. `*_slow` reads P
  from $PERFMAMBA_SLOWDOWN (percent, default 10) at each call, for sweeps. The gate must flag these.
- `*_padded`: zero-pads the state dimension to a tile of 64 before the reference, like a kernel with a fixed
  state tile: exact, but every d_state <= 64 costs the same, so pruning buys nothing. The speedup
  thresholds must flag these.
- `*_wrong`: the reference plus noise of 1% of the output's scale: fast, plausible, wrong. The kernel
  error threshold must flag these.
- `delayed(kernel, seconds, device)`: any kernel followed by a calibrated busy wait, for the gate-quality runs
  (`benchmarks/gate_quality.py`), where a slowdown of exactly 1-10% must be injected into a CUDA kernel.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import selective_scan_ref, selective_state_update_ref, ssd_scan_ref
from perfmamba.ops.conv1d import causal_conv1d_ref
from perfmamba.ops.norm import rms_norm_ref

STATE_TILE = 64
NOISE = 1e-2
SLOWDOWN_ENV = "PERFMAMBA_SLOWDOWN"


# Slow: the same work plus a fraction more ------------------------------------------------------------------
def _arguments(ref: Callable, args: tuple, kwargs: dict) -> dict:
    # Ops call plug-ins with a mix of positional and keyword arguments; bind them by name once.
    bound = inspect.signature(ref).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _time_slice_selective_scan(a: dict, steps: int) -> dict:
    def cut(t):
        return t[..., :steps] if isinstance(t, Tensor) and t.dim() >= 3 else t  # (b, d, L), (b, [G,] N, L)

    return {**a, **{k: cut(a[k]) for k in ("u", "delta", "B", "C", "z")}, "return_last_state": False}


def _time_slice_ssd_scan(a: dict, steps: int) -> dict:
    def cut(t):
        return None if t is None else t[:, :steps]  # (b, L, ...)

    return {**a, **{k: cut(a[k]) for k in ("x", "dt", "B", "C", "z")}, "return_final_states": False}


def _fresh(a: dict) -> dict:
    # Repeats must not advance in-place state (decode updates) a second time.
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in a.items()}


def _slowed(ref: Callable, length_of: Callable[[dict], int] | None, time_slice: Callable | None,
            percent: float | None, name: str) -> Callable:
    def slow(*args, **kwargs):
        p = percent if percent is not None else float(os.environ.get(SLOWDOWN_ENV, "10"))
        a = _arguments(ref, args, kwargs)
        extra = [_fresh(a) for _ in range(int(max(p, 0.0) // 100))]
        part = (max(p, 0.0) % 100) / 100
        if part > 0 and time_slice is not None:
            extra.append(time_slice(a, max(1, math.ceil(part * length_of(a)))))
        elif part >= 0.5:  # no time axis (a decode step): round to whole repeats
            extra.append(_fresh(a))
        out = ref(**a)
        for more in extra:
            ref(**more)
        return out

    slow.__name__ = slow.__qualname__ = name
    return slow


def delayed(kernel: Callable, seconds: float, device: torch.device | str) -> Callable:
    """`kernel` followed by `seconds` of busy waiting on `device` (the GPU spins in a kernel of its own,
    `torch.cuda._sleep`; a CPU spins on the clock): exactly the same work, a known amount slower. The gate's
    quality runs inject slowdowns of a few percent this way, since re-running a fraction of a CUDA scan costs
    a launch and a copy that dwarf 1%."""
    device = torch.device(device)
    if device.type == "cuda":
        cycles = max(0, round(seconds * _gpu_cycles_per_second(device)))

        def wait() -> None:
            torch.cuda._sleep(cycles)
    else:
        def wait() -> None:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass

    def slow(*args, **kwargs):
        out = kernel(*args, **kwargs)
        wait()
        return out

    slow.__name__ = slow.__qualname__ = f"{getattr(kernel, '__name__', 'kernel')}_delayed"
    return slow


def _gpu_cycles_per_second(device: torch.device) -> float:
    # torch.cuda._sleep spins for a number of clock cycles; calibrate against CUDA events once.
    cycles = 10_000_000
    torch.cuda._sleep(cycles)  # warm-up: clocks ramp up under load
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / (start.elapsed_time(end) / 1e3)


def _selective_scan_slow(percent: float | None, name: str) -> Callable:
    return _slowed(selective_scan_ref, lambda a: a["u"].shape[-1], _time_slice_selective_scan, percent, name)


def _ssd_scan_slow(percent: float | None, name: str) -> Callable:
    return _slowed(ssd_scan_ref, lambda a: a["x"].shape[1], _time_slice_ssd_scan, percent, name)


def _state_update_slow(percent: float | None, name: str) -> Callable:
    return _slowed(selective_state_update_ref, None, None, percent, name)


selective_scan_slow = _selective_scan_slow(None, "selective_scan_slow")
selective_scan_slow10 = _selective_scan_slow(10, "selective_scan_slow10")
selective_scan_slow25 = _selective_scan_slow(25, "selective_scan_slow25")
selective_scan_slow50 = _selective_scan_slow(50, "selective_scan_slow50")
selective_scan_slow200 = _selective_scan_slow(200, "selective_scan_slow200")
ssd_scan_slow = _ssd_scan_slow(None, "ssd_scan_slow")
ssd_scan_slow10 = _ssd_scan_slow(10, "ssd_scan_slow10")
ssd_scan_slow25 = _ssd_scan_slow(25, "ssd_scan_slow25")
ssd_scan_slow50 = _ssd_scan_slow(50, "ssd_scan_slow50")
ssd_scan_slow200 = _ssd_scan_slow(200, "ssd_scan_slow200")
selective_state_update_slow = _state_update_slow(None, "selective_state_update_slow")
selective_state_update_slow50 = _state_update_slow(50, "selective_state_update_slow50")
selective_state_update_slow200 = _state_update_slow(200, "selective_state_update_slow200")


# Padded: exact, but the state dimension never shrinks ------------------------------------------------------
def _tile(n: int) -> int:
    return STATE_TILE * math.ceil(n / STATE_TILE)


def _pad_last(t: Tensor | None, n: int, value: float = 0.0) -> Tensor | None:
    return None if t is None else F.pad(t, (0, n - t.shape[-1]), value=value)


def selective_scan_padded(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
    N = A.shape[-1]
    n = _tile(N)
    if B.dim() == 2:  # time-invariant (d, N)
        Bp, Cp = _pad_last(B, n), _pad_last(C, n)
    else:  # (b, [G,] N, L): the state axis is the second to last
        Bp, Cp = (F.pad(X, (0, 0, 0, n - N)) for X in (B, C))
    # Padded states see zero input and zero readout, so any decay keeps them at zero.
    out = selective_scan_ref(u, delta, _pad_last(A, n, -1.0), Bp, Cp, D, z, delta_bias, delta_softplus,
                             return_last_state)
    return (out[0], out[1][..., :N]) if return_last_state else out


def ssd_scan_padded(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                    dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
    N = B.shape[-1]
    n = _tile(N)
    out = ssd_scan_ref(x, dt, A, _pad_last(B, n), _pad_last(C, n), chunk_size, D, z, dt_bias,
                       _pad_last(initial_states, n), seq_idx, dt_softplus, dt_limit, return_final_states)
    return (out[0], out[1][..., :N]) if return_final_states else out


def selective_state_update_padded(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    N = state.shape[-1]
    n = _tile(N)
    padded = _pad_last(state, n)
    out = selective_state_update_ref(padded, x, dt, _pad_last(A, n, -1.0), _pad_last(B, n), _pad_last(C, n), D, z,
                                     dt_bias, dt_softplus)
    state.copy_(padded[..., :N])
    return out


# Wrong: fast and plausible, off by 1% -----------------------------------------------------------------------
def _noisy(ref: Callable, name: str) -> Callable:
    def wrong(*args, **kwargs):
        out = ref(*args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        gen = torch.Generator(device=y.device).manual_seed(0)
        noise = torch.randn(y.shape, generator=gen, device=y.device, dtype=torch.float32)
        y = (y.float() + NOISE * y.float().abs().max() * noise).to(y.dtype)
        return (y, *out[1:]) if isinstance(out, tuple) else y

    wrong.__name__ = wrong.__qualname__ = name
    return wrong


selective_scan_wrong = _noisy(selective_scan_ref, "selective_scan_wrong")
ssd_scan_wrong = _noisy(ssd_scan_ref, "ssd_scan_wrong")
selective_state_update_wrong = _noisy(selective_state_update_ref, "selective_state_update_wrong")
causal_conv1d_wrong = _noisy(causal_conv1d_ref, "causal_conv1d_wrong")
rms_norm_wrong = _noisy(rms_norm_ref, "rms_norm_wrong")
