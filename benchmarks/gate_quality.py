"""How good is the gate? False alarms on A/A runs and detections of injected slowdowns, measured.

    python benchmarks/gate_quality.py --device cpu --out docs/results/gate_quality_cpu.json
    python benchmarks/gate_quality.py --device cuda --out docs/results/gate_quality_h100.json

Each trial times the selective scan (the reference on a CPU, mamba-ssm's kernel on CUDA) as BASE, then, in a
separate block of rounds as a CI job would, NEW: the same kernel (A/A) or a plug-in that does the same work and
then waits 1%, 3% or 10% of the kernel's median time (`perfmamba.bench.plugins.delayed`: the GPU spins).
`perfmamba.gate.compare` judges each pair at each threshold; the false-alarm rate is the share of A/A pairs
called "regressed", the detection rate the share of slowed pairs called "regressed". The slowdown actually
injected is measured too (the median ratio over all trials).

Writes a JSON result file (every trial's verdicts and medians) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba.bench.plugins import delayed  # noqa: E402
from perfmamba.bench.timing import configure_process, time_fn  # noqa: E402
from perfmamba.gate import GateConfig, Measurement, compare  # noqa: E402
from perfmamba.ops.registry import resolve  # noqa: E402
from perfmamba.results import write_json  # noqa: E402

SLOWDOWNS = (0.0, 1.0, 3.0, 10.0)  # percent; 0 is the A/A pair
THRESHOLDS = (0.005, 0.02)
# (b, d, N, L): on CUDA a Mamba-1 1.4b layer at batch 4; on a CPU a long, narrow scan, so that the injected
# re-run over a few time steps is not dominated by the per-call overhead of the reference.
SHAPES = {"cuda": (4, 4096, 16, 4096), "cpu": (1, 128, 16, 4096)}


def _inputs(device: torch.device, shape: tuple[int, int, int, int]) -> dict:
    b, d, n, L = shape
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def randn(*s, dt=dtype):
        return torch.randn(*s, generator=gen, device=device, dtype=dt)

    return {"u": randn(b, d, L), "delta": randn(b, d, L), "A": -torch.rand(d, n, generator=gen, device=device),
            "B": randn(b, n, L), "C": randn(b, n, L), "D": randn(d, dt=torch.float32), "z": randn(b, d, L),
            "delta_bias": randn(d, dt=torch.float32), "delta_softplus": True}


def _measurement(name: str, seconds: list[float]) -> Measurement:
    return Measurement(name=name, unit="s", median=statistics.median(seconds), samples=tuple(seconds),
                       rounds=len(seconds))


def run(device: torch.device, trials: int, rounds: int, shape: tuple[int, ...]) -> dict:
    x = _inputs(device, shape)
    _, kernel = resolve("selective_scan", "cuda" if device.type == "cuda" else "reference", x["u"])
    median = statistics.median(time_fn(lambda: kernel(**x), device, rounds=rounds, warmup=5).seconds)
    variants = {p: (kernel if p == 0 else delayed(kernel, median * p / 100, device)) for p in SLOWDOWNS}
    rows = []
    start = time.monotonic()
    for trial in range(trials):
        for percent, fn in variants.items():
            base = time_fn(lambda: kernel(**x), device, rounds=rounds, warmup=3).seconds
            new = time_fn(lambda fn=fn: fn(**x), device, rounds=rounds, warmup=3).seconds
            row = {"trial": trial, "slowdown_percent": percent, "base_median_s": statistics.median(base),
                   "new_median_s": statistics.median(new)}
            for t in THRESHOLDS:
                c = compare({"scan": _measurement("scan", base)}, {"scan": _measurement("scan", new)},
                            GateConfig(default_threshold=t, seed=trial))
                row[f"verdict@{t}"] = c.rows[0].verdict
            rows.append(row)
        print(f"trial {trial + 1}/{trials} done ({time.monotonic() - start:.0f} s)", flush=True)
    summary = {}
    for percent in SLOWDOWNS:
        mine = [r for r in rows if r["slowdown_percent"] == percent]
        entry = {"pairs": len(mine), "measured_slowdown": statistics.median(
            r["new_median_s"] / r["base_median_s"] for r in mine) - 1}
        for t in THRESHOLDS:
            entry[f"regressed_rate@{t}"] = sum(r[f"verdict@{t}"] == "regressed" for r in mine) / len(mine)
        summary[f"{percent:g}%"] = entry
    return {"shape_b_d_N_L": list(shape), "kernel": getattr(kernel, "__name__", str(kernel)), "rounds": rounds,
            "trials": trials, "thresholds": list(THRESHOLDS), "alpha": GateConfig().alpha, "summary": summary,
            "rows": rows}


def table(doc: dict) -> str:
    head = "| injected | measured | pairs | " + " | ".join(f"flagged @ {t:.1%} threshold" for t in doc["thresholds"])
    lines = [head + " |", "|---" * (3 + len(doc["thresholds"])) + "|"]
    for name, e in doc["summary"].items():
        cells = " | ".join(f"{e[f'regressed_rate@{t}']:.0%}" for t in doc["thresholds"])
        lines.append(f"| {name} | {e['measured_slowdown']:+.2%} | {e['pairs']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per side of a pair")
    parser.add_argument("--shape", default=None, help="b,d,N,L of the scan (default per device)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    configure_process(cpu_threads=1 if device.type == "cpu" else None)
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else SHAPES[device.type]
    doc = run(device, args.trials, args.rounds, shape)
    write_json(args.out, doc, kind="gate_quality")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
