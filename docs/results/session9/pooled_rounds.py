# Session 9: ours / mamba-ssm per round, pooled over the processes of vs_mamba_ssm.py's step section.
# Usage: python3 pooled_rounds.py DIR (raw.tar.xz extracted). Rounds are resampled within each process (bootstrap).
import json, random, statistics, sys
from pathlib import Path

FILES = ("vs_step_process1.json", "vs_step_process2.json", "vs_step_mamba2-1.3b_alone.json")
rounds = {}
for name in FILES:
    for r in json.loads((Path(sys.argv[1]) / name).read_text())["step"]:
        ratios = [a / b for a, b in zip(r["ours"]["samples_s"], r["mamba_ssm"]["samples_s"])]
        rounds.setdefault((r["preset"], r["mode"]), []).append(ratios)
random.seed(0)
print("| point | rounds (processes) | per-round range | pooled median | 95% interval |")
print("|---|---:|---|---:|---|")
for (preset, mode), per_process in rounds.items():
    pooled = [x for p in per_process for x in p]
    boot = sorted(statistics.median([x for p in per_process for x in random.choices(p, k=len(p))])
                  for _ in range(4000))
    print(f"| {preset} {mode} | {len(pooled)} ({len(per_process)}) | {min(pooled):.3f}-{max(pooled):.3f} | "
          f"{statistics.median(pooled):.4f} | {boot[100]:.4f}-{boot[3899]:.4f} |")
