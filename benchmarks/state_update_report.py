"""The markdown tables benchmarks/state_update_kernels.py prints from its JSON document: one per section that
produced rows (a section not run, or a kernel timed with no probes, prints nothing)."""


def _table(title: str, columns: list[str], align: str, rows: list[str]) -> list[str]:
    if not rows:
        return []
    return ["", f"### {title}", "", "| " + " | ".join(columns) + " |", align, *rows]


def _us(seconds: float | None) -> str:
    """Seconds as microseconds to 0.1, or "-" where there is no time."""
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"


def _kernel_rows(doc: dict, base: str) -> list[str]:
    out, first = [], {}
    for r in doc["kernel"]:
        t = r["triton"]["median_s"]
        first.setdefault(r["shape"], t)
        b = r[base]
        out.append(f"| {r['shape']} | {r['dstate']} | {_us(b['median_s'])} ({b['of_bound']:.0%}) | {_us(t)} "
                   f"({r['triton']['of_bound']:.0%}) | {r['speedup']:.2f}x | {first[r['shape']] / t:.2f}x |")
    return out


def _probe_rows(doc: dict) -> list[str]:
    probes = list(doc["kernel"][0].get("vs_probes", {})) if doc["kernel"] else []
    out, first = [], {}
    for r in doc["kernel"]:
        for b in probes:
            t = r[b]["median_s"]
            first.setdefault((r["shape"], b), t)
            out.append(f"| {r['shape']} | {r['dstate']} | {b} | {_us(t)} | {1 / r['vs_probes'][b]:.2f}x | "
                       f"{first[(r['shape'], b)] / t:.2f}x |")
    return out


def tables(doc: dict) -> str:
    base = doc["config"]["baseline"]
    configs = doc.get("configs", [])
    names = list(configs[0]["configs"]) if configs else []
    out = _table("Decode kernel, batch 64 (us; % of the copy-bandwidth bound)",
                 ["shape", "N'", base, "triton", "speedup", "triton vs its N=max"], "|---|---:|---:|---:|---:|---:|",
                 _kernel_rows(doc, base))
    out += _table("Probes beside it (us; triton's time over the probe's; the probe's at the shape's first N' over "
                  "its own)", ["shape", "N'", "probe", "us", "triton / probe", "first N' / this"],
                  "|---|---:|---|---:|---:|---:|", _probe_rows(doc))
    out += _table("Tile sweep (us; config BLOCK_M,BLOCK_N,warps)", ["shape", "N'", *names, base],
                  "|---|---:|" + "---:|" * (len(names) + 1),
                  [f"| {r['shape']} | {r['dstate']} | "
                   + " | ".join(_us(r['configs'][n]['median_s']) for n in names)
                   + f" | {_us(r[base]['median_s'])} |" for r in configs])
    out += _table("Kernel alone by call layout (us; % of the copy-bandwidth bound)",
                  ["shape", "N'", "layout", "backend", "us"], "|---|---:|---|---|---:|",
                  [f"| {r['shape']} | {r['dstate']} | {r['layout']} | {r['backend']} | {_us(r['median_s'])} "
                   f"({r['of_bound']:.0%}) |" for r in doc.get("layout", [])])
    out += _table("Chain of one call per layer, no flush between (us per call)",
                  ["shape", "N'", "backend", "us/call"], "|---|---:|---|---:|",
                  [f"| {r['shape']} | {r['dstate']} | {r['backend']} | {_us(r['per_call_s'])} |"
                   for r in doc.get("chain", [])])
    out += _table("Model decode step, batch 64 (ms; speedup against dense on the baseline kernel; decode kernel per "
                  "layer in the step = (ms - skip ms) / layers)",
                  ["preset", "variant", "backend", "ms", "speedup", "kernel us/layer"], "|---|---|---|---:|---:|---:|",
                  [f"| {r['preset']} | {r['variant']} | {r['backend']} | {r['median_s'] * 1e3:.3f} | "
                   f"{r['speedup_vs_dense_baseline']:.2f}x | "
                   f"{_us(r.get('kernel_per_layer_s'))} |" for r in doc["model"]])
    out += _table("Prefill scan (ssd_scan), ms", ["N'", "backend", "padded to", "ms"], "|---:|---|---:|---:|",
                  [f"| {r['dstate']} | {r['backend']} | {r['padded_to']} | {r['median_s'] * 1e3:.3f} |"
                   for r in doc["ssd"]])
    return "\n".join(out[1:])
