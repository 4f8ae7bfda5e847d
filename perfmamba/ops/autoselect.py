"""Backend "fastest": per call shape, whichever registered backend measured fastest on that shape.

The rule: on the first call for a key (op, every tensor's shape, stride, dtype and device, the other arguments'
values), each available candidate is timed on the call's own tensors (clones of those the op writes in place) by
`device_seconds`: on a GPU, CUDA-graph replay with the L2 flushed, as perfmamba times everything; the lowest median
wins (ties: the earlier candidate), is cached for the key, and every later call with that key dispatches to it. A
first call inside a CUDA-graph capture cannot be timed: it runs the first available candidate, uncached, and warns
once.

Timed eagerly instead (CUDA events around one launch), the host's wrapper and launch, not the kernel, decided the
choice (docs/results/state_update.md has the numbers).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from perfmamba.ops import state_update_triton  # noqa: F401 - registers the "triton" candidate
from perfmamba.ops.registry import BackendUnavailableError, register, resolve, unavailable_reason
from perfmamba.timing import time_fn

Timer = Callable[[Callable[[], object], torch.device, int], float]


def device_seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median seconds per call of `fn` over `reps` rounds after one warm-up round (which compiles), by
    `perfmamba.timing.time_fn`: on a GPU, several calls captured into a CUDA graph and replayed, the L2 flushed
    before each call, so that a launch-bound host does not set the number (where capture fails it falls back to
    events around eager calls, as everywhere in perfmamba); perf_counter on a CPU."""
    return time_fn(fn, device, rounds=reps, warmup=1).median


def _describe(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.stride(), value.dtype, value.device)
    return value if value is None or isinstance(value, (bool, int, float, str)) else type(value).__name__


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class Fastest:
    """The "fastest" backend of `op` over `candidates` (backend names, in order of preference). `mutated`: the
    positions of the arguments the op writes in place (cloned for the timing runs)."""

    def __init__(self, op: str, candidates: Sequence[str], *, mutated: Sequence[int] = (), reps: int = 5,
                 timer: Timer = device_seconds) -> None:
        if not candidates:
            raise ValueError(f"Fastest needs at least one candidate backend for {op}, got none")
        self.op, self.candidates, self.mutated = op, tuple(candidates), tuple(mutated)
        self.reps, self.timer = reps, timer
        self.choices: dict[tuple, tuple[str, Callable]] = {}
        self.timings: dict[tuple, dict[str, float]] = {}  # what each choice was made on, for reports
        self._warned = False

    def available(self) -> str | None:
        """None when at least one candidate can run here (for the registry), else every candidate's reason."""
        reasons = {c: unavailable_reason(self.op, c) for c in self.candidates}
        return None if None in reasons.values() else "; ".join(f"{c}: {r}" for c, r in reasons.items())

    def _runnable(self, tensors: list[torch.Tensor]) -> dict[str, Callable]:
        out = {}
        for name in self.candidates:
            try:
                out[name] = resolve(self.op, name, *tensors)[1]
            except BackendUnavailableError:
                continue
        if not out:
            raise BackendUnavailableError(f"no candidate of 'fastest' for {self.op} can run here: {self.available()}")
        return out

    def __call__(self, *args, **kwargs):
        key = (tuple(_describe(a) for a in args), tuple(sorted((k, _describe(v)) for k, v in kwargs.items())))
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        chosen = self.choices.get(key)
        if chosen is None:
            runnable = self._runnable(tensors)
            if _capturing():
                name = next(iter(runnable))
                if not self._warned:
                    warnings.warn(f"'fastest' {self.op}: first call for this shape inside a CUDA-graph capture "
                                  f"cannot be timed; running {name!r} (call once before capturing)", stacklevel=2)
                    self._warned = True
                return runnable[name](*args, **kwargs)
            chosen = self._measure(key, runnable, args, kwargs, tensors[0].device if tensors else torch.device("cpu"))
        return chosen[1](*args, **kwargs)

    def _measure(self, key: tuple, runnable: dict[str, Callable], args: tuple, kwargs: dict,
                 device: torch.device) -> tuple[str, Callable]:
        seconds = {}
        for name, fn in runnable.items():
            trial = [a.clone() if i in self.mutated and isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
            seconds[name] = self.timer(lambda fn=fn, trial=trial: fn(*trial, **kwargs), device, self.reps)
        name = min(seconds, key=seconds.get)  # min keeps the first of equal times: the preferred candidate
        self.choices[key], self.timings[key] = (name, runnable[name]), seconds
        return self.choices[key]


def register_fastest(op: str, candidates: Sequence[str], *, cuda_auto: bool = False, **options) -> Fastest:
    """Register backend "fastest" of `op` over `candidates`; returns it (its `choices` say what it picked).
    `cuda_auto`: make it what "auto" runs for CUDA tensors."""
    fastest = Fastest(op, candidates, **options)
    register(op, "fastest", fastest, availability=fastest.available, cuda_auto=cuda_auto)
    return fastest


# The decode step's default on a GPU: mamba-ssm's kernel or ours, whichever this shape runs faster (ours ran 1.7x
# faster at N = 128 after the tile sweep of docs/results/state_update.md; mamba-ssm's can win elsewhere).
STATE_UPDATE = register_fastest("selective_state_update", ("cuda", "triton"), mutated=(0,), cuda_auto=True)
