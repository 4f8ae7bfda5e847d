"""Issue 17: how fast can any kernel move the decode state, and what does the decode kernel's row tiling cost?

    python3 benchmarks/state_update_floor.py --out DIR            # CUDA: ~30 s on an H200
    python3 benchmarks/state_update_floor.py --quick --out DIR    # CPU smoke run (Triton's interpreter)

Per Mamba-2 shape (batch 64, bf16) and N', timed interleaved by CUDA-graph replay with the L2 flushed, three ways
to read and write the same (b, h, p, N') state once:
- span: a bare read-modify-write (s * A + C) in which each program takes 16 whole rows as one flat run (16-byte
  vectors, one masked tail): the bytes alone, what a kernel with no row structure reaches;
- tile: the same arithmetic through the decode kernel's own tiling (`chosen_config`: BLOCK_M rows, or pairs of
  rows, in strips of BLOCK_N columns, the last one masked; the kernel's grid order). It stands for the kernel's
  memory pattern where the tiling has one strip; with several and a narrow last one (76, 36) this bare RMW ran
  slower than the kernel itself on an H200 (docs/results/state_update.md, session 14);
- kernel: the decode kernel itself (backend "triton", its defaults).
Each is also given against its own time at the widest N' timed (128): proportional cost would be N' / 128.
Writes DIR/state_floor.json (every sample, environment, git commit) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--quick" in sys.argv:  # the interpreter must be chosen before triton is first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it, and its helpers
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from state_update_inputs import MAMBA2_SHAPES, decode_inputs, parse_dstates  # noqa: E402

from perfmamba.ops import state_update_triton as su  # noqa: E402
from perfmamba.results import write_json  # noqa: E402
from perfmamba.timing import configure_process, time_interleaved  # noqa: E402

DSTATES = (128, 116, 96, 88, 76, 64, 52, 36)
SPAN_ROWS, SPAN_WARPS = 16, 4
A, C = 0.999, 0.001  # s * A + C: every element read, changed and written


@triton.jit
def span_rmw(ptr, SPAN: tl.constexpr, BLOCK: tl.constexpr, A: tl.constexpr, C: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    base = ptr + tl.program_id(0).to(tl.int64) * SPAN
    s = tl.load(base + offs, mask=offs < SPAN).to(tl.float32)
    tl.store(base + offs, (s * A + C).to(ptr.dtype.element_ty), mask=offs < SPAN)


@triton.jit
def tile_rmw(ptr, s_sb, s_sh, s_sm, RUN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             ALIGN: tl.constexpr, A: tl.constexpr, C: tl.constexpr):
    # the decode kernel's walk of the state: grid (row blocks, heads, batch), strips of BLOCK_N over a run of RUN
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    base = ptr + tl.program_id(2) * s_sb + tl.program_id(1) * s_sh
    offs = tl.multiple_of(rows * s_sm, ALIGN)
    for n0 in tl.static_range(0, RUN, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        ptrs = base + offs[:, None] + cols[None, :]
        if n0 + BLOCK_N <= RUN:
            s = tl.load(ptrs).to(tl.float32)
            tl.store(ptrs, (s * A + C).to(ptr.dtype.element_ty))
        else:
            mask = cols[None, :] < RUN
            s = tl.load(ptrs, mask=mask).to(tl.float32)
            tl.store(ptrs, (s * A + C).to(ptr.dtype.element_ty), mask=mask)


def rmw_calls(state: torch.Tensor, config: tuple[int, int, int, int]) -> dict:
    """The span and tile read-modify-writes of a contiguous (b, h, p, N) state, as callables; the tile's walk is
    the kernel's at `config` (BLOCK_M, BLOCK_N, num_warps, pairs)."""
    b, h, p, n = state.shape
    span = SPAN_ROWS * n
    bm, bn, warps, pairs = config
    rows, run = (p // 2, 2 * n) if pairs else (p, n)  # a paired tile row is two state rows back to back
    if rows % bm or (b * h * p) % SPAN_ROWS:
        raise ValueError(f"state {tuple(state.shape)}: {rows} tile rows not a multiple of BLOCK_M {bm}, or "
                         f"{b * h * p} rows not a multiple of {SPAN_ROWS}")
    return {
        "span": lambda: span_rmw[(state.numel() // span,)](state, SPAN=span, BLOCK=triton.next_power_of_2(span),
                                                          A=A, C=C, num_warps=SPAN_WARPS),
        "tile": lambda: tile_rmw[(triton.cdiv(rows, bm), h, b)](
            state, state.stride(0), state.stride(1), run, RUN=run, BLOCK_M=bm, BLOCK_N=bn,
            ALIGN=su._alignment(run), A=A, C=C, num_warps=warps),
    }


def measure(args, name: str, heads: int, headdim: int, n: int) -> dict:
    (state, *rest), kw = decode_inputs(args.batch, heads, headdim, n, args.device, args.dtype)
    config = su.chosen_config(state)
    calls = rmw_calls(state, config)
    agree = {}
    for what, call in calls.items():  # each must do the arithmetic on every element before its time means anything
        before = state.clone()
        call()
        agree[what] = bool(torch.allclose(state.float(), (before.float() * A + C).to(args.dtype).float(),
                                          rtol=1e-2, atol=1e-2))
        state.copy_(before)
    calls["kernel"] = lambda: su.selective_state_update_triton(state, *rest, **kw)
    samples = time_interleaved(calls, args.device, rounds=args.rounds, warmup=args.warmup)
    nbytes = 2 * state.numel() * state.element_size()
    row = {"shape": name, "dstate": n, "bytes": nbytes, "config": list(config), "rmw_agrees": agree,
           **{k: {**s.summary(), "samples_s": list(s.seconds), "bandwidth_Bps": nbytes / s.median}
              for k, s in samples.items()}}
    print(f"{name} N'={n}: " + ", ".join(f"{k} {s.median * 1e6:.1f} us" for k, s in samples.items())
          + ("" if all(agree.values()) else f"  MISMATCH {agree}"), file=sys.stderr, flush=True)
    return row


def against_widest(rows: list[dict]) -> None:
    """Each way's time against its own at the widest N' of the same shape (proportional cost: the N' ratio)."""
    for row in rows:
        widest = max((r for r in rows if r["shape"] == row["shape"]), key=lambda r: r["dstate"])
        row["widest"] = widest["dstate"]
        row["vs_widest"] = {k: row[k]["median_s"] / widest[k]["median_s"] for k in ("span", "tile", "kernel")}


def table(rows: list[dict]) -> str:
    lines = ["| shape | N' | bytes vs widest | span us (TB/s) | tile us | kernel us | span / tile / kernel vs widest |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        v = r["vs_widest"]
        lines.append(f"| {r['shape']} | {r['dstate']} | {r['dstate'] / r['widest']:.3f} | "
                     f"{r['span']['median_s'] * 1e6:.1f} ({r['span']['bandwidth_Bps'] / 1e12:.2f}) | "
                     f"{r['tile']['median_s'] * 1e6:.1f} | {r['kernel']['median_s'] * 1e6:.1f} | "
                     f"{v['span']:.3f} / {v['tile']:.3f} / {v['kernel']:.3f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for state_floor.json")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: Triton's interpreter, tiny shapes, 1 round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--dstates", default=None, help="comma-separated N' (default " + ",".join(map(str, DSTATES))
                   + "; with --quick 34,13)")
    args = p.parse_args(argv)
    given = None if args.dstates is None else parse_dstates(args.dstates, "--dstates")
    args.device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.device.type != "cuda" and not args.quick:
        p.error("no CUDA device: run with --quick for the CPU smoke run")
    args.shapes, args.batch, args.dtype, args.warmup, args.dstates = MAMBA2_SHAPES, 64, torch.bfloat16, 2, DSTATES
    if args.quick:  # 34 in fp32 takes rows in pairs
        args.shapes, args.batch, args.dtype, args.warmup, args.rounds = {"tiny": (2, 32)}, 2, torch.float32, 0, 1
        args.dstates = (34, 13)
    args.dstates = given or args.dstates
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    configure_process()
    with torch.inference_mode():
        rows = [measure(args, name, h, p, n) for name, (h, p) in args.shapes.items() for n in args.dstates]
    against_widest(rows)
    doc = {"config": {"quick": args.quick, "device": str(args.device), "dtype": str(args.dtype), "batch": args.batch,
                      "rounds": args.rounds, "span_rows": SPAN_ROWS, "span_warps": SPAN_WARPS}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / "state_floor.json", doc, kind="state_update_floor")
    print(table(rows))
    print(f"wrote {path}", file=sys.stderr)
    return doc


if __name__ == "__main__":
    main()
