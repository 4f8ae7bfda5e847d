"""Issue 17 on a GPU: does the decode step's cost follow the pruned N' with our Triton kernel?

    python3 benchmarks/state_update_kernels.py --out DIR            # CUDA: ~3 min on an H200, kernels compiled
    python3 benchmarks/state_update_kernels.py --quick --out DIR    # CPU smoke run (Triton's interpreter)

Sections, each timed by CUDA-graph replay (perfmamba.timing, L2 flushed), candidates interleaved round by round:
- copy: the device's copy bandwidth (bytes read + written / time), for the bandwidth bound of the kernels;
- kernel: selective_state_update at batch 64, bf16, mamba-ssm's kernel ("cuda") against ours ("triton"):
  Mamba-2 130m / 1.3b shapes (tied per-head dt and A, as the model calls it; before 2026-12-02 A was materialised
  by mistake and both kernels ran untied) and Mamba-1 130m;
- configs: our kernel's (BLOCK_M, BLOCK_N, num_warps) around the default, for tuning;
- layout: the kernel alone on the model's own call layout (x, B, C views into the conv output, dt a stride-0 view
  into the in_proj output: the strides `fastest_choices` records), with dt tied per head and untied, beside the
  plain layout of "kernel";
- chain: one call per layer on as many separate states, back to back with no flush between them (the memory pattern
  of a decode step without its projections: each call finds the previous layer's state dirty in the L2), for
  mamba-ssm's kernel, ours and the probes; per-call time;
- model: MambaLM.step at batch 64, dense and pruned (uniform N' = 116, 88, 64; global r = 0.5, contribution), with
  the decode kernel taken from "cuda", "triton", "fastest" (perfmamba.ops.autoselect), the probes (--probes: ours
  at a tile, "triton[BM,BN,W]", or a plug-in 'package.module:function', timed in "kernel" and "chain" too), or
  "skip" (no state update: the step's other kernels alone, so that (step - skip) / layers is the decode kernel's
  cost inside the model);
- ssd: the prefill scan (ssd_scan) at b8 L8192, 130m shape, mamba-ssm's kernels plain and with N' zero-padded to
  a multiple of 16 ("cuda_padded", perfmamba.ops.ssd_padded).
Writes DIR/state_update.json (every sample, environment, git commit) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

if "--quick" in sys.argv:  # the interpreter must be chosen before triton is first imported (see the kernel module)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it, and its helpers
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from state_update_inputs import MAMBA2_SHAPES, decode_inputs, model_layout_inputs, parse_dstates, state_bytes, strides  # noqa: E402
from state_update_report import tables  # noqa: E402

from perfmamba import build_model, ops  # noqa: E402
from perfmamba.ops import autoselect, ssd_padded, state_update_triton  # noqa: E402, F401 - they register backends
from perfmamba.pruning import calibrate, prune_states  # noqa: E402
from perfmamba.results import write_json  # noqa: E402
from perfmamba.timing import configure_process, paired_ratio, time_fn, time_interleaved  # noqa: E402

START = time.perf_counter()
SECTIONS = ("kernel", "configs", "layout", "chain", "model", "ssd")
KERNEL_DSTATES = (128, 116, 96, 88, 64, 36, 12)
MAMBA1_DSTATES = (16, 12, 8, 4)
CONFIGS = ((16, 16, 4), (32, 16, 4), (64, 16, 4), (32, 32, 4), (64, 32, 8), (128, 16, 8))
UNIFORM = (116, 88, 64)
SSD_DSTATES = (128, 116, 96, 64)
PROBE_DSTATES = (128, 116, 88, 64)  # where the model and the kernel alone disagree (128, 116) and where not
# Timed beside the default in "kernel", "chain" and "model" (--probes): tiles ("triton[BM,BN,W]") or plug-ins.
PROBES: tuple[tuple[int, int, int] | str, ...] = ()
LAYERS = {"mamba2-130m": 24, "mamba2-1.3b": 48}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def summary(samples) -> dict:
    return {**samples.summary(), "samples_s": list(samples.seconds)}


def bound_entry(args, samples, bandwidth: float) -> dict:
    bound = state_bytes(args) / bandwidth
    return {**summary(samples), "bytes": state_bytes(args), "bound_s": bound, "of_bound": bound / samples.median}


# --- sections -----------------------------------------------------------------------------------------------
def copy_bandwidth(args, device) -> dict:
    n = (64 if args.quick else 1024) * 2**20 // 2
    src, dst = torch.randn(n, device=device).to(torch.bfloat16), torch.empty(n, device=device, dtype=torch.bfloat16)
    # A copy kernel, not copy_: captured in a CUDA graph, copy_ is a memcpy node, which ran at 2.6-2.7 of the 4.2 TB/s
    # a kernel moves on the H200 (docs/results/profile_truth.md) and made every kernel look nearer its bound.
    samples = time_fn(lambda: torch.mul(src, 1, out=dst), device, rounds=args.rounds, warmup=args.warmup)
    bw = 2 * src.numel() * src.element_size() / samples.median
    log(f"copy: {bw / 1e12:.2f} TB/s (read + written)")
    return {**summary(samples), "bytes": 2 * src.numel() * src.element_size(), "bandwidth_Bps": bw}


def kernel_section(args, device, bandwidth: float) -> list[dict]:
    rows = []
    shapes = [(name, h, p, False, args.dstates) for name, (h, p) in args.mamba2_shapes.items()]
    shapes.append(("mamba1-130m", 1, args.mamba1_dim, True, args.mamba1_dstates))
    for name, h, p, mamba1, dstates in shapes:
        for n in dstates:
            fns, inputs = {}, {}
            for backend in (args.baseline, "triton", *args.probe_backends):
                a, kw = decode_inputs(args.batch, h, p, n, device, args.dtype, mamba1)
                fn = ops.resolve("selective_state_update", backend, a[1])[1]
                inputs[backend] = (a, kw)
                fns[backend] = (lambda fn=fn, a=a, kw=kw: fn(*a, **kw))
            # one step of each from equal states must agree with the baseline's before their speed means anything
            start = inputs[args.baseline][0][0].clone()
            y0 = fns[args.baseline]()
            diffs = {}
            for backend in [b for b in fns if b != args.baseline]:
                inputs[backend][0][0].copy_(start)
                diffs[backend] = (fns[backend]().float() - y0.float()).abs()
            agree = {b: bool((d <= 5e-2 + 1e-2 * y0.float().abs()).all()) for b, d in diffs.items()}  # mamba-ssm's
            for backend in (b for b, ok in agree.items() if not ok):  # bf16 tolerance
                log(f"MISMATCH kernel {name} N'={n}: {backend} and {args.baseline} differ by up to "
                    f"{diffs[backend].max():.3g}")
            samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
            entry = {"shape": name, "dstate": n, "mamba1": mamba1, "outputs_agree": all(agree.values()),
                     "max_abs_diff": max(d.max().item() for d in diffs.values()),
                     **{b: bound_entry(inputs[b][0], s, bandwidth) for b, s in samples.items()},
                     "speedup": paired_ratio(samples[args.baseline], samples["triton"]),
                     "vs_probes": {b: paired_ratio(samples[b], samples["triton"]) for b in args.probe_backends}}
            rows.append(entry)
            log(f"kernel {name} N'={n}: {args.baseline} {samples[args.baseline].median * 1e6:.1f} us, "
                f"triton {samples['triton'].median * 1e6:.1f} us ({entry['triton']['of_bound']:.0%} of bound)")
    return rows


def config_section(args, device) -> list[dict]:
    rows = []
    for shape, (h, p), n in ((s, hp, n) for s, hp in args.mamba2_shapes.items() for n in args.config_dstates):
        fns = {}
        for config in args.configs:
            a, kw = decode_inputs(args.batch, h, p, n, device, args.dtype)
            fns[",".join(map(str, config))] = (
                lambda a=a, kw=kw, c=config: state_update_triton.selective_state_update_triton(*a, **kw, config=c))
        a, kw = decode_inputs(args.batch, h, p, n, device, args.dtype)
        baseline = ops.resolve("selective_state_update", args.baseline, a[1])[1]
        fns[args.baseline] = lambda fn=baseline, a=a, kw=kw: fn(*a, **kw)  # timed beside them, never "best"
        samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
        base = samples.pop(args.baseline)
        best = min(samples, key=lambda k: samples[k].median)
        default = state_update_triton.chosen_config(a[0])
        rows.append({"shape": shape, "dstate": n, "default": list(default),
                     "best": best,
                     "configs": {k: summary(s) for k, s in samples.items()}, args.baseline: summary(base)})
        log(f"configs {shape} N'={n}: best {best} {samples[best].median * 1e6:.1f} us, default "
            f"{default}, {args.baseline} {base.median * 1e6:.1f} us")
    return rows


def layout_section(args, device, bandwidth: float) -> list[dict]:
    """The kernel alone, timed on the model's call layout beside the plain one: a kernel-vs-model gap that this
    closes is a layout effect; one that stays is not."""
    rows = []
    def a_copied(*a):  # what "kernel" timed on 2026-12-01: A materialised, so both kernels ran untied
        (state, x, dt, A, B, C), kw = decode_inputs(*a)
        return (state, x, dt, A.contiguous(), B, C), kw

    layouts = {"plain A copied": a_copied, "plain": decode_inputs, "model": model_layout_inputs,
               "model untied": functools.partial(model_layout_inputs, tied=False)}
    for name, (h, p) in args.mamba2_shapes.items():
        for n in args.probe_dstates:
            fns, inputs = {}, {}
            for layout, make in layouts.items():
                for backend in (args.baseline, "triton"):
                    a, kw = make(args.batch, h, p, n, device, args.dtype)
                    fn = ops.resolve("selective_state_update", backend, a[1])[1]
                    inputs[f"{layout} | {backend}"] = (a, kw)
                    fns[f"{layout} | {backend}"] = (lambda fn=fn, a=a, kw=kw: fn(*a, **kw))
            samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
            for key, s in samples.items():
                layout, backend = key.split(" | ")
                rows.append({"shape": name, "dstate": n, "layout": layout, "backend": backend,
                             "strides": strides(*inputs[key]), **bound_entry(inputs[key][0], s, bandwidth)})
            log(f"layout {name} N'={n}: " + ", ".join(f"{k} {s.median * 1e6:.1f} us" for k, s in samples.items()))
    return rows


def chain_section(args, device) -> list[dict]:
    """One call per layer on `layers` separate states, back to back: the L2 as a decode step leaves it for the
    next layer (the previous layer's state written, dirty), not as the read flush of "kernel" leaves it (clean)."""
    rows = []
    for name, (h, p) in args.mamba2_shapes.items():
        layers = args.layers[name]
        for n in args.probe_dstates:
            (state, *rest), kw = model_layout_inputs(args.batch, h, p, n, device, args.dtype)
            states = [state] + [state.clone() for _ in range(layers - 1)]
            fns = {}
            for backend in (args.baseline, "triton", *args.probe_backends):
                fn = ops.resolve("selective_state_update", backend, state)[1]

                def chain(fn=fn, states=states, rest=rest, kw=kw):
                    for s in states:
                        fn(s, *rest, **kw)

                fns[backend] = chain
            samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
            for backend, s in samples.items():
                rows.append({"shape": name, "dstate": n, "backend": backend, "layers": layers, **summary(s),
                             "per_call_s": s.median / layers})
            log(f"chain {name} N'={n} x{layers}: " + ", ".join(
                f"{b} {s.median / layers * 1e6:.1f} us/call" for b, s in samples.items()))
            del states, fns
    return rows


def register_probe_backends(args) -> None:
    """Backends for this script only: ours at each probe tile, each probe plug-in (not made what "auto" runs),
    and "skip" (no state update: y left unwritten)."""
    for probe in args.probes:
        if isinstance(probe, str):
            ops.plug_in("selective_state_update", probe, name=probe, activate=False)
        else:
            fn = functools.partial(state_update_triton.selective_state_update_triton, config=probe)
            ops.register("selective_state_update", probe_name(probe), fn,
                         availability=state_update_triton.unavailable_reason)
    ops.register("selective_state_update", "skip", lambda state, x, *a, **kw: torch.empty_like(x))


def probe_name(probe) -> str:
    return probe if isinstance(probe, str) else "triton[" + ",".join(map(str, probe)) + "]"


def pruned_variants(args, preset: str, device) -> dict:
    model = build_model(preset, device=device, dtype=args.dtype).eval()
    vocab = model.config.vocab_size
    tokens = torch.randint(0, vocab, (args.calib_rows, args.calib_len), generator=torch.Generator().manual_seed(0))
    stats = calibrate(model, tokens.to(device), batch_size=args.calib_rows, seq_len=args.calib_len, progress=False)
    d = model.config.d_state
    variants = {f"dense N={d}": model}
    for n in args.uniform:
        ratio = (d - n) / d
        variants[f"uniform N'={n}"], _ = prune_states(model, ratio, criterion="contribution", stats=stats,
                                                      batch_size=args.calib_rows, seq_len=args.calib_len)
    variants["global r=0.5"], report = prune_states(model, 0.5, criterion="contribution", allocation="global",
                                                    stats=stats, batch_size=args.calib_rows, seq_len=args.calib_len)
    for m in variants.values():
        m.configure(backend="auto")
    return variants


def model_section(args, device) -> list[dict]:
    rows = []
    for preset in args.presets:
        variants = pruned_variants(args, preset, device)
        log(f"model {preset}: built and pruned " + ", ".join(
            f"{k}: {sorted({m.d_state for m in v.mixers})}" for k, v in variants.items() if "global" in k))
        fns = {}
        token = torch.randint(0, 256, (args.batch,), device=device)
        for name, model in variants.items():
            for backend in args.model_backends:
                cache = model.allocate_cache(args.batch)

                def step(model=model, cache=cache, backend=backend, token=token):
                    with ops.use("selective_state_update", backend):
                        return model.step(token, cache)

                fns[f"{name} | {backend}"] = step
        with torch.inference_mode():
            samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
        dense = f"dense N={next(iter(variants.values())).config.d_state} | {args.baseline}"
        for key, s in samples.items():
            name, backend = key.split(" | ")
            d_states = [m.d_state for m in variants[name].mixers]
            skip = samples.get(f"{name} | skip")
            rows.append({"preset": preset, "variant": name, "backend": backend, "d_states": d_states,
                         **summary(s), "speedup_vs_dense_baseline": paired_ratio(samples[dense], s),
                         # the decode kernel's cost inside the step: what it adds to the step's other kernels
                         "kernel_per_layer_s": None if skip is None else (s.median - skip.median) / len(d_states)})
            log(f"model {preset} {key}: {s.median * 1e3:.3f} ms ({rows[-1]['speedup_vs_dense_baseline']:.2f}x)")
        del variants, fns
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def ssd_section(args, device) -> list[dict]:
    rows = []
    b, L = args.ssd_batch, args.ssd_len
    h, p = next(iter(args.mamba2_shapes.values()))
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=args.dtype)

    x, dt = randn(b, L, h, p), randn(b, L, h, scale=0.5) - 2
    A, D, dt_bias = -torch.exp(torch.rand(h)).to(device), torch.randn(h).to(device), torch.randn(h).to(device) * 0.1
    fns = {}
    for n in args.ssd_dstates:
        B, C = randn(b, L, 1, n), randn(b, L, 1, n)
        for backend in (args.ssd_baseline, args.ssd_padded):
            if backend == args.ssd_padded and ssd_padded.padded(n) == n:
                continue  # padding is a no-op there
            fn = ops.resolve("ssd_scan", backend, x)[1]
            fns[f"{n} | {backend}"] = (lambda fn=fn, B=B, C=C: fn(x, dt, A, B, C, args.chunk_size, D=D,
                                                                  dt_bias=dt_bias, dt_softplus=True))
    for key, fn in fns.items():
        fn()  # compile and autotune outside the timed rounds
        log(f"ssd {key}: compiled")
    samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
    for key, s in samples.items():
        n, backend = key.split(" | ")
        rows.append({"dstate": int(n), "backend": backend, "padded_to": ssd_padded.padded(int(n))
                     if backend == args.ssd_padded else int(n), **summary(s)})
        log(f"ssd N'={n} {backend}: {s.median * 1e3:.3f} ms")
    return rows


def parse_configs(value: str, flag: str) -> list[tuple[int, ...]]:
    """'8,128,2;8,128,2,1' -> [(8, 128, 2), (8, 128, 2, 1)]: our kernel's configs (a fourth element 1 pairs rows,
    0 does not; without it the kernel decides), checked here."""
    try:
        out = [tuple(int(v) for v in c.split(",")) for c in value.split(";") if c.strip()]
        for config in out:
            state_update_triton.check_config(config)
    except ValueError:
        out = []
    if not out:
        raise SystemExit(f"{flag} takes configs 'BLOCK_M,BLOCK_N,warps[,pairs 0/1];...', got {value!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for state_update.json")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: Triton's interpreter, tiny shapes, 1 round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset to run")
    p.add_argument("--configs", dest="configs_arg", default=None,
                   help="configs section: 'BLOCK_M,BLOCK_N,warps[,pairs];...' (default: " + ";".join(
                       ",".join(map(str, c)) for c in CONFIGS) + ")")
    p.add_argument("--config-dstates", dest="config_dstates_arg", default=None,
                   help="configs section: comma-separated N' (default 128,116,88)")
    p.add_argument("--dstates", dest="dstates_arg", default=None,
                   help="kernel section: comma-separated N' of the Mamba-2 shapes (default "
                        + ",".join(map(str, KERNEL_DSTATES)) + ")")
    p.add_argument("--probes", dest="probes_arg", default=None,
                   help="kernel, chain and model sections: also time our kernel at these configs, "
                        "'BLOCK_M,BLOCK_N,warps;...', or these plug-ins, 'package.module:function' (default: none)")
    args = p.parse_args(argv)
    args.device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    args.dtype, args.batch, args.chunk_size, args.warmup = torch.bfloat16, 64, 256, 2
    args.mamba2_shapes, args.dstates, args.mamba1_dim, args.mamba1_dstates = (
        MAMBA2_SHAPES, KERNEL_DSTATES, 1536, MAMBA1_DSTATES)
    args.configs, args.config_dstates = CONFIGS, (128, 116, 88)
    args.presets, args.uniform, args.calib_rows, args.calib_len = tuple(MAMBA2_SHAPES), UNIFORM, 4, 256
    args.probe_dstates, args.probes, args.layers = PROBE_DSTATES, PROBES, LAYERS
    args.ssd_dstates, args.ssd_batch, args.ssd_len = SSD_DSTATES, 8, 8192
    args.baseline, args.ssd_baseline, args.ssd_padded = "cuda", "cuda", "cuda_padded"
    if args.quick:
        if args.device.type == "cuda":
            raise SystemExit("--quick is the CPU smoke run; hide the GPU (CUDA_VISIBLE_DEVICES=) to run it")
        args.rounds, args.dtype, args.batch, args.chunk_size, args.warmup = 1, torch.float32, 2, 16, 0
        args.mamba2_shapes, args.dstates, args.mamba1_dim, args.mamba1_dstates = {"tiny": (2, 8)}, (24, 13), 16, (5,)
        args.configs = ((16, 16, 4), (4, 8, 1), (8, 4, 1))
        args.config_dstates = (13,)
        args.presets, args.uniform, args.calib_rows, args.calib_len = ("mamba2-tiny",), (20,), 2, 32
        args.probe_dstates, args.layers = (24, 13), {"tiny": 2}
        args.probes = ((8, 32, 1), "perfmamba.ops.selective_scan:selective_state_update_ref")
        args.ssd_dstates, args.ssd_batch, args.ssd_len = (24, 16), 1, 64
        args.baseline, args.ssd_baseline = "reference", "reference"
        args.ssd_padded = "reference_padded"
        ops.register("ssd_scan", "reference_padded", ssd_padded.pad_ssd_scan(ops.ssd_scan_ref))
        autoselect.register_fastest("selective_state_update", ("reference", "triton"), mutated=(0,), reps=1)
    if args.configs_arg is not None:
        args.configs = tuple(parse_configs(args.configs_arg, "--configs"))
    if args.probes_arg is not None:
        args.probes = tuple(p if ":" in p else parse_configs(p, "--probes")[0]
                            for p in args.probes_arg.split(";") if p.strip())
    if args.dstates_arg is not None:
        args.dstates = parse_dstates(args.dstates_arg, "--dstates")
    if args.config_dstates_arg is not None:
        args.config_dstates = parse_dstates(args.config_dstates_arg, "--config-dstates")
    args.probe_backends = tuple(probe_name(c) for c in args.probes)
    args.model_backends = (args.baseline, "triton", "fastest", *args.probe_backends, "skip")
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    register_probe_backends(args)
    configure_process()
    device = args.device
    log(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; sections {args.sections}")
    doc = {"config": {"quick": args.quick, "device": str(device), "dtype": str(args.dtype), "batch": args.batch,
                      "rounds": args.rounds, "baseline": args.baseline, "sections": args.sections,
                      "configs": [list(c) for c in args.configs]},
           "copy": copy_bandwidth(args, device), "kernel": [], "configs": [], "layout": [], "chain": [], "model": [],
           "ssd": []}
    bandwidth = doc["copy"]["bandwidth_Bps"]
    with torch.inference_mode():
        if "kernel" in args.sections:
            doc["kernel"] = kernel_section(args, device, bandwidth)
        if "configs" in args.sections:
            doc["configs"] = config_section(args, device)
        if "layout" in args.sections:
            doc["layout"] = layout_section(args, device, bandwidth)
        if "chain" in args.sections:
            doc["chain"] = chain_section(args, device)
    if "model" in args.sections:
        doc["model"] = model_section(args, device)
    with torch.inference_mode():
        if "ssd" in args.sections:
            doc["ssd"] = ssd_section(args, device)
    fastest = ops.registry._op("selective_state_update").impls["fastest"]
    doc["fastest_choices"] = {str(k): v[0] for k, v in fastest.choices.items()}
    doc["fastest_timings"] = {str(k): v for k, v in fastest.timings.items()}  # seconds per candidate, per key
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / "state_update.json", doc, kind="state_update_kernels")
    print(tables(doc))
    log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
