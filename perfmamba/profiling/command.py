"""`perfmamba profile`: the arguments and the one call behind them.

`run_profile` is what the command does, as a function: profile a model (and, with `compare`, a pruned one under
the same settings), write the report directory, return the text to print. `add_arguments` / `main` let the CLI
stay a thin parser: `perfmamba profile --model PRESET_OR_PATH --seqlens 64,128 --batch 1 --mode prefill,decode
--out DIR [--force] [--compare PRUNED_DIR]`.

What can be known to fail is refused before any work, in one line: an `--out` that cannot be written or holds
something not asked to be replaced, and a point whose memory bound (`footprint`) exceeds what the device has free.
The report directory is written whole or not at all (`outputs.replacing_directory`), and only when some point was
measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from perfmamba.models import MambaLM, ModelConfig, get_preset, read_config
from perfmamba.outputs import check_directory, replacing_directory
from perfmamba.profiling.compare import ProfileComparison, compare_profiles, format_comparison, write_comparison
from perfmamba.profiling.config import ProfileConfig
from perfmamba.profiling.footprint import check_fits
from perfmamba.profiling.formatting import format_table
from perfmamba.profiling.report import write_report
from perfmamba.profiling.result import ProfileResult
from perfmamba.profiling.sweep import plan_points, profile


@dataclass
class ProfileRun:
    result: ProfileResult
    text: str  # the table (and the comparison) as printed
    files: dict[str, Path] = field(default_factory=dict)
    compared: ProfileResult | None = None
    comparison: ProfileComparison | None = None

    @property
    def unmeasured(self) -> list[ProfileResult]:
        """The profiles (the model's, the compared one's) of which no point finished."""
        return [r for r in (self.result, self.compared) if r is not None and not r.ok_points()]

    @property
    def measured(self) -> bool:
        return not self.unmeasured


def model_config(model: MambaLM | ModelConfig | str | Path) -> ModelConfig:
    """The config of what `profile` accepts as a model, without building it (a checkpoint's config.json)."""
    if isinstance(model, MambaLM):
        return model.config
    if isinstance(model, ModelConfig):
        return model
    if Path(model).exists():
        return read_config(model)
    return get_preset(str(model))


def check_memory(model: MambaLM | ModelConfig | str | Path, config: ProfileConfig | None = None) -> None:
    """Raise `footprint.MemoryPlanError` (a ValueError, one line) if a point of `config`'s sweep cannot fit in the
    device's free memory with `model`'s weights (unless already loaded): before any point runs."""
    cfg = (config or ProfileConfig()).resolved()
    cpu = cfg.device.startswith("cpu")
    points = dict.fromkeys((p.mode, p.batch, p.seqlen) for p in plan_points(cfg) if not (cpu and p.path == "fused"))
    if isinstance(model, (MambaLM, ModelConfig)):  # named as `profile` names them
        name = getattr(model, "name_or_path", None) or ("model" if isinstance(model, MambaLM) else "custom")
    else:
        name = str(model)
    check_fits(model_config(model), list(points), dtype=cfg.dtype, device=cfg.device, name=name,
               weights=not isinstance(model, MambaLM))


def run_profile(
    model: str | Path, config: ProfileConfig | None = None, *, out_dir: str | Path | None = None,
    compare: str | Path | None = None, plots: bool = True, force: bool = False,
) -> ProfileRun:
    """Profile `model` (preset or checkpoint directory); with `compare` also the pruned checkpoint `compare`
    under the same config (the device's peaks measured once for both). With `out_dir` write profile.json /
    .csv / .txt and plots there (the pruned model's report in `out_dir/compared`, the side-by-side in
    compare.*), replacing what `out_dir` holds only with `force`; nothing is written if no point was measured.
    Before any work: `out_dir` is checked (`outputs.OutputError`) and every point's memory (`check_memory`)."""
    config = config or ProfileConfig()
    if out_dir is not None:
        check_directory(out_dir, force=force)
    for spec in (model, compare):
        if spec is not None:
            check_memory(spec, config)
    result = profile(model, config)
    run = ProfileRun(result=result, text=format_table(result))
    if compare is not None:
        run.compared = profile(compare, config, peaks=result.peaks)
        run.comparison = compare_profiles(result, run.compared)
        run.text += "\n" + format_comparison(run.comparison)
    if out_dir is not None and run.measured:
        with replacing_directory(out_dir, force=force) as staging:
            files = write_report(result, staging, plots=plots)
            if run.compared is not None and run.comparison is not None:
                compared_files = write_report(run.compared, staging / "compared", plots=plots)
                files.update({f"compared_{k}": v for k, v in compared_files.items()})
                files.update(write_comparison(run.comparison, staging))
        run.files = {k: Path(out_dir) / v.relative_to(staging) for k, v in files.items()}
    return run


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def _names(*options: str):
    """A parser of comma-separated names among `options`, where "both" means all of them (the help's word)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v for v in text.replace(" ", "").split(",") if v)
        names = tuple(dict.fromkeys(o for n in names for o in (options if n == "both" else (n,))))
        unknown = [n for n in names if n not in options]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected {', '.join(options)} or both, got {text!r}")
        return names

    return parse


def default_out(model: str | Path) -> Path:
    """Where a report goes when --out is not given: a new folder per run under ./perfmamba-profile, named by the
    model and the time, so that nothing earlier is overwritten."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("perfmamba-profile") / f"{Path(str(model)).name}-{stamp}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `perfmamba profile` options."""
    parser.add_argument("--model", required=True, help="preset name (random weights) or checkpoint directory")
    parser.add_argument("--seqlens", type=_ints, default=None,
                        help="comma-separated sequence lengths (default 64..16384 on CUDA, 64..1024 on a CPU)")
    parser.add_argument("--batch", type=_ints, default=(1,), help="comma-separated batch sizes (default 1)")
    parser.add_argument("--mode", type=_names("prefill", "decode"), default=("prefill", "decode"),
                        help="prefill, decode or both (default both)")
    parser.add_argument("--path", type=_names("unfused", "fused"), default=("unfused",),
                        help="unfused, fused (CUDA, mamba-ssm) or both (default unfused)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="default bfloat16 on CUDA, float32 on a CPU")
    parser.add_argument("--backend", default="auto", help="ops backend: auto, reference, cuda or a plug-in")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per call (default 20 GPU / 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 5 GPU / 1 CPU)")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time each prefill replayed from a CUDA graph")
    parser.add_argument("--decode-timing", default="graph", choices=("graph", "eager"),
                        help="CUDA decode step: replayed from a CUDA graph, per component from its kernels (default),"
                             " or launched eagerly (the host's launch cost included)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting points after this many seconds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on a CPU (default 1: comparable across machines; 0 keeps torch's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report directory: JSON, CSV, table, plots (default: a new perfmamba-profile/MODEL-TIME)")
    parser.add_argument("--no-out", action="store_true", help="print the table only, write no report")
    parser.add_argument("--force", action="store_true", help="replace what --out holds (e.g. an earlier report)")
    parser.add_argument("--compare", type=Path, default=None, metavar="PRUNED_DIR",
                        help="also profile this (pruned) checkpoint and show per-component speedup and memory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> ProfileConfig:
    return ProfileConfig(
        seqlens=args.seqlens, batch_sizes=args.batch, modes=args.mode, paths=args.path, device=args.device,
        dtype=args.dtype, backend=args.backend, rounds=args.rounds, warmup=args.warmup,
        cuda_graphs=args.cuda_graphs, decode_timing=args.decode_timing, memory=not args.no_memory,
        budget_s=args.budget_s, cpu_threads=args.threads or None, progress=not args.quiet,
    )


def main(args: argparse.Namespace) -> int:
    """The `perfmamba profile` handler: prints the table (and comparison), writes `--out` if given and names what
    it wrote; exit status 1 when no point was measured (the table says why)."""
    out = None if args.no_out else args.out or default_out(args.model)
    run = run_profile(args.model, config_from_args(args), out_dir=out, compare=args.compare,
                      plots=not args.no_plots, force=args.force)
    print(run.text, end="")
    if run.files:
        print(f"\nwrote {len(run.files)} files:")
        for path in run.files.values():
            print(f"  {path}")
        plots = sum(path.suffix == ".png" for path in run.files.values())
        print(f"report: {out}/ (profile.txt, .json, .csv, {plots} plots)")
    for result in run.unmeasured:
        reasons = "; ".join(dict.fromkeys(f"{p.status} ({p.message})" if p.message else p.status
                                          for p in result.points))
        written = "; nothing written" if out is not None else ""
        print(f"perfmamba profile: error: no point of {result.model.name} was measured: {reasons:.300}{written}",
              file=sys.stderr)
    return 1 if run.unmeasured else 0
