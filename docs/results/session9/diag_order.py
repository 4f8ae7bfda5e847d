# Session 9 diagnostic, as run on the H200 before commit 316222d (timing then captured each graph in its own pool;
# SHARED_POOL=1 patched in one shared pool, which 316222d made the default). Usage: PRESET MODE L BATCH OUT.json [ROUNDS]
# #15: is the 2% of mamba1-130m prefill the model, or which graph was captured first (memory placement)?
import json, sys, statistics, torch
from perfmamba.bench.cases import REFERENCE_LEVEL, Case
from perfmamba.bench.reference_model import reference_workload
from perfmamba.bench.workloads import ModelCache, make_workload
from perfmamba.timing import time_interleaved, paired_ratio
import os, perfmamba.timing as T
if os.environ.get("SHARED_POOL"):
    POOL = torch.cuda.graph_pool_handle()
    def _capture(self, calls, flush_only=False):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=POOL):
            for _ in range(calls):
                if self._flush is not None:
                    T._flush(self._flush)
                if not flush_only:
                    self.fn()
        torch.cuda.synchronize(self.device)
        return graph
    T.GraphTimer._capture = _capture
    print("shared pool")

preset, mode, L, b, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dev = torch.device("cuda")
case = Case(preset, REFERENCE_LEVEL, mode, L, b, dtype="bf16")
models = ModelCache()
mk = {"ours": lambda: make_workload(case, dev, models).fn, "mamba_ssm": lambda: reference_workload(case, dev, models).fn}
res = {}
for first, second in (("ours", "mamba_ssm"), ("mamba_ssm", "ours"), ("ours", "ours"), ("mamba_ssm", "mamba_ssm"),
                      ("ours", "mamba_ssm"), ("mamba_ssm", "ours")):
    fns = {"A_" + first: mk[first](), "B_" + second: mk[second]()}
    s = time_interleaved(fns, dev, rounds=int(sys.argv[6]) if len(sys.argv) > 6 else 8, warmup=2)
    (ka, sa), (kb, sb) = s.items()
    r = paired_ratio(sa, sb)
    key = f"{ka}/{kb}"
    res.setdefault(key, []).append({"a_ms": statistics.median(sa.seconds) * 1e3, "b_ms": statistics.median(sb.seconds) * 1e3, "ratio": r})
    print(f"captured first {ka}, second {kb}: {res[key][-1]['a_ms']:.3f} / {res[key][-1]['b_ms']:.3f} ms = {r:.4f}", flush=True)
    del fns, s
    torch.cuda.empty_cache()
json.dump(res, open(out, "w"), indent=1)
