"""Compile mamba-ssm's Triton kernels for many model shapes at once, before anything is timed.

    python benchmarks/warm_triton.py --presets mamba2-130m,mamba2-1.3b --d-states 128,116,88,64,36,12
    python benchmarks/warm_triton.py --presets mamba2-small --d-states 64 --train    # forward and backward
    python benchmarks/warm_triton.py --grid gpu        # every Mamba-2 shape of a benchmark grid (GPU CI)

mamba-ssm's Mamba-2 kernels (the SSD chunk scan, chunk state, state passing, ...) autotune for every new state
size N', and compiling their ~40 candidate configs takes 40-100 s per shape on one CPU core: a pruning sweep
over six ratios spends ten minutes compiling before it times anything. This script starts one worker process
per N' (all at once, `--jobs` at a time), each running a one-layer model of every preset through the paths and
sequence lengths the benchmarks use, so the compiles share the machine's cores and land in Triton's on-disk
cache (TRITON_CACHE_DIR, default ~/.triton/cache). A later process then autotunes from compiled kernels in
seconds. The workers do not keep their autotune picks (TRITON_CACHE_AUTOTUNING=0): timed while other workers
shared the GPU, those picks are noise; the timing process makes its own.

Layers are left out (n_layer = 1): kernels depend on the layer's shape, not on how many layers there are.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The lengths that reach different kernel specialisations: one chunk (Triton specialises an int equal to 1)
# and several chunks.
SEQLENS = (64, 512)
BATCH = 2


def warm_one(preset: str, d_state: int, *, paths: tuple[str, ...], train: bool, device: str = "cuda",
             dtype: str = "bf16") -> None:
    """Run a one-layer `preset` with d_state N' through a prefill on each of `paths`, a prompt into the decode
    cache and one decode step, the SSD scan alone as the op-level benchmarks and ssd_dstate_sweep call it (no
    gate z: another kernel variant), and, with `train`, a bf16-autocast forward and backward: every Triton kernel
    these touch compiles."""
    import torch

    from perfmamba import ops
    from perfmamba.models import build_model, get_preset

    config = get_preset(preset).replace(d_state=d_state, n_layer=1)
    floats = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]  # kernels compile per dtype too
    model = build_model(config, device=device, dtype=floats).eval()
    for path in (*paths, "auto"):
        model.configure(path=path)
        for seqlen in SEQLENS:
            ids = torch.randint(0, config.vocab_size, (BATCH, seqlen), device=device)
            with torch.inference_mode():
                if path != "auto":
                    model(ids)
                else:  # a prompt into the decode cache (the fused path fills none; "auto" picks one that does)
                    cache = model.allocate_cache(BATCH)
                    model(ids, cache=cache)
                    model.step(ids[:, -1].contiguous(), cache)
    if config.version == 2:
        h, p, g = config.nheads, config.headdim, config.ngroups
        for seqlen in SEQLENS:
            x, dt = torch.randn(BATCH, seqlen, h, p, device=device), torch.rand(BATCH, seqlen, h, device=device)
            B, C = (torch.randn(BATCH, seqlen, g, d_state, device=device) for _ in range(2))
            A, ones = -torch.rand(h, device=device) - 1, torch.ones(h, device=device)
            with torch.inference_mode():
                ops.ssd_scan(*(t.to(floats) for t in (x, dt)), A, *(t.to(floats) for t in (B, C)),
                             config.chunk_size, D=ones, dt_bias=ones, dt_softplus=True)
    if train:
        model = build_model(config, device=device).train()  # fp32 weights under bf16 autocast, as training runs
        for seqlen in SEQLENS:
            ids = torch.randint(0, config.vocab_size, (BATCH, seqlen), device=device)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                logits = model(ids)
            torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Job:
    """One worker: every preset of `presets` at d_state N' in `dtype`."""

    presets: tuple[str, ...]
    d_state: int
    dtype: str = "bf16"

    @property
    def label(self) -> str:
        return f"{','.join(self.presets)} N'={self.d_state} {self.dtype}"


def grid_jobs(name: str) -> list[Job]:
    """The Mamba-2 shapes a benchmark grid (perfmamba.bench.cases.GRIDS) runs: one job per preset, N' and dtype."""
    from perfmamba.bench.cases import GRIDS

    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of: {', '.join(GRIDS)}")
    grid = GRIDS[name]
    shapes = {(c.preset, c.d_state, c.dtype) for c in (*grid.cases(), *grid.quality_cases()) if c.version == 2}
    return [Job((preset,), n, dtype) for preset, n, dtype in sorted(shapes)]


def _worker_command(job: Job, paths: list[str], train: bool) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--presets", ",".join(job.presets), "--d-states",
           str(job.d_state), "--paths", ",".join(paths), "--dtype", job.dtype]
    return cmd + (["--train"] if train else [])


def warm(jobs: list[Job], paths: list[str], *, train: bool, parallel: int) -> int:
    """One worker process per job, `parallel` at a time; returns the number of workers that failed (their output
    is shown)."""
    env = {**os.environ, "TRITON_CACHE_AUTOTUNING": "0", "PYTHONUNBUFFERED": "1"}
    pending = list(jobs)
    running: dict[Job, tuple[subprocess.Popen, object, float]] = {}
    failed = 0
    start = time.monotonic()
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            # Output to a file, not a pipe: a worker that filled an unread pipe would block forever.
            log = tempfile.TemporaryFile(mode="w+")
            proc = subprocess.Popen(_worker_command(job, paths, train), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, text=True)
            running[job] = (proc, log, time.monotonic())
        time.sleep(0.5)
        for job, (proc, log, began) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[job]
            log.seek(0)
            output = log.read()
            log.close()
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"[warm_triton] {job.label}: {status} in {time.monotonic() - began:.0f}s "
                  f"({len(jobs) - len(pending) - len(running)}/{len(jobs)} done, "
                  f"{time.monotonic() - start:.0f}s)", flush=True)
            if proc.returncode != 0:
                failed += 1
                print(output[-3000:], flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=None, help="the Mamba-2 shapes of this benchmark grid (quick, gpu, full)")
    parser.add_argument("--presets", default="", help="comma-separated Mamba-2 presets")
    parser.add_argument("--d-states", default="", help="comma-separated N' to compile for (one job each)")
    parser.add_argument("--paths", default="fused,unfused", help="mixer paths to run (default: both)")
    parser.add_argument("--train", action="store_true", help="also compile the backward kernels")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="inference dtype (default bf16)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="workers at a time")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    presets = tuple(p for p in args.presets.split(",") if p)
    d_states = [int(n) for n in args.d_states.split(",") if n]
    paths = [p for p in args.paths.split(",") if p]
    if args.worker:
        for preset in presets:
            warm_one(preset, d_states[0], paths=tuple(paths), train=args.train, dtype=args.dtype)
        return 0
    try:
        jobs = [Job(presets, n, args.dtype) for n in d_states] if presets else []
        jobs += grid_jobs(args.grid) if args.grid else []
    except ValueError as e:
        parser.error(str(e))
    if not jobs:
        parser.error("nothing to compile: give --grid, or --presets and --d-states")
    import torch

    if not torch.cuda.is_available():
        print("warm_triton: needs a CUDA device", file=sys.stderr)
        return 2
    return 1 if warm(jobs, paths, train=args.train, parallel=args.jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
