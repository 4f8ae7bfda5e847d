# Session 9 diagnostic, as run on the H200. Usage: PRESET MODE L BATCH OUT.json
# #15: why is mamba1-130m prefill 2% slower than mamba-ssm's in graph replay, with equal eager kernel sums?
# Profiles graph replays (per-kernel durations, gaps, span) and eager calls of both sides, in one process.
import json, sys, statistics, torch
from torch.autograd import DeviceType
from perfmamba.bench.cases import REFERENCE_LEVEL, Case
from perfmamba.bench.reference_model import reference_workload
from perfmamba.bench.workloads import ModelCache, make_workload
from perfmamba.timing import GraphTimer, time_interleaved

preset, mode, L, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = sys.argv[5]
dev = torch.device("cuda")
case = Case(preset, REFERENCE_LEVEL, mode, L, b, dtype="bf16")
models = ModelCache()
sides = {"ours": make_workload(case, dev, models).fn, "mamba_ssm": reference_workload(case, dev, models).fn}
res = {}

def kernels(prof, reps):
    ev = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    ev.sort(key=lambda e: e.time_range.start)
    by = {}
    for e in ev:
        d = by.setdefault(e.name[:90], [0.0, 0]); d[0] += e.time_range.elapsed_us(); d[1] += 1
    tot = sum(v[0] for v in by.values())
    span = (ev[-1].time_range.end - ev[0].time_range.start) if ev else 0
    gaps = [max(0, ev[i + 1].time_range.start - ev[i].time_range.end) for i in range(len(ev) - 1)]
    big = sorted(gaps)[-10:]
    return {"sum_ms": tot / reps / 1e3, "span_ms": span / reps / 1e3, "n": len(ev) / reps,
            "gap_ms": sum(gaps) / reps / 1e3, "biggest_gaps_us": big,
            "by": sorted(([k, v[0] / reps / 1e3, v[1] / reps] for k, v in by.items()), key=lambda r: -r[1])}

for name, fn in sides.items():
    t = GraphTimer(fn, dev, flush_l2=False)
    g = t._graph
    for _ in range(3): g.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3): g.replay()
        torch.cuda.synchronize()
    res[name + "_graph"] = kernels(prof, 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3): fn()
        torch.cuda.synchronize()
    res[name + "_eager"] = kernels(prof, 3)
    # graph replay times without the profiler
    st = [torch.cuda.Event(enable_timing=True) for _ in range(12)]
    for i in range(6):
        st[2 * i].record(); g.replay(); st[2 * i + 1].record()
    torch.cuda.synchronize()
    res[name + "_replay_ms"] = [st[2 * i].elapsed_time(st[2 * i + 1]) for i in range(6)]
    del t, g
    torch.cuda.empty_cache()
    for k in ("graph", "eager"):
        r = res[name + "_" + k]
        print(f"{name} {k}: sum {r['sum_ms']:.3f} span {r['span_ms']:.3f} gaps {r['gap_ms']:.3f} n {r['n']:.0f} big gaps {[round(x,1) for x in r['biggest_gaps_us']]}")
    print(f"{name} replay ms {[round(x,3) for x in res[name + '_replay_ms']]}")
# per-kernel diff graph ours vs theirs
a = {k: v for k, v, n in res["ours_graph"]["by"]}; bb = {k: v for k, v, n in res["mamba_ssm_graph"]["by"]}
an = {k: n for k, v, n in res["ours_graph"]["by"]}; bn = {k: n for k, v, n in res["mamba_ssm_graph"]["by"]}
for k in sorted(set(a) | set(bb), key=lambda k: -abs(a.get(k, 0) - bb.get(k, 0)))[:14]:
    print(f"  {a.get(k,0):8.3f} ({an.get(k,0):4.0f}) {bb.get(k,0):8.3f} ({bn.get(k,0):4.0f})  {k}")
s = time_interleaved(sides, dev, rounds=10, warmup=2, flush_l2=False)
res["warm_l2_interleaved_ms"] = {k: statistics.median(v.seconds) * 1e3 for k, v in s.items()}
print("interleaved, L2 warm:", res["warm_l2_interleaved_ms"])
json.dump(res, open(out, "w"), indent=1)
