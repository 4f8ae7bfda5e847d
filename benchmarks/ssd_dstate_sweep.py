"""How Mamba-2's time depends on the pruned state size N': which N' are legal and which are worth having.

    python benchmarks/ssd_dstate_sweep.py --out ssd_dstate_sweep.json                 # GPU, mamba-ssm kernels
    python benchmarks/ssd_dstate_sweep.py --tiny --device cpu --out /tmp/sweep.json   # CPU smoke run (reference ops)

mamba-ssm's fused Mamba-2 path needs its conv channels d_inner + 2 * ngroups * N' to be a multiple of 8, and its
Triton SSD kernels tile N' up to a power of two, so a smaller N' is not always faster. For each N' this times,
interleaved round by round across all N' (so drift of clocks or load hits every size alike):

- ssd_scan: the chunked scan alone (`mamba_chunk_scan_combined`; the reference op on CPU);
- mixer: one Mamba-2 layer forward (`mamba_split_conv1d_scan_combined`, the fused production path, on CUDA);
- step: one decode step of the layer for a batch of sequences (`selective_state_update`).

Timing is perfmamba.timing (CUDA events around each call, L2 flushed between rounds, like
triton.testing.do_bench, but one sample per call). The result file (kind "ssd_dstate_sweep") holds every sample;
`efficient` lists, per measurement, the N' that are faster than every larger N' by at least --margin: the sizes a
pruning run should round to (perfmamba.pruning's `multiple`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba import ops  # noqa: E402
from perfmamba.models.mamba2 import Mamba2Mixer  # noqa: E402
from perfmamba.results import write_json  # noqa: E402
from perfmamba.timing import configure_process, time_interleaved  # noqa: E402

DEFAULT_D_STATES = (128, 120, 112, 104, 100, 96, 88, 80, 72, 64, 56, 48, 40, 32, 24, 16)
TINY_D_STATES = (32, 24, 16, 8)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def legal(d_state: int, ngroups: int) -> bool:
    """mamba_split_conv1d_scan_combined's conv channel count d_inner + 2 * ngroups * N' must be a multiple of 8
    (d_inner = nheads * headdim is, for every published model)."""
    return (ngroups * d_state) % 4 == 0


def efficient(medians: dict[int, float], margin: float) -> list[int]:
    """The N' faster than every larger N' by at least `margin` (a fraction): the others buy nothing."""
    out = []
    for n, t in medians.items():
        larger = [medians[m] for m in medians if m > n]
        if not larger or t < min(larger) * (1.0 - margin):
            out.append(n)
    return sorted(out, reverse=True)


def _workloads(args: argparse.Namespace, d_state: int, device: torch.device) -> dict[str, Callable[[], object]]:
    dtype = DTYPES[args.dtype]
    gen = torch.Generator(device="cpu").manual_seed(d_state)
    d_model = args.nheads * args.headdim // 2
    mixer = Mamba2Mixer(d_model, d_state, headdim=args.headdim, ngroups=args.ngroups, chunk_size=args.chunk_size,
                        device=device, dtype=dtype).eval().requires_grad_(False)
    cuda = device.type == "cuda"
    mixer.path = "fused" if cuda else "unfused"
    mixer.backend = args.backend
    b, L, h, p, g = args.batch, args.seqlen, args.nheads, args.headdim, args.ngroups

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    x, B, C = randn(b, L, h, p), randn(b, L, g, d_state), randn(b, L, g, d_state)
    dt = randn(b, L, h, scale=0.5)
    A = -torch.rand(h, generator=gen).to(device) * 15 - 1
    dt_bias, D = mixer.dt_bias.float(), mixer.D.float()
    hidden = randn(b, L, d_model)
    cache = mixer.allocate_cache(args.decode_batch)
    token = randn(args.decode_batch, d_model)

    def scan():
        return ops.ssd_scan(x, dt, A, B, C, args.chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                            backend=args.backend)

    def layer():
        return mixer(hidden)

    def step():
        return mixer.step(token, cache)

    return {"ssd_scan": scan, "mixer": layer, "step": step}


def sweep(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    configure_process()
    per_size = {n: _workloads(args, n, device) for n in args.d_states}
    results: dict[str, dict] = {}
    with torch.inference_mode():
        for name in ("ssd_scan", "mixer", "step"):
            fns, errors = {}, {}
            for n, work in per_size.items():
                try:
                    work[name]()  # compile / autotune outside the timed rounds, and find illegal sizes
                    fns[str(n)] = work[name]
                except Exception as e:  # noqa: BLE001 - an illegal size is a result, recorded with its message
                    errors[str(n)] = f"{type(e).__name__}: {e}"[:500]
            samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup) if fns else {}
            medians = {int(n): s.median * 1e3 for n, s in samples.items()}
            results[name] = {
                "points": [
                    {"d_state": n, "legal": legal(n, args.ngroups),
                     **({"error": errors[str(n)]} if str(n) in errors else {
                         "median_ms": samples[str(n)].median * 1e3, "iqr_ms": samples[str(n)].iqr * 1e3,
                         "samples_ms": [s * 1e3 for s in samples[str(n)].seconds]})}
                    for n in args.d_states
                ],
                "efficient": efficient(medians, args.margin),
            }
            print(f"{name}: " + ", ".join(f"{n}: {t:.3f} ms" for n, t in medians.items()), file=sys.stderr)
    return results


def table(doc: dict) -> str:
    names = list(doc["results"])
    lines = ["| N' | legal | " + " | ".join(f"{n} ms" for n in names) + " |",
             "|---:|:---:|" + "---:|" * len(names)]
    for i, n in enumerate(doc["config"]["d_states"]):
        cells = []
        for name in names:
            point = doc["results"][name]["points"][i]
            mark = "*" if n in doc["results"][name]["efficient"] else ""
            cells.append(f"{point['median_ms']:.3f}{mark}" if "median_ms" in point else "fails")
        legal_mark = "yes" if doc["results"][names[0]]["points"][i]["legal"] else "no"
        lines.append(f"| {n} | {legal_mark} | " + " | ".join(cells) + " |")
    lines.append("\n`*`: faster than every larger N' by the margin (worth rounding to).")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default="auto", help="ops backend: auto, cuda or reference")
    p.add_argument("--d-states", type=lambda s: tuple(int(v) for v in s.split(",")), default=None,
                   help=f"comma-separated N' (default {','.join(map(str, DEFAULT_D_STATES))})")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--nheads", type=int, default=64, help="heads (d_inner = nheads * headdim; 64 x 64: mamba2-1.3b)")
    p.add_argument("--headdim", type=int, default=64)
    p.add_argument("--ngroups", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--margin", type=float, default=0.03, help="how much faster a smaller N' must be to count")
    p.add_argument("--tiny", action="store_true", help="tiny sizes for a CPU smoke run")
    p.add_argument("--out", type=Path, default=Path("ssd_dstate_sweep.json"))
    args = p.parse_args(argv)
    if args.tiny:
        args.batch, args.seqlen, args.nheads, args.headdim, args.chunk_size = 1, 64, 4, 8, 16
        args.decode_batch, args.rounds, args.warmup, args.dtype = 2, min(args.rounds, 3), 1, "fp32"
    if args.d_states is None:
        args.d_states = TINY_D_STATES if args.tiny else DEFAULT_D_STATES
    if args.device == "cpu" and args.dtype != "fp32":
        args.dtype = "fp32"  # the reference ops compute in fp32 anyway; half types only slow the CPU down
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = sweep(args)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "tiny")}
    config["d_states"] = list(args.d_states)
    status = ops.backend_status()
    doc = {"config": config, "backends": {op: status[op] for op in ("ssd_scan", "mamba_split_conv1d_scan",
                                                                    "selective_state_update")},
           "results": results}
    write_json(args.out, doc, kind="ssd_dstate_sweep")
    print(table(doc))
    med = {name: statistics.median(p["median_ms"] for p in r["points"] if "median_ms" in p)
           for name, r in results.items() if any("median_ms" in p for p in r["points"])}
    print(f"\nwrote {args.out} (median over sizes: {med})", file=sys.stderr)
    return doc


if __name__ == "__main__":
    main()
