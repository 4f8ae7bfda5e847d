"""Issue 17 on a GPU: does the decode step's cost follow the pruned N' with our Triton kernel?

    python3 benchmarks/state_update_kernels.py --out DIR            # CUDA: ~3 min on an H200, kernels compiled
    python3 benchmarks/state_update_kernels.py --quick --out DIR    # CPU smoke run (Triton's interpreter)

Sections, each timed by CUDA-graph replay (perfmamba.timing, L2 flushed), candidates interleaved round by round:
- copy: the device's copy bandwidth (bytes read + written / time), for the bandwidth bound of the kernels;
- kernel: selective_state_update at batch 64, bf16, mamba-ssm's kernel ("cuda") against ours ("triton"):
  Mamba-2 130m / 1.3b shapes (tied per-head dt and A, as the model calls it) and Mamba-1 130m;
- configs: our kernel's (BLOCK_M, BLOCK_N, num_warps) around the default, for tuning;
- model: MambaLM.step at batch 64, dense and pruned (uniform N' = 116, 88, 64; global r = 0.5, contribution), with
  the decode kernel taken from "cuda", "triton" or "fastest" (perfmamba.ops.autoselect);
- ssd: the prefill scan (ssd_scan) at b8 L8192, 130m shape, mamba-ssm's kernels plain and with N' zero-padded to
  a multiple of 16 ("cuda_padded", perfmamba.ops.ssd_padded).
Writes DIR/state_update.json (every sample, environment, git commit) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if "--quick" in sys.argv:  # the interpreter must be chosen before triton is first imported (see the kernel module)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba import build_model, ops  # noqa: E402
from perfmamba.ops import autoselect, ssd_padded, state_update_triton  # noqa: E402, F401 - they register backends
from perfmamba.pruning import calibrate, prune_states  # noqa: E402
from perfmamba.results import write_json  # noqa: E402
from perfmamba.timing import configure_process, paired_ratio, time_fn, time_interleaved  # noqa: E402

START = time.perf_counter()
MAMBA2_SHAPES = {"mamba2-130m": (24, 64), "mamba2-1.3b": (64, 64)}  # (nheads, headdim), d_inner = their product
KERNEL_DSTATES = (128, 116, 96, 88, 64, 36, 12)
MAMBA1_DSTATES = (16, 12, 8, 4)
CONFIGS = ((16, 16, 4), (32, 16, 4), (64, 16, 4), (32, 32, 4), (64, 32, 8), (128, 16, 8))
UNIFORM = (116, 88, 64)
SSD_DSTATES = (128, 116, 96, 64)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def summary(samples) -> dict:
    return {**samples.summary(), "samples_s": list(samples.seconds)}


# --- inputs -------------------------------------------------------------------------------------------------
def decode_inputs(batch: int, nheads: int, headdim: int, dstate: int, device, dtype, mamba1: bool = False):
    """One decode step's arguments as the models pass them: A, D, dt_bias fp32, activations in `dtype`."""
    g = torch.Generator(device="cpu").manual_seed(dstate)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    if mamba1:
        d = nheads * headdim
        args = (randn(batch, d, dstate).to(dtype), randn(batch, d).to(dtype),
                (randn(batch, d, scale=0.5) - 2).to(dtype), -torch.exp(randn(d, dstate)),
                randn(batch, dstate).to(dtype), randn(batch, dstate).to(dtype))
        return args, dict(D=randn(d), z=randn(batch, d).to(dtype), dt_bias=randn(d, scale=0.1), dt_softplus=True)
    h, p = nheads, headdim
    args = (randn(batch, h, p, dstate).to(dtype), randn(batch, h, p).to(dtype),
            (randn(batch, h, scale=0.5) - 2).to(dtype)[..., None].expand(-1, -1, p),
            -torch.exp(randn(h))[:, None, None].expand(-1, p, dstate),
            randn(batch, 1, dstate).to(dtype), randn(batch, 1, dstate).to(dtype))
    kwargs = dict(D=randn(h)[:, None].expand(-1, p), dt_bias=randn(h, scale=0.1)[:, None].expand(-1, p),
                  dt_softplus=True)
    return args, kwargs


def state_bytes(args) -> int:
    state, x, *_ = args
    # the state is read and written; x, B, C and y are a few per cent of it and also counted
    return 2 * state.numel() * state.element_size() + 2 * x.numel() * x.element_size() + sum(
        t.numel() * t.element_size() for t in args[4:6])


def bound_entry(args, samples, bandwidth: float) -> dict:
    bound = state_bytes(args) / bandwidth
    return {**summary(samples), "bytes": state_bytes(args), "bound_s": bound, "of_bound": bound / samples.median}


# --- sections -----------------------------------------------------------------------------------------------
def copy_bandwidth(args, device) -> dict:
    n = (64 if args.quick else 1024) * 2**20 // 2
    src, dst = torch.randn(n, device=device).to(torch.bfloat16), torch.empty(n, device=device, dtype=torch.bfloat16)
    samples = time_fn(lambda: dst.copy_(src), device, rounds=args.rounds, warmup=args.warmup)
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
            for backend in (args.baseline, "triton"):
                a, kw = decode_inputs(args.batch, h, p, n, device, args.dtype, mamba1)
                fn = ops.resolve("selective_state_update", backend, a[1])[1]
                inputs[backend] = (a, kw)
                fns[backend] = (lambda fn=fn, a=a, kw=kw: fn(*a, **kw))
            # one step of each from equal states must agree before their speed means anything
            (a0, kw0), (a1, kw1) = inputs.values()
            a1[0].copy_(a0[0])
            y0, y1 = fns[args.baseline](), fns["triton"]()
            diff = (y1.float() - y0.float()).abs()
            agree = bool((diff <= 5e-2 + 1e-2 * y0.float().abs()).all())  # mamba-ssm's bf16 tolerance
            if not agree:
                log(f"MISMATCH kernel {name} N'={n}: triton and {args.baseline} differ by up to {diff.max():.3g}")
            samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
            entry = {"shape": name, "dstate": n, "mamba1": mamba1, "outputs_agree": agree,
                     "max_abs_diff": diff.max().item(),
                     **{b: bound_entry(inputs[b][0], s, bandwidth) for b, s in samples.items()},
                     "speedup": paired_ratio(samples[args.baseline], samples["triton"])}
            rows.append(entry)
            log(f"kernel {name} N'={n}: {args.baseline} {samples[args.baseline].median * 1e6:.1f} us, "
                f"triton {samples['triton'].median * 1e6:.1f} us ({entry['triton']['of_bound']:.0%} of bound)")
    return rows


def config_section(args, device) -> list[dict]:
    rows = []
    h, p = next(iter(args.mamba2_shapes.values()))
    for n in args.config_dstates:
        fns = {}
        for config in args.configs:
            a, kw = decode_inputs(args.batch, h, p, n, device, args.dtype)
            fns[",".join(map(str, config))] = (
                lambda a=a, kw=kw, c=config: state_update_triton.selective_state_update_triton(*a, **kw, config=c))
        samples = time_interleaved(fns, device, rounds=args.rounds, warmup=args.warmup)
        best = min(samples, key=lambda k: samples[k].median)
        rows.append({"dstate": n, "default": list(state_update_triton.default_config(p, n)), "best": best,
                     "configs": {k: summary(s) for k, s in samples.items()}})
        log(f"configs N'={n}: best {best} {samples[best].median * 1e6:.1f} us, default "
            f"{state_update_triton.default_config(p, n)}")
    return rows


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
            rows.append({"preset": preset, "variant": name, "backend": backend, "d_states": d_states,
                         **summary(s), "speedup_vs_dense_baseline": paired_ratio(samples[dense], s)})
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


# --- report -------------------------------------------------------------------------------------------------
def tables(doc: dict) -> str:
    base = doc["config"]["baseline"]
    out = ["### Decode kernel, batch 64 (us; % of the copy-bandwidth bound)", "",
           f"| shape | N' | {base} | triton | speedup | triton vs its N=max |", "|---|---:|---:|---:|---:|---:|"]
    first = {}
    for r in doc["kernel"]:
        t = r["triton"]["median_s"]
        first.setdefault(r["shape"], t)
        b = r[base]
        out.append(f"| {r['shape']} | {r['dstate']} | {b['median_s'] * 1e6:.1f} ({b['of_bound']:.0%}) | {t * 1e6:.1f} "
                   f"({r['triton']['of_bound']:.0%}) | {r['speedup']:.2f}x | {first[r['shape']] / t:.2f}x |")
    out += ["", "### Model decode step, batch 64 (ms; speedup against dense on the baseline kernel)", "",
            "| preset | variant | backend | ms | speedup |", "|---|---|---|---:|---:|"]
    for r in doc["model"]:
        out.append(f"| {r['preset']} | {r['variant']} | {r['backend']} | {r['median_s'] * 1e3:.3f} | "
                   f"{r['speedup_vs_dense_baseline']:.2f}x |")
    out += ["", "### Prefill scan (ssd_scan), ms", "", "| N' | backend | padded to | ms |", "|---:|---|---:|---:|"]
    for r in doc["ssd"]:
        out.append(f"| {r['dstate']} | {r['backend']} | {r['padded_to']} | {r['median_s'] * 1e3:.3f} |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for state_update.json")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: Triton's interpreter, tiny shapes, 1 round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--sections", default="kernel,configs,model,ssd", help="comma-separated subset to run")
    args = p.parse_args(argv)
    args.device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    args.dtype, args.batch, args.chunk_size, args.warmup = torch.bfloat16, 64, 256, 2
    args.mamba2_shapes, args.dstates, args.mamba1_dim, args.mamba1_dstates = (
        MAMBA2_SHAPES, KERNEL_DSTATES, 1536, MAMBA1_DSTATES)
    args.configs, args.config_dstates = CONFIGS, (128, 116, 88)
    args.presets, args.uniform, args.calib_rows, args.calib_len = tuple(MAMBA2_SHAPES), UNIFORM, 4, 256
    args.model_backends = ("cuda", "triton", "fastest")
    args.ssd_dstates, args.ssd_batch, args.ssd_len = SSD_DSTATES, 8, 8192
    args.baseline, args.ssd_baseline, args.ssd_padded = "cuda", "cuda", "cuda_padded"
    if args.quick:
        if args.device.type == "cuda":
            raise SystemExit("--quick is the CPU smoke run; hide the GPU (CUDA_VISIBLE_DEVICES=) to run it")
        args.rounds, args.dtype, args.batch, args.chunk_size, args.warmup = 1, torch.float32, 2, 16, 0
        args.mamba2_shapes, args.dstates, args.mamba1_dim, args.mamba1_dstates = {"tiny": (2, 8)}, (24, 13), 16, (5,)
        args.configs, args.config_dstates = ((16, 16, 4), (4, 8, 1)), (13,)
        args.presets, args.uniform, args.calib_rows, args.calib_len = ("mamba2-tiny",), (20,), 2, 32
        args.model_backends = ("reference", "triton", "fastest")
        args.ssd_dstates, args.ssd_batch, args.ssd_len = (24, 16), 1, 64
        args.baseline, args.ssd_baseline = "reference", "reference"
        args.ssd_padded = "reference_padded"
        ops.register("ssd_scan", "reference_padded", ssd_padded.pad_ssd_scan(ops.ssd_scan_ref))
        autoselect.register_fastest("selective_state_update", ("reference", "triton"), mutated=(0,), reps=1)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - {"kernel", "configs", "model", "ssd"}
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from kernel, configs, model, ssd")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    configure_process()
    device = args.device
    log(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; sections {args.sections}")
    doc = {"config": {"quick": args.quick, "device": str(device), "dtype": str(args.dtype), "batch": args.batch,
                      "rounds": args.rounds, "baseline": args.baseline, "sections": args.sections,
                      "configs": [list(c) for c in args.configs]},
           "copy": copy_bandwidth(args, device), "kernel": [], "configs": [], "model": [], "ssd": []}
    bandwidth = doc["copy"]["bandwidth_Bps"]
    with torch.inference_mode():
        if "kernel" in args.sections:
            doc["kernel"] = kernel_section(args, device, bandwidth)
        if "configs" in args.sections:
            doc["configs"] = config_section(args, device)
    if "model" in args.sections:
        doc["model"] = model_section(args, device)
    with torch.inference_mode():
        if "ssd" in args.sections:
            doc["ssd"] = ssd_section(args, device)
    doc["fastest_choices"] = {str(k): v[0] for k, v in ops.registry._op("selective_state_update")
                              .impls["fastest"].choices.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / "state_update.json", doc, kind="state_update_kernels")
    print(tables(doc))
    log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
