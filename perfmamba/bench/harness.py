"""Running a case under pytest-benchmark without giving up correct GPU timing, and recording the results.

pytest-benchmark times `target()` with a host clock and has no notion of CUDA streams or graphs. `measure()` hands
it a `perfmamba.timing` timer as the target (on a GPU one round replays the case's CUDA graph between two events)
and the timer's `prepare` plus any interleaved baselines as the untimed `setup`: every round starts on an idle GPU
and ends with the GPU drained, so pytest-benchmark's `stats` are host wall times per round, and the device times of
the same rounds land in `extra_info["samples_s"]` (with `extra_info["clock"]`, `["l2"]`, `["host_timed"]`). The
gate reads `extra_info["samples_s"]` where present (`perfmamba compare` does) and `stats.data` otherwise. On a CPU
both are perf_counter times of the same calls.

Under pytest-xdist pytest-benchmark disables itself (it refuses to time in parallel); `measure()` then runs the
same rounds itself, and `Recorder` is what keeps the results: each test adds a record, workers ship theirs to
the controller, which writes one file in pytest-benchmark's JSON layout (`benchmarks[].stats.data` and
`extra_info`) plus our `schema_version`, `kind` and `environment` (`perfmamba.results.write_json`).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

import torch

from perfmamba.bench.cases import Case
from perfmamba.results import gpu_identity
from perfmamba.timing import Samples, Timer, make_timer, shared_pool

RESULT_KIND = "benchmark"


def measure(
    benchmark: Any | None, subject: Callable[[], object], device: torch.device, *, rounds: int, warmup: int,
    baselines: Mapping[str, Callable[[], object]] | None = None, graph: bool = True,
) -> tuple[Samples, dict[str, Samples]]:
    """Time `subject` (through pytest-benchmark's `benchmark` fixture when it is enabled) and, interleaved with
    it round by round, each of `baselines`; on a GPU as CUDA-graph replays where `graph` and the calls can be
    captured. Returns (subject samples, baseline samples by name)."""
    pool = shared_pool(device)  # the subject and its baselines on the same activation addresses
    timer: Timer = make_timer(subject, device, graph=graph, pool=pool)
    others = {name: make_timer(fn, device, graph=graph, pool=pool) for name, fn in (baselines or {}).items()}

    def setup() -> None:
        for other in others.values():
            other.round()
        timer.prepare()

    if benchmark is not None and not getattr(benchmark, "disabled", False):
        benchmark.pedantic(timer, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    else:
        for _ in range(warmup + rounds):
            setup()
            timer()
    return timer.samples(skip=warmup), {name: t.samples(skip=warmup) for name, t in others.items()}


def _stats(seconds: list[float]) -> dict[str, Any]:
    """pytest-benchmark's stats keys, so that readers of its JSON read ours."""
    q = statistics.quantiles(seconds, n=4, method="inclusive") if len(seconds) > 1 else [seconds[0]] * 3
    return {
        "min": min(seconds), "max": max(seconds), "mean": statistics.fmean(seconds),
        "stddev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0, "rounds": len(seconds),
        "median": statistics.median(seconds), "iqr": q[2] - q[0], "q1": q[0], "q3": q[2],
        "iterations": 1, "data": list(seconds),
    }


def gpu_fields(device: torch.device) -> dict[str, Any]:
    """The GPU a case runs on, for its extra_info (index and UUID, see `perfmamba.results.gpu_identity`): the gate
    compares a case only with itself on the same GPU, or across GPUs of a measured spread. {} off CUDA."""
    if device.type != "cuda":
        return {}
    identity = gpu_identity(device.index if device.index is not None else torch.cuda.current_device())
    return {"gpu_uuid": identity["gpu_uuid"], "gpu_index": identity["gpu_index"]}


class Recorder:
    """Benchmark records of one pytest session (or of one xdist worker)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, name: str, fullname: str, case: Case, samples: Samples, extra_info: Mapping[str, Any]) -> None:
        self.records.append({
            "name": name, "fullname": fullname, "group": f"{case.level}-{case.mode}", "case": case.id,
            "params": asdict(case), "stats": _stats(list(samples.seconds)),
            # The xdist worker that ran it: a sweep spread over GPUs shows which worker (so which GPU) ran what.
            "extra_info": {"clock": samples.clock, "l2": samples.l2, "host_timed": samples.host_timed,
                           "xdist_worker": os.environ.get("PYTEST_XDIST_WORKER"), **extra_info},
        })

    def extend(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)

    def payload(self) -> dict[str, Any]:
        return {"benchmarks": sorted(self.records, key=lambda r: r["fullname"])}


def worker_gpu_index(worker_id: str | None, device_count: int) -> int | None:
    """The GPU of pytest-xdist worker `worker_id` ("gw0", "gw1", ...): one worker per GPU, wrapping around when
    there are more workers than GPUs. None outside xdist or without a GPU."""
    if not worker_id or device_count < 1:
        return None
    if not worker_id.startswith("gw") or not worker_id[2:].isdigit():
        raise ValueError(f"unexpected pytest-xdist worker id {worker_id!r}; expected 'gw<N>'")
    return int(worker_id[2:]) % device_count


def case_group(nodeid: str, presets: Iterable[str]) -> str:
    """The xdist group of a benchmark test: "<preset>-<dtype>" from its case id ("test_op[mamba1-130m-op-...-bf16]"),
    so that one worker builds (and prunes) each model once; a test without a case keeps the `xdist_group` xdist
    named it by, or is a group of its own.

    The suite's scheduler groups by this itself: pytest >= 9.2 ignores the "@group" suffix pytest-xdist 3.8 writes
    into node ids for `xdist_group` marks, and `--dist loadgroup` then silently spreads a group (pytest-xdist#1386)."""
    plain, group = split_xdist_group(nodeid)
    if plain.endswith("]") and "[" in plain:
        case_id = plain[plain.index("[") + 1:-1]
        for preset in sorted(presets, key=len, reverse=True):  # the longest first: "mamba1-130m" before "mamba1"
            if case_id.startswith(preset + "-"):
                return f"{preset}-{case_id.rsplit('-', 1)[1]}"
    return group or plain  # not a case: its own xdist_group, else a group of its own


def split_xdist_group(nodeid: str) -> tuple[str, str | None]:
    """(the node id, its xdist "@group" suffix or None): pytest-xdist's `--dist loadgroup` appends the group after
    the parameters' brackets (where pytest < 9.2 lets it); an "@" inside them is a parameter's."""
    at = nodeid.rfind("@")
    return (nodeid[:at], nodeid[at + 1:]) if at > nodeid.rfind("]") else (nodeid, None)
