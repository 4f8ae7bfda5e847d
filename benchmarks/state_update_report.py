"""The markdown tables benchmarks/state_update_kernels.py prints from its JSON document."""


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
    probes = list(doc["kernel"][0].get("vs_probes", {})) if doc["kernel"] else []
    out += ["", "### Probes beside it (us; triton's time over the probe's; the probe's at the shape's first N' over "
            "its own)", "", "| shape | N' | probe | us | triton / probe | first N' / this |",
            "|---|---:|---|---:|---:|---:|"]
    first = {}
    for r in doc["kernel"]:
        for b in probes:
            t = r[b]["median_s"]
            first.setdefault((r["shape"], b), t)
            out.append(f"| {r['shape']} | {r['dstate']} | {b} | {t * 1e6:.1f} | {1 / r['vs_probes'][b]:.2f}x | "
                       f"{first[(r['shape'], b)] / t:.2f}x |")
    configs = doc.get("configs", [])
    names = list(configs[0]["configs"]) if configs else []
    out += ["", "### Tile sweep (us; config BLOCK_M,BLOCK_N,warps)", "",
            f"| shape | N' | {' | '.join(names)} | {base} |", "|---|---:|" + "---:|" * (len(names) + 1)]
    for r in configs:
        times = " | ".join(f"{r['configs'][n]['median_s'] * 1e6:.1f}" for n in names)
        out.append(f"| {r['shape']} | {r['dstate']} | {times} | {r[base]['median_s'] * 1e6:.1f} |")
    out += ["", "### Kernel alone by call layout (us; % of the copy-bandwidth bound)", "",
            "| shape | N' | layout | backend | us |", "|---|---:|---|---|---:|"]
    for r in doc.get("layout", []):
        out.append(f"| {r['shape']} | {r['dstate']} | {r['layout']} | {r['backend']} | {r['median_s'] * 1e6:.1f} "
                   f"({r['of_bound']:.0%}) |")
    out += ["", "### Chain of one call per layer, no flush between (us per call)", "",
            "| shape | N' | backend | us/call |", "|---|---:|---|---:|"]
    for r in doc.get("chain", []):
        out.append(f"| {r['shape']} | {r['dstate']} | {r['backend']} | {r['per_call_s'] * 1e6:.1f} |")
    out += ["", "### Model decode step, batch 64 (ms; speedup against dense on the baseline kernel; "
            "decode kernel per layer in the step = (ms - skip ms) / layers)", "",
            "| preset | variant | backend | ms | speedup | kernel us/layer |", "|---|---|---|---:|---:|---:|"]
    for r in doc["model"]:
        k = r.get("kernel_per_layer_s")
        out.append(f"| {r['preset']} | {r['variant']} | {r['backend']} | {r['median_s'] * 1e3:.3f} | "
                   f"{r['speedup_vs_dense_baseline']:.2f}x | {'-' if k is None else f'{k * 1e6:.1f}'} |")
    out += ["", "### Prefill scan (ssd_scan), ms", "", "| N' | backend | padded to | ms |", "|---:|---|---:|---:|"]
    for r in doc["ssd"]:
        out.append(f"| {r['dstate']} | {r['backend']} | {r['padded_to']} | {r['median_s'] * 1e3:.3f} |")
    return "\n".join(out)
