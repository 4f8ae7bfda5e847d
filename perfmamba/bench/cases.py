"""The one definition of benchmark cases: what the pytest-benchmark suite, the asv suite and the results scripts
measure (model version x preset x sequence length x batch x prune ratio x criterion, per level and mode).

A `Case` is one measured configuration; its `id` is stable (pytest ids, asv names and result files use it, and
the regression gate matches base and PR runs by it). A `Grid` spans cases over a few axes; `GRIDS` holds the
named ones: `quick` (CPU CI, tiny byte-level presets), `gpu` (the GPU pull-request gate) and `full` (the GPU
sweep over published model shapes, spread over a host's GPUs with pytest-xdist).

Levels: "op" (the SSM scan alone), "block" (pre-norm + mixer), "model" (the language model) and "vs_mamba_ssm"
(our model against mamba-ssm's `MambaLMHeadModel` with the same weights, timed interleaved in one process: a GPU
level, dense only, at the few shapes of a grid's `reference_points`).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from perfmamba.checks import check_at_least, check_choice
from perfmamba.models.components import MODES
from perfmamba.models.config import PRESETS
from perfmamba.pruning.config import check_ratio
from perfmamba.pruning.criteria import get_criterion

Level = Literal["op", "block", "model", "vs_mamba_ssm"]
Mode = Literal["prefill", "decode"]
# Our model against mamba-ssm's with the same weights (perfmamba.bench.reference_model).
REFERENCE_LEVEL = "vs_mamba_ssm"
LEVELS: tuple[str, ...] = ("op", "block", "model", REFERENCE_LEVEL)
DTYPES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The criterion of a dense case, and of op-level cases, whose pruned shapes do not depend on which states go.
NO_CRITERION = "none"
ENV_VAR = "PERFMAMBA_GRID"


def kept_states(preset: str, ratio: float) -> int:
    """States a layer of `preset` keeps under uniform pruning at `ratio`: perfmamba.pruning's count (the
    paper's floor(N (1 - r)), rounded up to what mamba-ssm's kernels accept: a multiple of 4 for Mamba-2)."""
    from perfmamba.pruning.config import kept_count, legal_multiple

    config = PRESETS[preset]
    return kept_count(config.d_state, ratio, legal_multiple(config))


@dataclass(frozen=True, order=True)
class Case:
    """One benchmark configuration. `seqlen` is the prompt length for decode cases (a decode step costs the same
    at any context length; the prompt only fills the cache)."""

    preset: str
    level: Level = "model"
    mode: Mode = "prefill"
    seqlen: int = 256
    batch: int = 1
    ratio: float = 0.0
    criterion: str = NO_CRITERION
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        check_choice("level", self.level, LEVELS)
        check_choice("mode", self.mode, MODES)
        check_choice("dtype", self.dtype, DTYPES)
        for name in ("seqlen", "batch"):
            check_at_least(name, getattr(self, name))
        check_ratio(self.ratio)
        object.__setattr__(self, "ratio", float(self.ratio))
        # A dense model has no criterion and an op-level case none that changes its shapes: normalising here keeps
        # one id per distinct measurement.
        if self.level == REFERENCE_LEVEL and self.ratio > 0.0:
            raise ValueError(f"a {REFERENCE_LEVEL} case compares dense models; got ratio {self.ratio}")
        if self.ratio == 0.0 or self.level == "op":
            object.__setattr__(self, "criterion", NO_CRITERION)
        elif self.criterion == NO_CRITERION:
            raise ValueError(f"a pruned {self.level}-level case (ratio {self.ratio}) needs a criterion")
        else:
            get_criterion(self.criterion)

    @property
    def version(self) -> int:
        return PRESETS[self.preset].version

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, DTYPES[self.dtype])

    @property
    def pruned(self) -> bool:
        return self.ratio > 0.0

    @property
    def d_state(self) -> int:
        """The (uniform) number of states this case runs with."""
        return kept_states(self.preset, self.ratio)

    @property
    def id(self) -> str:
        return (
            f"{self.preset}-{self.level}-{self.mode}-L{self.seqlen}-b{self.batch}"
            f"-r{self.ratio:g}-{self.criterion}-{self.dtype}"
        )

    def dense(self) -> Case:
        """The same configuration unpruned: the baseline of a speedup."""
        return replace(self, ratio=0.0, criterion=NO_CRITERION)

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class Grid:
    """Cases spanned by axes. Timing cases prune with `criteria[0]` (with uniform allocation every criterion gives
    the same shapes, hence the same time); perplexity cases span every criterion (`perfmamba.pruning.CRITERIA`
    names)."""

    name: str
    presets: tuple[str, ...]
    prefill_seqlens: tuple[int, ...]
    decode_seqlens: tuple[int, ...]  # prompt lengths before the timed decode step
    prefill_batches: tuple[int, ...]
    decode_batches: tuple[int, ...]
    ratios: tuple[float, ...]
    criteria: tuple[str, ...]
    dtype: str = "fp32"
    levels: tuple[str, ...] = LEVELS
    modes: tuple[str, ...] = MODES
    # The vs_mamba_ssm level: (mode, seqlen, batch) points, each for every preset, dense.
    reference_points: tuple[tuple[str, int, int], ...] = ()
    # Perplexity: trained byte-level presets, evaluated at one context length.
    quality_presets: tuple[str, ...] = ()
    quality_seqlen: int = 256
    # Timing: measured rounds after warm-up rounds, per case.
    rounds: int = 20
    warmup: int = 3
    # On a GPU, time each case as CUDA-graph replays (perfmamba.timing); False: events around eager calls.
    graph: bool = True
    # torch intra-op threads on a CPU (None: torch's default). Tiny CPU workloads are timed on one thread: with a
    # thread pool, one worker preempted by another process stalls every parallel region (100x slower calls on
    # a loaded 2-core machine), so the timings would measure the OS scheduler.
    cpu_threads: int | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if 0.0 not in self.ratios:
            raise ValueError(f"grid {self.name!r} needs ratio 0 (the dense baseline), got ratios {self.ratios}")
        for ratio in self.ratios:
            check_ratio(ratio)
        if not self.criteria:
            raise ValueError(f"grid {self.name!r} needs at least one criterion")
        for point in self.reference_points:
            if len(point) != 3:
                raise ValueError(f"grid {self.name!r}: a reference point is (mode, seqlen, batch), got {point!r}")
            check_choice(f"grid {self.name!r}: reference point mode", point[0], MODES)
            check_at_least(f"grid {self.name!r}: reference point seqlen", point[1])
            check_at_least(f"grid {self.name!r}: reference point batch", point[2])

    def seqlens(self, mode: str, level: str | None = None) -> tuple[int, ...]:
        if level == REFERENCE_LEVEL:
            return tuple(dict.fromkeys(s for m, s, _ in self.reference_points if m == mode))
        return self.prefill_seqlens if mode == "prefill" else self.decode_seqlens

    def batches(self, mode: str, level: str | None = None) -> tuple[int, ...]:
        if level == REFERENCE_LEVEL:
            return tuple(dict.fromkeys(b for m, _, b in self.reference_points if m == mode))
        return self.prefill_batches if mode == "prefill" else self.decode_batches

    def _timing(self, level: str, mode: str) -> Iterator[Case]:
        if level == REFERENCE_LEVEL:
            for preset in self.presets:
                for md, seqlen, batch in self.reference_points:
                    if md == mode:
                        yield Case(preset, level, mode, seqlen, batch, 0.0, NO_CRITERION, self.dtype)
            return
        # Preset and ratio outermost: consecutive cases share one built (and pruned) model.
        for preset, ratio in itertools.product(self.presets, self.ratios):
            for seqlen, batch in itertools.product(self.seqlens(mode), self.batches(mode)):
                yield Case(preset, level, mode, seqlen, batch, ratio, self.criteria[0], self.dtype)

    def cases(self, level: str | None = None, mode: str | None = None) -> tuple[Case, ...]:
        """Timing cases, optionally of one level and/or mode."""
        if level is not None:
            check_choice("level", level, LEVELS)
        if mode is not None:
            check_choice("mode", mode, MODES)
        out: list[Case] = []
        for lv in self.levels:
            for md in self.modes:
                if level in (None, lv) and mode in (None, md):
                    out.extend(self._timing(lv, md))
        return tuple(dict.fromkeys(out))

    def quality_cases(self) -> tuple[Case, ...]:
        """Model-level prefill cases of trained presets: dense plus every ratio x criterion (those defined for
        the preset's Mamba version)."""
        from perfmamba.pruning.criteria import criteria_for

        out = []
        for preset in self.quality_presets:
            criteria = [c for c in self.criteria if c in criteria_for(PRESETS[preset].version)]
            for ratio in self.ratios:
                for criterion in criteria if ratio > 0 else (NO_CRITERION,):
                    out.append(Case(preset, "model", "prefill", self.quality_seqlen, 1, ratio, criterion, "fp32"))
        return tuple(out)

    @functools.cached_property
    def _all(self) -> frozenset[Case]:
        return frozenset(self.cases() + self.quality_cases())

    def __contains__(self, case: object) -> bool:
        return case in self._all


GRIDS: dict[str, Grid] = {
    "quick": Grid(
        name="quick",
        description="CPU CI subset: tiny byte-level models, dense vs half pruned, about a minute on 2 cores",
        presets=("mamba1-tiny", "mamba2-tiny"),
        prefill_seqlens=(256,),
        decode_seqlens=(64,),
        # Batches large enough that the state dimension, not per-op overhead, sets the time of the reference
        # kernels: at batch 2 a 50% pruned Mamba-1 scan is only ~5% faster on a CPU, at batch 8 ~25%.
        prefill_batches=(8,),
        decode_batches=(64,),
        ratios=(0.0, 0.5),
        criteria=("contribution",),
        dtype="fp32",
        # Listed so that CPU CI runs the level's plumbing; every case skips there (mamba-ssm needs CUDA).
        reference_points=(("prefill", 256, 8), ("decode", 64, 64)),
        quality_presets=("mamba1-tiny", "mamba2-tiny"),
        quality_seqlen=256,
        rounds=25,
        warmup=3,
        cpu_threads=1,
    ),
    "gpu": Grid(
        name="gpu",
        description="GPU pull-request gate: 130m shapes, L 2048 and 8192 at batch 4, decode at batch 64, ratios "
                    "0 / 0.5 / 0.9, every case a CUDA-graph replay sized so that the GPU sets the pace",
        presets=("mamba1-130m", "mamba2-130m"),
        prefill_seqlens=(2048, 8192),
        decode_seqlens=(512,),
        # Batch 4: at batch 1 a 130m forward is launch time (~17 ms at L 2048 and 8192 alike when eager); as a
        # graph at batch 4 the GPU's work sets each number (eager / graph per case: docs/results/gate_quality.md).
        prefill_batches=(4,),
        decode_batches=(64,),
        ratios=(0.0, 0.5, 0.9),
        criteria=("contribution",),
        dtype="bf16",
        # Issue 15's shapes. A prefill b8 L8192 call takes ~0.08 s on an H200, a round two of them (ours and
        # mamba-ssm's): the two prefill cases add ~10 s per preset with the models built, decode ~1 s.
        reference_points=(("prefill", 8192, 8), ("decode", 512, 64)),
        quality_presets=("mamba1-tiny", "mamba2-tiny"),
        quality_seqlen=256,
        # A round replays >= 1 ms of calls, and replays repeat within ~0.3% in a process: few rounds suffice.
        rounds=12,
        warmup=2,
    ),
    "full": Grid(
        name="full",
        description="GPU sweep: published Mamba-1 / Mamba-2 shapes, L 512..16384, ratios 0..0.9, every criterion",
        presets=("mamba1-130m", "mamba1-1.4b", "mamba2-130m", "mamba2-1.3b"),
        prefill_seqlens=(512, 1024, 2048, 4096, 8192, 16384),
        decode_seqlens=(512,),
        prefill_batches=(1, 8),
        decode_batches=(1, 64),
        ratios=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
        criteria=("contribution", "energy", "delta", "gramian", "A", "weight", "random"),
        dtype="bf16",
        reference_points=(("prefill", 8192, 8), ("decode", 512, 64)),
        quality_presets=("mamba1-small", "mamba2-small"),
        quality_seqlen=512,
        rounds=50,
        warmup=10,
    ),
}


def default_grid_name() -> str:
    """$PERFMAMBA_GRID if set, else "gpu" on a CUDA machine and "quick" on a CPU."""
    name = os.environ.get(ENV_VAR)
    if name:
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "quick"


def get_grid(name: str | None = None) -> Grid:
    """A named grid (default: `default_grid_name()`)."""
    name = name or default_grid_name()
    try:
        return GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark grid {name!r}; choose one of: {', '.join(GRIDS)}") from None
