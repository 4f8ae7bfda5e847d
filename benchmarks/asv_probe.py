"""Where one asv benchmark process of the suite spends its time, and whether a forked child can use CUDA.

    python benchmarks/asv_probe.py            # in this process: import, setup, first and second call, track_
    python benchmarks/asv_probe.py --fork     # the same in a child forked after the import (asv's forkserver)

asv runs every parameter set in a process of its own, forked from a server that imported the suite. What a
process costs beyond its timing (imports, setup, first-call compiles and autotuning) is paid per parameter set,
so this script times one process's steps for one case of each kind of the grid ($PERFMAMBA_GRID, as the suite).
The cases run one after another in one process, and the first to need a model makes it in the model store
(what asv's first process for that model does): a later case reuses the models, CUDA context and compiled
kernels of earlier ones, so the first case shows what a fresh benchmark process pays.
Results on the H200: docs/results/asv_h200/.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba and suite beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def say(msg: str) -> None:
    print(f"[probe {time.perf_counter() - T0:7.2f}s] {msg}", flush=True)


def probe_cases() -> list[tuple[type, tuple]]:
    """The most pruned case of the longest length of each timing class the grid has."""
    import benchmarks.asv.bench_block as bb
    import benchmarks.asv.bench_model as bm
    import benchmarks.asv.bench_op as bo
    from benchmarks.asv.common import GRID

    out = []
    for cls in (bo.OpDecode, bo.OpPrefill, bb.BlockPrefill, bm.ModelPrefill, bm.ModelDecode):
        for preset in GRID.presets:
            cases = [c for c in GRID.cases(cls.level, cls.mode) if c.preset == preset]
            if cases:
                c = max(cases, key=lambda c: (c.seqlen, c.ratio))
                out.append((cls, (c.preset, c.seqlen, c.batch, c.ratio, c.criterion)))
    return out


def run(cls: type, params: tuple, store: str) -> None:
    bench = cls()
    args = (store, *params)
    t = time.perf_counter()
    bench.setup(*args)
    t1 = time.perf_counter()
    bench.time_call(*args)
    t2 = time.perf_counter()
    bench.time_call(*args)
    t3 = time.perf_counter()
    value = bench.track_device_time(*args)
    say(f"{cls.__name__}{params}: setup {t1 - t:.2f}s, first call {t2 - t1:.3f}s, second {t3 - t2:.4f}s, "
        f"track_device_time {time.perf_counter() - t3:.2f}s (median {value * 1e3:.3f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fork", action="store_true", help="run the cases in a forked child, as asv's forkserver")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="kill a forked child that hangs this long")
    args = parser.parse_args(argv)

    import torch

    say(f"import torch {torch.__version__}")
    from benchmarks.asv import common

    cases = probe_cases()
    say(f"import suite (grid {common.GRID.name!r}); mamba_ssm imported: {'mamba_ssm' in sys.modules}; "
        f"CUDA initialised: {torch.cuda.is_initialized()}")
    with tempfile.TemporaryDirectory(prefix="asv-probe-") as cache_dir:
        os.chdir(cache_dir)  # asv runs setup_cache and the benchmarks in its cache directory
        return _probe(cases, common.model_store(), args.fork, args.timeout_s)


def _probe(cases: list[tuple[type, tuple]], store: str, fork: bool, timeout_s: float) -> int:
    if not fork:
        for cls, params in cases:
            run(cls, params, store)
        return 0
    pid = os.fork()
    if pid == 0:  # the child: report, never hang
        faulthandler.dump_traceback_later(max(timeout_s - 10, 1), exit=True)
        try:
            for cls, params in cases:
                run(cls, params, store)
            say("forked child: done")
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - any failure is the finding
            say(f"forked child failed: {type(e).__name__}: {e}")
            os._exit(3)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            say(f"forked child exit status {code}")
            return code
        time.sleep(0.2)
    os.kill(pid, 9)
    say(f"forked child killed after {timeout_s:.0f} s")
    return 124


if __name__ == "__main__":
    raise SystemExit(main())
