"""Calibration: run the model over tokens and collect, per layer and state, what the criteria score.

A forward pre-hook on each mixer takes its input, recomputes the scan's inputs (`mixer.scan_inputs`) and runs
the recurrence over time in chunks, adding per-state sums into float64 accumulators. Memory is bounded by one
chunk of states (`chunk_elements`), whatever the number of batches or their length; every statistic is a sum, so
two calibrations over halves of the data add up to one over the whole.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from perfmamba.models.common import MixerBase
from perfmamba.models.config import ModelConfig
from perfmamba.pruning import layout

# Elements of the largest per-chunk tensor of states (b, Q, units, per_unit, N): 16M fp32 is 64 MiB.
CHUNK_ELEMENTS = 1 << 24


class NoSSMLayersError(ValueError):
    """The model has no Mamba-1 / Mamba-2 mixer to prune."""


@dataclass
class LayerStats:
    """Sums over every calibration token (b, t) of one layer, in float64 on the CPU.

    Units are Mamba-1's channels or Mamba-2's heads (see `layout`); `per_unit` elements of h per unit and state.
    h2[u, n] = sum h^2, ch2[u, n] = sum (C_n h_n)^2 (both also summed over the per_unit elements),
    decay2[u, n] = sum exp(2 dt_u A_un), delta[u] = sum dt_u, delta_absB[u, n] = sum dt_u |B_n|,
    B2 / C2[g, n] = sum B_n^2 / C_n^2. Static, from the weights: A_abs (units, N or 1) = |A|, and the norms of
    the projection rows that compute B and C, B_weight / C_weight (ngroups, N)."""

    version: int
    ngroups: int
    units: int
    per_unit: int
    d_state: int
    tokens: int = 0
    h2: Tensor | None = None
    ch2: Tensor | None = None
    decay2: Tensor | None = None
    delta: Tensor | None = None
    delta_absB: Tensor | None = None
    B2: Tensor | None = None
    C2: Tensor | None = None
    A_abs: Tensor = field(default_factory=lambda: torch.empty(0))
    B_weight: Tensor = field(default_factory=lambda: torch.empty(0))
    C_weight: Tensor = field(default_factory=lambda: torch.empty(0))

    def __post_init__(self) -> None:
        U, N, G = self.units, self.d_state, self.ngroups
        z = torch.zeros
        for name, shape in (("h2", (U, N)), ("ch2", (U, N)), ("decay2", (U, N)), ("delta", (U,)),
                            ("delta_absB", (U, N)), ("B2", (G, N)), ("C2", (G, N))):
            if getattr(self, name) is None:
                setattr(self, name, z(shape, dtype=torch.float64))

    @property
    def units_per_group(self) -> int:
        return self.units // self.ngroups

    def group_mean(self, x: Tensor) -> Tensor:
        """(units, N) -> (ngroups, N): the mean over each group's units."""
        return x.reshape(self.ngroups, self.units_per_group, -1).mean(1)

    def mean(self, name: str) -> Tensor:
        """A sum statistic divided by its number of terms (tokens, times per_unit for the h statistics)."""
        if self.tokens == 0:
            raise ValueError(f"no calibration tokens were seen, so E[{name}] is undefined")
        per = self.per_unit if name in ("h2", "ch2") else 1
        return getattr(self, name) / (self.tokens * per)

    @classmethod
    def of(cls, mixer: MixerBase) -> LayerStats:
        proj, b_rows, c_rows = layout.state_rows(mixer)
        w = proj.weight.detach().float()
        norms = w.norm(dim=1).cpu().double()
        return cls(
            version=mixer.version, ngroups=layout.ngroups(mixer), units=layout.units(mixer),
            per_unit=layout.per_unit(mixer), d_state=mixer.d_state,
            A_abs=layout.decay_magnitude(mixer).cpu().double(),
            B_weight=norms[b_rows], C_weight=norms[c_rows],
        )

    def add(self, s: layout.ScanStream, chunk_elements: int = CHUNK_ELEMENTS) -> None:
        """Add the statistics of one batch of scan inputs, running the recurrence from h = 0."""
        b, L, U = s.delta.shape
        P, G, N = s.x.shape[-1], self.ngroups, self.d_state
        if (U, P, N) != (self.units, self.per_unit, s.B.shape[-1]) or N != self.d_state:
            raise ValueError(f"scan inputs of shape units={U}, per_unit={P}, N={s.B.shape[-1]} do not match the "
                             f"layer's units={self.units}, per_unit={self.per_unit}, N={self.d_state}")
        upg = U // G

        def acc(name: str, value: Tensor) -> None:
            getattr(self, name).add_(value.double().cpu())

        # Units split into (group, unit in group), so B and C broadcast over a group's units without copies.
        delta = s.delta.reshape(b, L, G, upg)
        acc("delta", s.delta.sum((0, 1)))
        acc("delta_absB", torch.einsum("blgu,blgn->gun", delta, s.B.abs()).reshape(U, N))
        acc("B2", s.B.square().sum((0, 1)))
        acc("C2", s.C.square().sum((0, 1)))
        A = s.A.reshape(G, upg, 1, s.A.shape[-1])  # (G, upg, 1, N or 1)
        # Time-major copies, so that each step of the loop reads and writes one contiguous block.
        delta_t = delta.transpose(0, 1).contiguous()  # (L, b, G, upg)
        dx_t = (s.delta[..., None] * s.x).transpose(0, 1).reshape(L, b, G, upg, P, 1)
        B_t = s.B.transpose(0, 1).reshape(L, b, G, 1, 1, N)
        C2_t = s.C.square().transpose(0, 1).contiguous()  # (L, b, G, N)
        h = s.x.new_zeros(b, G, upg, P, N)
        Q = max(1, min(L, chunk_elements // max(1, b * U * P * N)))
        h2 = s.x.new_zeros(G, upg, N)
        ch2 = s.x.new_zeros(G, upg, N)
        decay2 = s.x.new_zeros(G, upg, N)
        for t0 in range(0, L, Q):
            t1 = min(L, t0 + Q)
            dA = torch.exp(delta_t[t0:t1, :, :, :, None, None] * A)  # (q, b, G, upg, 1, N or 1)
            decay2 += dA.square().sum((0, 1, 4)).expand(G, upg, N)
            # hs starts as the input term dt * x * B of each step and becomes the state after the loop.
            hs = torch.mul(dx_t[t0:t1], B_t[t0:t1])  # (q, b, G, upg, P, N)
            for q in range(t1 - t0):
                hs[q].addcmul_(dA[q], h)
                h = hs[q]
            h = h.clone()  # the next chunk starts here; hs is squared in place below
            hs2 = hs.square_()
            h2 += hs2.sum((0, 1, 4))
            # sum over (q, b, p) of h^2 C^2 as one contraction, not another pass through a temporary
            ch2 += torch.einsum("qbgupn,qbgn->gun", hs2, C2_t[t0:t1])
        acc("h2", h2.reshape(U, N))
        acc("ch2", ch2.reshape(U, N))
        acc("decay2", decay2.reshape(U, N))
        self.tokens += b * L


@dataclass
class CalibrationStats:
    """Per-layer statistics of one calibration run (`calibrate`)."""

    config: ModelConfig
    layers: list[LayerStats]
    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0
    seq_len: int = 0  # the longest calibration row seen: how far back any state's memory was exercised

    @property
    def version(self) -> int:
        return self.config.version


def mixers_of(model: nn.Module) -> list[MixerBase]:
    """The SSM mixers of `model`, in layer order; raises NoSSMLayersError if there are none."""
    mixers = [m for m in model.modules() if isinstance(m, MixerBase)]
    if not mixers:
        raise NoSSMLayersError(
            f"{type(model).__name__} has no SSM layers to prune (no Mamba1Mixer or Mamba2Mixer modules); "
            "pass a perfmamba MambaLM (perfmamba.build_model / load_model)"
        )
    return mixers


def iter_batches(
    calibration: Tensor | Iterable[Tensor], batch_size: int = 8, seq_len: int = 256, max_batches: int | None = None
) -> Iterator[Tensor]:
    """Token batches (b, L) from a 1-D token stream (cut into rows of `seq_len`, `batch_size` rows a batch),
    a 2-D (rows, L) tensor (`batch_size` rows a batch) or an iterable of 1-D / 2-D tensors (as they come)."""
    if isinstance(calibration, Tensor):
        if calibration.dim() == 1:
            n = calibration.numel() // seq_len
            rows = calibration[: n * seq_len].reshape(n, seq_len) if n else calibration.reshape(1, -1)
        elif calibration.dim() == 2:
            rows = calibration
        else:
            raise ValueError(f"calibration tokens must be 1-D or 2-D, got shape {tuple(calibration.shape)}")
        source: Iterable[Tensor] = rows.split(batch_size)
    else:
        source = calibration
    count = 0
    for batch in source:
        if max_batches is not None and count >= max_batches:
            return
        if not isinstance(batch, Tensor):
            raise TypeError(f"calibration batches must be token tensors, got {type(batch).__name__}")
        if batch.dim() == 1:
            batch = batch[None]
        if batch.dim() != 2:
            raise ValueError(f"a calibration batch must be (batch, seq_len) tokens, got shape {tuple(batch.shape)}")
        if batch.numel() == 0:
            continue
        count += 1
        yield batch


def _check_tokens(batch: Tensor, config: ModelConfig) -> None:
    if batch.dtype.is_floating_point or batch.dtype.is_complex or batch.dtype == torch.bool:
        raise TypeError(f"calibration tokens must be integer ids, got dtype {batch.dtype}")
    lo, hi = int(batch.min()), int(batch.max())
    if lo < 0 or hi >= config.padded_vocab_size:
        raise ValueError(
            f"calibration token ids must be in [0, {config.padded_vocab_size}) for this model, got [{lo}, {hi}]"
        )


def _total(calibration, batch_size: int, seq_len: int, max_batches: int | None) -> int | None:
    if isinstance(calibration, Tensor):
        rows = calibration.shape[0] if calibration.dim() == 2 else max(1, calibration.numel() // seq_len)
        n = -(-rows // batch_size)
    elif hasattr(calibration, "__len__"):
        n = len(calibration)
    else:
        return max_batches
    return n if max_batches is None else min(n, max_batches)


def calibrate(
    model: nn.Module,
    calibration: Tensor | Iterable[Tensor] | None,
    *,
    batch_size: int = 8,
    seq_len: int = 256,
    max_batches: int | None = None,
    progress: bool | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> CalibrationStats:
    """Run `model` over `calibration` tokens and collect per-layer, per-state statistics (`LayerStats`).

    `calibration`: a 1-D token stream, a 2-D (rows, seq_len) tensor or an iterable of token batches; None
    collects only the static statistics (weights), enough for the data-free criteria. Works on any device the
    model is on; the sums live on the CPU. `progress`: a tqdm bar (None: when stderr is a terminal)."""
    mixers = mixers_of(model)
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"expected a perfmamba MambaLM with a ModelConfig, got {type(model).__name__}")
    layers = [LayerStats.of(m) for m in mixers]
    stats = CalibrationStats(config=config, layers=layers)
    if calibration is None:
        return stats
    device = next(model.parameters()).device

    def hook(i: int):
        def pre_hook(mixer: MixerBase, args: tuple) -> None:
            layers[i].add(layout.scan_stream(mixer, args[0]), chunk_elements)

        return pre_hook

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(mixers)]
    start = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        batches = iter_batches(calibration, batch_size, seq_len, max_batches)
        bar = tqdm(batches, total=_total(calibration, batch_size, seq_len, max_batches), disable=not show,
                   desc="calibrating", unit="batch")
        with torch.inference_mode():
            for batch in bar:
                _check_tokens(batch, config)
                model(batch.to(device))
                stats.batches += 1
                stats.tokens += batch.numel()
                stats.seq_len = max(stats.seq_len, batch.shape[1])
    finally:
        for h in handles:
            h.remove()
    if stats.batches == 0:
        raise ValueError("calibration data has no tokens")
    stats.seconds = time.perf_counter() - start
    return stats
