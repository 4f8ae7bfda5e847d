"""`perfmamba` command line: each subcommand parses its arguments, calls one public function, prints the result."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]
_HANDLERS: dict[str, Handler] = {}


def _command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return register


# info ---------------------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, devices and which kernel backends are available (and why not)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@_command("info")
def _info(args: argparse.Namespace) -> int:
    from perfmamba.results import environment

    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    backends = env.pop("backends")
    width = max(map(len, env))
    for key, value in env.items():
        print(f"{key:<{width}}  {value}")
    print("\nkernel backends:")
    for op, status in backends.items():
        print(f"  {op:<24} " + "; ".join(f"{name}: {state}" for name, state in status.items()))
    return 0


# profile ------------------------------------------------------------------------------------------------
def _add_profile(sub: argparse._SubParsersAction) -> None:
    from perfmamba.profiling.command import add_arguments

    p = sub.add_parser("profile", help="per-component time, memory, FLOPs and bytes over sequence lengths")
    add_arguments(p)


@_command("profile")
def _profile(args: argparse.Namespace) -> int:
    from perfmamba.profiling.command import main

    return main(args)


# prune --------------------------------------------------------------------------------------------------
def _add_prune(sub: argparse._SubParsersAction) -> None:
    from perfmamba.pruning import ALLOCATIONS, PRUNE_MODES

    p = sub.add_parser("prune", help="calibrate, score and remove low-activity SSM states; write the checkpoint")
    p.add_argument("--model", required=True, help="checkpoint directory or preset name (random weights)")
    p.add_argument("--ratio", type=float, required=True, help="fraction of states to remove, in [0, 1)")
    p.add_argument("--criterion", default="contribution",
                   help="delta, energy, contribution, gramian, A or random (default contribution)")
    p.add_argument("--allocation", default="uniform", choices=ALLOCATIONS, help="default uniform")
    p.add_argument("--mode", default="remove", choices=PRUNE_MODES,
                   help="remove (smaller d_state) or mask (pruned states zeroed; default remove)")
    p.add_argument("--multiple", default=None,
                   help="round kept states to: an integer, 'pow2', or 'legal' (the fused kernels' minimum)")
    p.add_argument("--min-states", type=int, default=None, help="global allocation: fewest states per layer")
    p.add_argument("--calib", default=None,
                   help="calibration data: a text file or folder, 'stdlib', a .pt/.npy of token ids, or random:N")
    p.add_argument("--calib-tokens", type=int, default=65536, help="at most this many calibration tokens")
    p.add_argument("--calib-seqlen", type=int, default=None,
                   help="calibration window in tokens (default 256); slowly decaying states carry memory over "
                        "long spans that a short window cannot see: use the context the model will serve")
    p.add_argument("--calib-batch-size", type=int, default=None, help="calibration rows per batch (default 8)")
    p.add_argument("--tokenizer", default=None, help="Hugging Face tokenizer file for text calibration data")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", type=Path, required=True,
                   help="directory for the pruned checkpoint and report (absent or empty unless --force)")
    p.add_argument("--force", action="store_true", help="replace what --out holds (never the model itself)")
    p.add_argument("--no-heatmap", action="store_true", help="write no score heatmap")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("prune")
def _prune(args: argparse.Namespace) -> int:
    from perfmamba.pruning import CalibrationWarning, prune_checkpoint
    from perfmamba.pruning.config import parse_multiple

    warnings.simplefilter("ignore", CalibrationWarning)  # the summary prints it, beside the numbers it qualifies

    options = {}
    if args.multiple is not None:
        options["multiple"] = parse_multiple(args.multiple)
    for name in ("min_states", "calib_seqlen", "calib_batch_size"):
        if getattr(args, name) is not None:
            options[{"calib_seqlen": "seq_len", "calib_batch_size": "batch_size"}.get(name, name)] = getattr(args, name)
    report = prune_checkpoint(
        args.model, args.out, ratio=args.ratio, criterion=args.criterion, allocation=args.allocation,
        mode=args.mode, calib=args.calib, calib_tokens=args.calib_tokens, tokenizer=args.tokenizer,
        device=args.device, heatmap=False if args.no_heatmap else None, progress=not args.quiet, force=args.force,
        **options,
    )
    print(report.summary())
    print(f"wrote {args.out}/: {', '.join(sorted(p.name for p in args.out.iterdir()))}")
    return 0


# eval ---------------------------------------------------------------------------------------------------
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="perplexity of a model on real text (default: the Python stdlib's source)")
    p.add_argument("--model", required=True, help="checkpoint directory or preset name (random weights)")
    p.add_argument("--data", default=None, help="a text file or folder (default: the stdlib corpus, validation)")
    p.add_argument("--tokenizer", default=None, help="Hugging Face tokenizer.json (default: bytes)")
    p.add_argument("--split", default="auto", help="train, val, all or auto (default auto)")
    p.add_argument("--seq-len", type=int, default=None, help="window length in tokens")
    p.add_argument("--stride", type=int, default=None, help="window step (default seq-len: disjoint windows)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    p.add_argument("--max-tokens", type=int, default=None, help="score only the first this many tokens")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("eval")
def _eval(args: argparse.Namespace) -> int:
    from perfmamba.eval.evaluate import evaluate, write_eval
    from perfmamba.outputs import check_file

    if args.out is not None:
        check_file(args.out)
    sizes = {k: v for k, v in (("seq_len", args.seq_len), ("batch_size", args.batch_size)) if v is not None}
    result = evaluate(args.model, args.data, args.tokenizer, split=args.split, stride=args.stride,
                      max_tokens=args.max_tokens, device=args.device, progress=not args.quiet, **sizes)
    r = result.result
    print(f"{result.model} on {result.corpus['id']} ({result.split}): perplexity {r.perplexity:.4f}, "
          f"{r.bits_per_token:.4f} bits/token over {r.n_tokens} tokens")
    if args.out is not None:
        print(f"wrote {write_eval(args.out, result)}")
    return 0


# train --------------------------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    from perfmamba.eval import TRAIN_PRESETS

    p = sub.add_parser("train", help="train a small model on the default corpus (resumable)")
    p.add_argument("--preset", required=True, choices=sorted(TRAIN_PRESETS))
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's recipe)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data", default=None, help="a text file or folder (default: the stdlib corpus)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", type=Path, required=True,
                   help="checkpoint directory: absent, empty, or an unfinished run of the same settings (resumed)")
    p.add_argument("--force", action="store_true", help="start over in --out, replacing what it holds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("train")
def _train(args: argparse.Namespace) -> int:
    from perfmamba.eval import train, train_config
    from perfmamba.eval.train import training_summary

    config = train_config(args.preset, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                          lr=args.lr, seed=args.seed, data=args.data)
    out = train(config, args.out, device=args.device, progress=not args.quiet, force=args.force)
    print(json.dumps(training_summary(out), indent=2))
    return 0


# compare ------------------------------------------------------------------------------------------------
def _add_compare(sub: argparse._SubParsersAction) -> None:
    from perfmamba.gate.config import CORRECTIONS, DEFAULT_ALPHA, DEFAULT_THRESHOLD

    p = sub.add_parser("compare", help="the regression gate over result files: BASE vs NEW, exit 1 on a regression")
    p.add_argument("base", help="pytest-benchmark JSON, asv results folder (DIR[@COMMIT]) or perfmamba JSON; "
                                "several runs (one per process) comma-separated")
    p.add_argument("new", help="the same kinds as BASE")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"tolerated relative change (default {DEFAULT_THRESHOLD})")
    p.add_argument("--thresholds", default=None, help="JSON/TOML file of {glob: threshold} per benchmark")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"significance (default {DEFAULT_ALPHA})")
    p.add_argument("--correction", default="holm", choices=CORRECTIONS)
    p.add_argument("--higher-is-better", action="append", default=[], metavar="GLOB",
                   help="benchmarks where more is better (besides speedups and rates); repeatable")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown table (CI comment)")
    p.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON")
    p.add_argument("--fail-on-missing", action="store_true", help="exit 1 when a BASE benchmark is missing")


@_command("compare")
def _compare(args: argparse.Namespace) -> int:
    from perfmamba.gate.compare import compare_files
    from perfmamba.gate.comparison import RESULT_KIND
    from perfmamba.gate.render import to_markdown, to_text
    from perfmamba.outputs import check_file
    from perfmamba.results import atomic_write_text, write_json

    for path in (args.markdown, args.json):
        if path is not None:
            check_file(path)
    comparison = compare_files(args.base, args.new, threshold=args.threshold, thresholds=args.thresholds,
                               alpha=args.alpha, correction=args.correction,
                               higher_is_better=args.higher_is_better)
    print(to_text(comparison))
    if args.markdown is not None:
        atomic_write_text(args.markdown, to_markdown(comparison))
    if args.json is not None:
        write_json(args.json, comparison.payload(), kind=RESULT_KIND)
    return comparison.exit_code(fail_on_missing=args.fail_on_missing)


# gate ---------------------------------------------------------------------------------------------------
def _add_gate(sub: argparse._SubParsersAction) -> None:
    from perfmamba.gate.run import LAUNCHES

    p = sub.add_parser("gate", help="the CI job: benchmark BASE and PR in interleaved processes, compare, exit 1 on "
                                    "a regression")
    p.add_argument("base", help="a git ref of this repository (checked out as a worktree) or a checkout directory")
    p.add_argument("pr", help="the same kinds as BASE")
    p.add_argument("--processes", type=int, default=None,
                   help="benchmark processes per tree (default: thresholds.toml's [<device class>.gate] processes: "
                        "6 on an H100/H200, 3 on a CPU)")
    p.add_argument("--grid", default=None, help="benchmark grid: quick, gpu or full (default: gpu with CUDA, else "
                                                "quick)")
    p.add_argument("--select", "-k", default=None, metavar="EXPR", help="pytest -k expression over the cases")
    p.add_argument("--markers", "-m", default="not slow", help="pytest -m expression (default: 'not slow')")
    p.add_argument("--out", type=Path, default=Path("perfmamba-gate"), help="output folder (default perfmamba-gate)")
    p.add_argument("--force", action="store_true", help="replace what --out holds")
    p.add_argument("--launch", choices=LAUNCHES, default="auto",
                   help="fork: processes forked from a server per tree that imported the kernels once; spawn: a "
                        "fresh interpreter each; auto (default): fork with CUDA, spawn on a CPU, where children of "
                        "one server share its memory layout and time alike")
    p.add_argument("--threshold", type=float, default=None,
                   help="tolerated relative change where no pattern matches (default: thresholds.toml's "
                        "[<device class>.gate])")
    p.add_argument("--thresholds", default=None, help="JSON/TOML file of {glob: threshold} replacing the patterns")
    p.add_argument("--keep-trees", action="store_true", help="keep the worktrees made for git refs")


@_command("gate")
def _gate(args: argparse.Namespace) -> int:
    from perfmamba.gate.run import GateOptions, gate

    options = GateOptions(base=args.base, pr=args.pr, out=args.out, processes=args.processes, grid=args.grid,
                          select=args.select, markers=args.markers or None, launch=args.launch,
                          threshold=args.threshold, thresholds_file=args.thresholds, force=args.force,
                          keep_trees=args.keep_trees)
    code, _ = gate(options)
    return code


_ADDERS = [_add_info, _add_profile, _add_prune, _add_eval, _add_train, _add_compare, _add_gate]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the README's promise), pointing at --help for the rest."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from perfmamba._version import __version__

    parser = _Parser(
        prog="perfmamba",
        description="Profile, prune and benchmark selective state space models (Mamba-1 / Mamba-2).",
    )
    parser.add_argument("--version", action="version", version=f"perfmamba {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from perfmamba.outputs import sigterm_interrupts

    warnings.formatwarning = lambda message, *_, **__: f"perfmamba {args.command}: warning: {message}\n"
    try:
        with sigterm_interrupts():  # a stopped job cleans up as after Ctrl-C (no half-written output)
            return _HANDLERS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"perfmamba {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # Ctrl-C or SIGTERM (train turns both into this after saving its steps): say what was kept, no traceback.
        print(f"perfmamba {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
