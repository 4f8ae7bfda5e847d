"""What a profile sweeps and how it measures: `ProfileConfig`, validated once here and resolved per device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from perfmamba.checks import check_at_least, check_choice, check_in_range
from perfmamba.models.components import MODES

CPU_SEQLENS = (64, 128, 256, 512, 1024)
GPU_SEQLENS = tuple(2**i for i in range(6, 15))  # 64 .. 16384, the paper's range
PATHS = ("unfused", "fused")
DECODE_TIMINGS = ("graph", "eager")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ProfileConfig:
    """What to sweep and how to measure. `None` fields are resolved per device by `resolved()`: seqlens 64..16384
    on CUDA, 64..1024 on a CPU; dtype bfloat16 on CUDA, float32 on a CPU; rounds 20 / 5 and warm-up 5 / 1;
    kernel attribution on CUDA only."""

    seqlens: tuple[int, ...] | None = None
    batch_sizes: tuple[int, ...] = (1,)
    modes: tuple[str, ...] = ("prefill", "decode")
    paths: tuple[str, ...] = ("unfused",)  # "unfused" (one span per component) and/or "fused" (CUDA)
    device: str | None = None  # None: "cuda" when available, else "cpu"
    dtype: str | None = None
    backend: str = "auto"  # ops backend for every layer (see perfmamba.ops)
    rounds: int | None = None  # at least this many timed rounds per call...
    warmup: int | None = None
    min_time_s: float = 0.25  # ...and more for fast calls, until the timed rounds take this long (<= 10x rounds)
    kernel_attribution: bool | None = None  # torch.profiler pass per point
    profiler_runs: int = 3
    cuda_graphs: bool = False  # also time the prefill replayed from a CUDA graph
    # On CUDA, where the decode step's times come from: "graph" replays the step from a CUDA graph, its total and
    # its components' kernel times (what a server that graphs its step pays); "eager" launches it from Python,
    # where at small batch every kernel waits for its launch and the shares measure the host.
    decode_timing: str = "graph"
    memory: bool = True
    count_flops: bool = True  # flop_counter check at the first point of each series
    roofline: bool = True  # measure the device's peaks (once per process)
    launch_bound_threshold: float = 0.7  # busy / wall below this: launch-bound
    budget_s: float | None = None  # stop starting points after this many seconds
    # torch intra-op threads on a CPU (None: leave torch's setting). One by default, as the benchmark suite: a
    # profile comparable across machines, and immune to oversubscription (two threads on a loaded 2-core VM took
    # 95 s for the default tiny profile, one thread 13 s).
    cpu_threads: int | None = 1
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("seqlens", "batch_sizes", "modes", "paths"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.seqlens is not None and (not self.seqlens or min(self.seqlens) < 1):
            raise ValueError(f"seqlens must be a non-empty list of lengths >= 1, got {self.seqlens}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes must be a non-empty list of sizes >= 1, got {self.batch_sizes}")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"modes must be among {MODES}, got {mode!r}")
        if not self.modes:
            raise ValueError(f"modes must name at least one of {MODES}")
        for path in self.paths:
            if path not in PATHS:
                raise ValueError(f"paths must be among {PATHS}, got {path!r}")
        if not self.paths:
            raise ValueError(f"paths must name at least one of {PATHS}")
        check_choice("decode_timing", self.decode_timing, DECODE_TIMINGS)
        if self.device is not None and torch.device(self.device).type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.dtype is not None:
            check_choice("dtype", self.dtype, DTYPES)
        if self.rounds is not None:
            check_at_least("rounds", self.rounds, integer=False)
        check_at_least("warmup", self.warmup, 0, optional=True)
        check_at_least("min_time_s", self.min_time_s, 0, integer=False)
        check_at_least("profiler_runs", self.profiler_runs)
        check_in_range("launch_bound_threshold", self.launch_bound_threshold, 0, 1, closed="(]")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")
        check_at_least("cpu_threads", self.cpu_threads, optional=True)

    def resolved(self) -> ProfileConfig:
        """A copy with every `None` filled in for the device it will run on."""
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device")
        cuda = torch.device(device).type == "cuda"
        return dataclasses.replace(
            self,
            device=device,
            seqlens=tuple(sorted(set(self.seqlens or (GPU_SEQLENS if cuda else CPU_SEQLENS)))),
            batch_sizes=tuple(sorted(set(self.batch_sizes))),
            dtype=self.dtype or ("bfloat16" if cuda else "float32"),
            rounds=self.rounds or (20 if cuda else 5),
            warmup=self.warmup if self.warmup is not None else (5 if cuda else 1),
            kernel_attribution=cuda if self.kernel_attribution is None else self.kernel_attribution,
        )


