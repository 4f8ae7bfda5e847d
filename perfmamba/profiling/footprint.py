"""How much memory a point of a profile needs, known before it runs, and how much the device has free.

A sweep too large for the machine must be refused in one line before it starts, not grow until the kernel's OOM
killer ends it (a CPU: `--seqlens 10000000` of the tiny model filled 24 GB) or leave out-of-memory rows. So each
point's need is bounded from the model config, the batch and the length alone:

- per component, its transient peak (what the live-tensor tracker reports as `peak_bytes`: the most live above
  the component's start, its output included), for the reference ops (`perfmamba.ops`' pure-PyTorch paths),
  which hold the most: fp32 copies of their inputs, the Mamba-1 scan's (chunk, channel, state) buffers, the SSD's
  (chunk, chunk) scores. The CUDA kernels and the fused path allocate less, so there the bound errs on the safe
  side;
- per call, the activations: the residual stream and the outputs of the layer's earlier components (the mixers
  hold them as locals until they return) below the component at its peak, the largest over layers and the head;
- per point, the inputs (token ids; for decode the cache) and the activations of its largest call (decode: the
  prefill that fills the cache, or one step); before the model is loaded, its weights.
The tests hold the bounds against the tracker's measurements of both model versions.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from perfmamba.models.config import ModelConfig
from perfmamba.profiling.costs import (
    FP32_BYTES,
    INT64_BYTES,
    cache_bytes_per_sequence,
    conv_channels,
    in_proj_width,
    itemsize_of,
    parameter_count,
)

F = FP32_BYTES
# The reference ops' modules (the package exports functions of the same names), read at call time: their chunk
# and segment sizes set the scans' buffers.
_scan_op = importlib.import_module("perfmamba.ops.selective_scan")
_ssd_op = importlib.import_module("perfmamba.ops.ssd")
# cgroup v2, then v1: a container's memory limit, which /proc/meminfo does not show.
_CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)


@dataclass(frozen=True)
class Footprint:
    """An upper bound of the bytes one point needs, and what it is made of."""

    inputs: int  # token ids, and the decode cache
    activations: int  # the most live at once during a call, above the inputs (cf. `peak_activation_bytes`)
    components: dict[str, int] = field(default_factory=dict)  # transient peak of each, largest layer (decode: a step)
    weights: int = 0  # counted only where the model is not loaded yet

    @property
    def total(self) -> int:
        return self.inputs + self.activations + self.weights


def _dims(config: ModelConfig, layer: int) -> dict[str, int]:
    N = config.layer_state(layer)
    return {"N": N, "C": conv_channels(config, N), "W": in_proj_width(config, N), "d": config.d_model,
            "di": config.d_inner, "h": config.nheads if config.version == 2 else 1, "w": config.d_conv}


def _ssd_scan(config: ModelConfig, N: int, batch: int, seqlen: int, s: int) -> int:
    """`ssd_scan_ref`'s peak: its fp32 inputs repeated per head, then the largest segment (its zero-padded inputs
    and the (chunk, chunk) scores built by `_segsum`, or the chunk states and outputs after them) beside the
    outputs of the segments before it, or at the end the outputs joined and the D term."""
    b, T, di, h, p, G, Q = batch, batch * seqlen, config.d_inner, config.nheads, config.headdim, config.ngroups, \
        config.chunk_size
    cp, back = (F, s) if s != F else (0, 0)
    # x and x * dt in fp32, dt's steps, B and C per head; the state entering a segment and the one leaving it
    pre = T * di * (cp + F) + 5 * T * h * F + 2 * T * h * N * F + 2 * T * G * N * cp + 2 * b * h * p * N * F
    ys = b * math.ceil(seqlen / Q) * Q * di * F  # the segments' outputs, views of their zero-padded ends
    span = Q * max(1, _ssd_op.SEGMENT_ELEMENTS // (b * h * Q * Q))
    chunks = math.ceil(min(seqlen, span) / Q)
    Tp = chunks * Q  # a segment's padded length
    scores = b * h * chunks * Q * Q * F
    states = b * (chunks + 1) * h * p * N * F
    pads = b * Tp * (di + 2 * h * N + h) * F
    # While `_segsum` runs: the scores and its masked copies and cumulative sum. After it: the scores, the chunk
    # states (computed, joined to the entering one, passed on), y and its two terms, B and C times their decays, the
    # chunk-to-chunk decays and the per-step ones.
    during = 4 * scores
    after = (scores + 3 * states + 3 * b * Tp * di * F + 2 * b * Tp * h * N * F + 5 * b * h * (chunks + 1) ** 2 * F
             + 6 * b * Tp * h * F)
    segment = pads + max(during, after) + ys  # and the outputs of the segments before it
    return pre + max(segment, ys + 3 * T * di * F + T * di * back)  # joined, plus D * x, cast back


def component_peaks(config: ModelConfig, layer: int, *, seqlen: int, batch: int, mode: str, dtype) -> dict[str, int]:
    """Upper bounds of each component's transient peak in `layer` (and of the embedding and head), in bytes, for
    one prefill over (batch, seqlen) tokens or one decode step."""
    s = itemsize_of(dtype)
    cp, back = (F, s) if s != F else (0, 0)  # a reference op's fp32 copy of its input, and its output's cast back
    rc = F if not config.residual_in_fp32 and s != F else 0  # a residual stream in the model's dtype, in fp32
    k = _dims(config, layer)
    d, di, N, C, W, h, w = k["d"], k["di"], k["N"], k["C"], k["W"], k["h"], k["w"]
    T = batch * (seqlen if mode == "prefill" else 1)
    # `add_rms_norm_ref`: x and the residual in fp32, their sum; the mean square, its rsqrt; sum * rsqrt, times the
    # weight (in fp32); the casts back (the sum too, when the stream is not fp32)
    norm = T * d * (3 * F + cp + rc + back + (s if rc else 0)) + 3 * T * F + d * cp
    out = {"embedding": T * d * s, "norm": norm, "in_proj": T * W * s, "out_proj": T * (d + di) * s,
           "lm_head": T * config.padded_vocab_size * s}
    conv_weights = C * (w + 1) * cp  # weight and bias in fp32
    if mode == "prefill":  # the padded output, SiLU, the cast
        out["conv1d"] = T * C * (cp + 2 * F + back) + batch * C * (w - 1) * F + conv_weights
    else:  # the window (state and new input, fp32), the products, bias, SiLU
        out["conv1d"] = batch * C * (w * (F + cp) + 3 * F + cp + back) + conv_weights
    if config.version == 1:
        r = config.resolved_dt_rank
        out["x_proj"] = T * (2 * di + 2 * r + 4 * N) * s  # x_dbl, delta, contiguous B and C, input copies
    else:
        out["gated_norm"] = T * di * (4 * F + back) + 3 * T * config.ngroups * F + di * cp
    # A = -exp(A_log) (two tensors), D and the dt bias in fp32, made per call
    params = 2 * di * N * F + 3 * di * F if config.version == 1 else 5 * h * F
    if mode == "decode":  # `selective_state_update_ref`: (batch, d_inner, N) fp32 temporaries and per-channel terms
        S = batch * di * N
        G = 1 if config.version == 1 else config.ngroups
        out["ssm_scan"] = (S * (5 * F + cp) + batch * di * (8 * F + 3 * cp + back)
                           + 2 * batch * (h * N * F + G * N * cp) + params)
    elif config.version == 1:  # `selective_scan_ref`: while scanning (chunk buffers), then applying D and the gate
        chunk = 2 * min(_scan_op.CHUNK, seqlen) * batch * di * N * F
        state = batch * di * N * F
        scanning = T * di * (4 * F + cp) + 2 * T * N * (F + cp) + chunk + state
        gating = T * di * (7 * F + 2 * cp + back) + 2 * T * N * F + state
        out["ssm_scan"] = max(scanning, gating) + params
    else:
        out["ssm_scan"] = _ssd_scan(config, N, batch, seqlen, s) + params
    return out


def _retained(config: ModelConfig, layer: int, T: int, s: int) -> dict[str, int]:
    """What each mixer component leaves live until the mixer returns (its output, kept as a local)."""
    k = _dims(config, layer)
    if config.version == 1:
        return {"in_proj": T * k["W"] * s, "conv1d": T * k["di"] * s, "x_proj": T * (k["di"] + 2 * k["N"]) * s,
                "ssm_scan": T * k["di"] * s}
    return {"in_proj": T * k["W"] * s, "conv1d": T * k["C"] * s, "ssm_scan": T * k["di"] * s,
            "gated_norm": T * k["di"] * s}


def _call(config: ModelConfig, *, seqlen: int, batch: int, mode: str, dtype, with_state: bool) -> tuple[int, dict]:
    """(activations, component peaks) of one call: a prefill forward or a decode step."""
    s = itemsize_of(dtype)
    T = batch * (seqlen if mode == "prefill" else 1)
    rf = F if config.residual_in_fp32 else s
    stream = T * config.d_model * (2 * s + 2 * rf)  # the caller's hidden and residual, the new ones
    peaks: dict[str, int] = {}
    worst = 0
    for layer in range(config.n_layer):
        comps = component_peaks(config, layer, seqlen=seqlen, batch=batch, mode=mode, dtype=dtype)
        for name, value in comps.items():
            peaks[name] = max(peaks.get(name, 0), value)
        held = 0
        if with_state:  # the padded conv input copied into the cache
            held += batch * conv_channels(config, config.layer_state(layer)) * config.d_conv * s
        worst = max(worst, stream + comps["norm"])
        for name, kept in _retained(config, layer, T, s).items():
            worst = max(worst, stream + held + comps[name])
            held += kept
        worst = max(worst, stream + held + comps["out_proj"])
    final = T * config.d_model * (s + 2 * rf) + max(peaks["norm"], T * config.d_model * s + peaks["lm_head"])
    return max(worst, final, peaks["embedding"]), peaks


def weights_bytes(config: ModelConfig, dtype) -> int:
    """Bytes of the model's weights: every parameter in `dtype` except the SSM's A_log and D (and Mamba-2's dt bias)
    in fp32."""
    s = itemsize_of(dtype)
    fp32 = sum((config.d_inner * config.layer_state(i) + config.d_inner) if config.version == 1
               else 3 * config.nheads for i in range(config.n_layer))
    return parameter_count(config) * s + fp32 * max(0, F - s)


def point_footprint(config: ModelConfig, *, mode: str, seqlen: int, batch: int = 1, dtype="float32",
              weights: bool = False) -> Footprint:
    """The bound for one point of a sweep: a prefill over (batch, seqlen) tokens, or decode (a prefill of the
    prompt into the cache, then steps). `weights`: add the model's weights (not loaded yet)."""
    if mode not in ("prefill", "decode") or seqlen < 1 or batch < 1:
        raise ValueError(f"need mode prefill or decode, seqlen and batch >= 1; got {mode!r}, {seqlen}, {batch}")
    inputs = batch * seqlen * INT64_BYTES
    activations, peaks = _call(config, seqlen=seqlen, batch=batch, mode="prefill", dtype=dtype,
                               with_state=mode == "decode")
    if mode == "decode":
        inputs += batch * (cache_bytes_per_sequence(config, dtype) + INT64_BYTES)
        step, step_peaks = _call(config, seqlen=seqlen, batch=batch, mode="decode", dtype=dtype, with_state=False)
        activations, peaks = max(activations, step), step_peaks  # the components' table shows the step's
    return Footprint(inputs=inputs, activations=activations, components=peaks,
                     weights=weights_bytes(config, dtype) if weights else 0)


def longest_fitting(config: ModelConfig, *, mode: str, batch: int, dtype, budget: int, weights: bool = False) -> int:
    """The longest sequence whose point fits in `budget` bytes (0 if none): the bound grows with the length."""
    def fits(L: int) -> bool:
        return point_footprint(config, mode=mode, seqlen=L, batch=batch, dtype=dtype, weights=weights).total <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory(device: torch.device | str) -> int | None:
    """Bytes this process could still allocate on `device`: on a CPU the kernel's MemAvailable (free memory plus
    the page cache it can drop), less under a container's cgroup limit; on CUDA the driver's free memory plus what
    the caching allocator holds unused. None when the system does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)  # kB
    except (OSError, ValueError, IndexError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:  # free pages only (no reclaimable cache): lower, on the safe side
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes "no limit" as ~2^63
            found.append(max(0, limit - usage))
            break
    return min(found) if found else None


def gib(nbytes: float) -> str:
    """Bytes in the binary unit that keeps them readable (MiB, GiB or TiB)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes / 2**20:.3g} MiB"


class MemoryPlanError(ValueError):
    """A planned point cannot fit in the device's memory; the message names it, its need and what is free."""


def check_fits(config: ModelConfig, points: list[tuple[str, int, int]], *, dtype, device: torch.device | str,
               name: str, weights: bool, available: int | None = None) -> None:
    """Raise `MemoryPlanError` (one line) if any (mode, batch, seqlen) of `points` needs more than the device has
    free (`available`, default `available_memory(device)`): every point is checked before the first runs."""
    available = available_memory(device) if available is None else available
    if available is None:
        return
    over = []
    for mode, batch, seqlen in points:
        need = point_footprint(config, mode=mode, seqlen=seqlen, batch=batch, dtype=dtype, weights=weights)
        if need.total > available:
            over.append((mode, batch, seqlen, need))
    if not over:
        return
    mode, batch, seqlen, need = min(over, key=lambda o: o[3].total)
    parts = f"{gib(need.activations)} of activations, {gib(need.inputs)} of inputs" + (
        f", {gib(need.weights)} of weights" if need.weights else "")
    longest = longest_fitting(config, mode=mode, batch=batch, dtype=dtype, budget=available, weights=weights)
    hint = f"the longest {mode} at batch {batch} that fits is L={longest}" if longest else \
        f"not even L=1 fits at batch {batch}"
    more = {0: "", 1: " (1 more point does not fit either)"}.get(len(over) - 1,
                                                                  f" ({len(over) - 1} more points do not fit either)")
    raise MemoryPlanError(
        f"{name}: {mode} batch {batch} L={seqlen} needs up to {gib(need.total)} ({parts}), more than the "
        f"{gib(available)} available on {torch.device(device).type}{more}; {hint}"
    )
