"""Issue 18 in one command: a 130m-shape model trained for minutes on one GPU, pruned every way, scored at long
context and on recall and copy probes, dense against pruned.

    python3 benchmarks/train_130m.py --out DIR --version 1              # CUDA + mamba-ssm: ~7.5 min on an H200
    python3 benchmarks/train_130m.py --out DIR --version 2 --minutes 4.5
    python3 benchmarks/train_130m.py --out DIR --version 2 --tokenizer bpe:16384
    python3 benchmarks/train_130m.py --quick --out DIR                  # CPU smoke run: tiny shape, seconds

Steps, each logged with the seconds since start:
1. corpus: `--data` (default "local": the stdlib's and the installed packages' text) split train/val/test by
   file, hashed; with `--tokenizer bpe:N` a byte-level BPE of N ids trained on the train split alone;
2. training: the `mamba{1,2}-130m` recipe (perfmamba.eval.recipe) with the tokenizer's vocabulary, bf16 autocast
   and mamba-ssm's fused kernels; steps sized to `--minutes` from the measured step time (cosine to the end);
   `--recall-fraction` of the rows (default 0.1) replaced by synthetic key-value recall rows (perfmamba.eval.probe)
   so that the probe measures a skill the model was asked to learn, not ~0 everywhere;
3. dense scores: test perplexity at each context (`--contexts`, default 256 2048 8192) on the same test tokens,
   the recall probe and the copy probe (a held-out span repeated, against a control that never showed it) at
   each distance (`--distances`), in bf16; and perplexity on the stdlib validation files this run did not train
   on, in windows of 512, as the small models were scored (byte tokenizer);
4. pruning: one calibration at `--calib-seqlen` (default 2048, the training length), then every criterion x
   allocation at each r (`--ratios`), plus contribution calibrated at 256 (does the window matter?); each
   pruned model scored as the dense one. Mamba-2 is pruned with mode="mask" (the same function, the states'
   B and C zeroed): global allocation gives each layer its own N', and its Triton kernels would compile for
   every one (a session-10 run spent its whole budget so). Mamba-1's CUDA scan takes any N': it is cut. The
   grid runs in priority order and stops when `--budget-s` (from the start of the process) would be overrun;
   what was left out is listed.
Writes DIR/train_130m_v{V}.json (every number, the loss curve, seed, corpus and tokenizer hashes, environment),
DIR/train_130m_v{V}.md and .png (train_130m_report.py: the table, perplexity change vs r per context); the BPE
tokenizer as DIR/tokenizer_v{V}.json. The JSON and the table are rewritten after every pruned model ("complete":
false until the end), so a run killed at its time limit keeps what it measured. The weights are deleted unless
`--save` (then DIR/model_v{V}/).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it, and the report
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from train_130m_report import markdown, plot  # noqa: E402

from perfmamba.data.corpus import load_corpus  # noqa: E402
from perfmamba.data.tokenizer import ByteTokenizer  # noqa: E402
from perfmamba.eval.perplexity import perplexity  # noqa: E402
from perfmamba.eval.probe import make_copy_probe, make_probe, recall_batch_fn, score_probe  # noqa: E402
from perfmamba.eval.recipe import TrainConfig, param_groups, steps_for_budget, train_config  # noqa: E402
from perfmamba.models.config import get_preset  # noqa: E402
from perfmamba.pruning import ALLOCATIONS, calibrate, criteria_for, prune_states  # noqa: E402
from perfmamba.results import atomic_write_text, read_json, write_json  # noqa: E402

START = time.perf_counter()
KIND = "train_130m"
RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
# Grid order = priority when the budget runs short: the headline criterion, the paper's, then the rest.
CRITERION_ORDER = ("contribution", "delta", "gramian", "energy", "weight", "A", "random")
SHORT_CALIB = 256  # the window of every earlier result: contribution is also calibrated at it, for comparison
# The small models (mamba{1,2}-small, docs/results/h100.md) were scored on the stdlib corpus's validation files
# (64 MiB cap, windows of 512 bytes); the local corpus names the same files "stdlib/<path>" and splits them anew.
SMALL_CORPUS, SMALL_MAX_BYTES, SMALL_SEQ_LEN = "stdlib", 64 << 20, 512
TOKENS_PER_BATCH = 65536  # scoring batches: windows x context
PRUNE_MODE = {1: "remove", 2: "mask"}  # why: the module docstring, step 4


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", type=int, choices=(1, 2), default=1)
    p.add_argument("--minutes", type=float, default=None, help="training time (default 5; --quick 0.03)")
    p.add_argument("--tokenizer", default="byte", help="byte or bpe:N (a BPE of N ids trained here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="corpus: local, stdlib or a path (default local; --quick stdlib)")
    p.add_argument("--max-bytes", type=int, default=None,
                   help="corpus bytes read (default 96 MiB for bytes, 64 MiB for BPE, whose encoding is slower; "
                        "--quick 1 MiB)")
    p.add_argument("--recall-fraction", type=float, default=0.1, help="training rows replaced by recall rows")
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    p.add_argument("--contexts", type=int, nargs="+", default=None, help="default 256 2048 8192")
    p.add_argument("--distances", type=int, nargs="+", default=None, help="probe distances, default 256 2048 8192")
    p.add_argument("--probe-n", type=int, default=None, help="recall examples per distance (default 32)")
    p.add_argument("--copy-n", type=int, default=None, help="copy examples per distance (default 16; each is "
                   "scored with its control, so it costs two)")
    p.add_argument("--eval-tokens", type=int, default=None, help="test tokens scored per context (default 131072)")
    p.add_argument("--calib-seqlen", type=int, default=None, help="calibration window (default 2048)")
    p.add_argument("--calib-tokens", type=int, default=None, help="calibration tokens (default 32768)")
    p.add_argument("--budget-s", type=float, default=None, help="stop the grid before this (default 540)")
    p.add_argument("--save", action="store_true", help="keep the trained weights in DIR/model_v{V}")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny shape, byte tokenizer, seconds")
    args = p.parse_args(argv)
    quick = args.quick
    if not (args.tokenizer == "byte" or args.tokenizer.startswith("bpe:") and args.tokenizer[4:].isdigit()):
        p.error(f"--tokenizer must be byte or bpe:N (N an integer), got {args.tokenizer!r}")
    defaults = dict(minutes=0.03 if quick else 5.0, data="stdlib" if quick else "local",
                    max_bytes=(1 << 20) if quick else (96 << 20) if args.tokenizer == "byte" else (64 << 20),
                    contexts=[64, 256] if quick else [256, 2048, 8192],
                    distances=[32, 128] if quick else [256, 2048, 8192], probe_n=4 if quick else 32,
                    copy_n=4 if quick else 16,
                    eval_tokens=2048 if quick else 131072, calib_seqlen=128 if quick else 2048,
                    calib_tokens=1024 if quick else 32768, budget_s=120.0 if quick else 540.0)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if quick:
        args.ratios = args.ratios if args.ratios != list(RATIOS) else [0.3, 0.7]
        if args.tokenizer != "byte":
            p.error(f"--quick trains with the byte tokenizer, got --tokenizer {args.tokenizer}")
    args.device = torch.device("cpu" if quick else "cuda")
    if not quick:
        if not torch.cuda.is_available():
            p.error("runs on CUDA only (bf16, mamba-ssm's kernels); the device is cpu; --quick is the CPU smoke run")
        from perfmamba.models.common import fused_kernel_runs

        op = "mamba_inner" if args.version == 1 else "mamba_split_conv1d_scan"
        if not fused_kernel_runs(op):
            from perfmamba.ops.registry import unavailable_reason

            p.error(f"mamba-ssm's fused {op} cannot run here ({unavailable_reason(op, 'cuda')}); install mamba-ssm")
    if max(args.contexts) > args.eval_tokens:
        p.error(f"--eval-tokens {args.eval_tokens} is shorter than the longest context {max(args.contexts)}")
    if any(not 0 <= r < 1 for r in args.ratios) or not 0 <= args.recall_fraction <= 1:
        p.error(f"ratios must be in [0, 1) and --recall-fraction in [0, 1], got {args.ratios}, {args.recall_fraction}")
    return args


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                   enabled=False)


def build_corpus(args, scratch: Path):
    """The corpus with its test split, and the tokenizer (trained on the train split for bpe:N)."""
    tok = ByteTokenizer()
    if args.tokenizer.startswith("bpe:"):
        from perfmamba.data import train_tokenizer

        as_bytes = load_corpus(args.data, None, max_bytes=args.max_bytes, test_fraction=0.1)
        log(f"corpus {as_bytes.id}: {as_bytes.n_bytes / 2**20:.1f} MiB; training {args.tokenizer}")
        tok = train_tokenizer(as_bytes, int(args.tokenizer[4:]), scratch / "tokenizer.json", seed=args.seed,
                              max_bytes=32 << 20)
        del as_bytes
    corpus = load_corpus(args.data, tok, max_bytes=args.max_bytes, test_fraction=0.1)
    d = corpus.describe()
    log(f"corpus {corpus.id} ({tok.identity}): train {d['train_tokens']:,} / val {d['val_tokens']:,} / test "
        f"{corpus.tokens('test').numel():,} tokens")
    return corpus, tok


def recipe(args, vocab: int) -> tuple[TrainConfig, object]:
    if args.quick:
        cfg = TrainConfig(preset=f"mamba{args.version}-tiny", steps=1, batch_size=4, seq_len=128, lr=3e-3,
                          warmup_steps=1, eval_tokens=2048, eval_seq_len=128, checkpoint_every=1_000_000,
                          seed=args.seed)
    else:
        cfg = train_config(f"mamba{args.version}-130m", seed=args.seed)
    shape = get_preset(cfg.preset)
    return cfg, shape.replace(vocab_size=vocab)


def time_step(cfg: TrainConfig, model_config, tokens: torch.Tensor, batch_fn, device, steps: int) -> float:
    """Seconds per training step: the trainer's own step (`perfmamba.eval.train.train_step`), synchronised, median
    of `steps` after two warm-up steps (which also compile and autotune the kernels); the model is thrown away."""
    from perfmamba.eval.train import train_step
    from perfmamba.models import build_model

    model = build_model(model_config, device=device, seed=cfg.seed)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=1e-9, fused=device.type == "cuda")
    times = []
    for step in range(2 + steps):
        t0 = time.perf_counter()
        train_step(model, opt, batch_fn(tokens, cfg, step), cfg, 1e-9, autocast(device), step=step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    del model, opt
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return sorted(times[2:])[len(times[2:]) // 2]


def scores(model, test: torch.Tensor, probes: tuple, args) -> dict:
    """Test perplexity per context, the recall probe and the copy probe per distance, in bf16 on CUDA."""
    recall, copy = probes
    out = {"perplexity": {}, "probe": {}, "copy": {}}

    def batch(distance: int) -> int:  # windows of distance + the pair or the span on either side
        return max(1, TOKENS_PER_BATCH // (distance + 160))

    with autocast(args.device):
        for ctx in args.contexts:
            r = perplexity(model, test, seq_len=ctx, batch_size=max(1, TOKENS_PER_BATCH // ctx), progress=False)
            out["perplexity"][str(ctx)] = r.perplexity
        for s in score_probe(model, recall, batch_size=batch):
            out["probe"][str(s.distance)] = s.to_dict()
        controls = {s.distance: s for s in score_probe(model, copy["control"], batch_size=batch)}
        for s in score_probe(model, copy["copy"], batch_size=batch):
            base = controls[s.distance].token_accuracy
            out["copy"][str(s.distance)] = {"n": s.n, "accuracy": s.token_accuracy, "control_accuracy": base,
                                            "gain": s.token_accuracy - base, "exact_match": s.exact_match}
    return out


def held_out_tokens(small, trained_on) -> tuple[list[str], torch.Tensor]:
    """The validation files of corpus `small` whose bytes corpus `trained_on` did not train on, and their tokens.
    By content, not by name: the local corpus names the stdlib's files "stdlib/<path>", splits them anew, and
    keeps one copy of files that recur (a site-packages copy of a stdlib file may be the one it trained on)."""
    if len(small.segments) != len(small.files):
        raise ValueError(f"{small.id} is split by position, not by file: it has no held-out files")
    trained = {hashlib.sha256(text).digest() for text in trained_on.texts("train")}
    names, pieces = [], []
    for name, (split, start, n) in zip(small.files, small.segments):
        piece = small.val[start:start + n]
        if split == "val" and n and hashlib.sha256(piece.to(torch.uint8).numpy().tobytes()).digest() not in trained:
            names.append(name)
            pieces.append(piece)
    return names, torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.long)


def small_model_reference(model, corpus, args) -> dict:
    """Perplexity on the stdlib validation files that this run did not train on either, in the small models'
    windows: the same source and windows as their published validation perplexity, on a subset of its files
    (bytes only)."""
    if args.tokenizer != "byte":
        return {"skipped": "the small models are byte-level; this run's tokenizer is " + args.tokenizer}
    small = load_corpus(SMALL_CORPUS, None, max_bytes=(1 << 20) if args.quick else SMALL_MAX_BYTES)
    names, tokens = held_out_tokens(small, corpus)
    if tokens.numel() < 2:
        return {"skipped": f"this run trained on every validation file of {small.id}"}
    with autocast(args.device):
        r = perplexity(model, tokens, seq_len=SMALL_SEQ_LEN, batch_size=64, progress=False)
    return {"corpus": small.id, "files": names, "of_val_files": len(small.val_files), "tokens": int(tokens.numel()),
            "seq_len": SMALL_SEQ_LEN, "perplexity": r.perplexity, "bits_per_token": r.bits_per_token}


def grid(args, version: int) -> list[tuple[int, str, str]]:
    """(calibration window, criterion, allocation) blocks in priority order."""
    long, names = args.calib_seqlen, [c for c in CRITERION_ORDER if c in criteria_for(version)]
    blocks = [(long, "contribution", a) for a in ALLOCATIONS]
    if SHORT_CALIB != long:
        blocks.append((SHORT_CALIB, "contribution", "uniform"))
    blocks += [(long, c, a) for c in names if c != "contribution" for a in ALLOCATIONS]
    if SHORT_CALIB != long:
        blocks.append((SHORT_CALIB, "contribution", "global"))
    return blocks


def prune_grid(args, model, train_tokens, test, probes, on_row=lambda rows, skipped: None
               ) -> tuple[list[dict], list[dict]]:
    """Every cell of `grid` at every r, scored; `on_row(rows, skipped)` after each (to save what is done)."""
    rows, skipped, stats, cell_s = [], [], {}, []
    for calib_len, criterion, allocation in grid(args, model.config.version):
        for ratio in args.ratios:
            cell = {"calib_seqlen": calib_len, "criterion": criterion, "allocation": allocation, "ratio": ratio}
            need = (sum(cell_s) / len(cell_s) if cell_s else 0.0) + (0.0 if calib_len in stats else 30.0)
            if time.perf_counter() - START + need > args.budget_s:
                skipped.append(cell)
                continue
            t0 = time.perf_counter()
            if calib_len not in stats:
                calib = train_tokens[: max(args.calib_tokens, calib_len)]
                stats[calib_len] = calibrate(model, calib, batch_size=max(1, args.calib_tokens // calib_len),
                                             seq_len=calib_len, progress=False)
                log(f"calibrated at L={calib_len}: {stats[calib_len].tokens:,} tokens in "
                    f"{stats[calib_len].seconds:.1f} s")
                t0 = time.perf_counter()
            try:
                pruned, report = prune_states(model, ratio, criterion=criterion, allocation=allocation,
                                              mode=PRUNE_MODE[model.config.version],
                                              stats=stats[calib_len], seq_len=calib_len,
                                              batch_size=max(1, args.calib_tokens // calib_len))
            except ValueError as e:  # a ratio no layer can meet (too few states): recorded, not fatal
                rows.append({**cell, "error": str(e)})
                on_row(rows, skipped)
                continue
            row = {**cell, "achieved_ratio": report.achieved_ratio, "d_state_after": report.d_state_after,
                   "mode": report.mode, "calibration": report.calibration,
                   **scores(pruned, test, probes, args)}
            if report.mode == "remove":  # a masked model keeps its cache's shape
                row["cache_saving"] = report.cache_saving
            del pruned
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            on_row(rows, skipped)
            cell_s.append(time.perf_counter() - t0)
            ppl = " ".join(f"{k}:{v:.3f}" for k, v in row["perplexity"].items())
            log(f"{criterion}/{allocation} calib {calib_len} r={ratio:g}: ppl {ppl} ({cell_s[-1]:.1f} s)")
    if skipped:
        log(f"budget {args.budget_s:g} s: skipped {len(skipped)} cells")
    return rows, skipped


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="train_130m_"))
    try:
        return run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args, scratch: Path) -> int:
    from perfmamba.eval.train import LOG_FILE, LOG_KIND, train
    from perfmamba.models import load_model

    torch.manual_seed(args.seed)
    corpus, tok = build_corpus(args, scratch)
    cfg, model_config = recipe(args, tok.vocab_size)
    batch_fn = recall_batch_fn(tok, corpus.train, args.recall_fraction, seed=args.seed)
    train_tokens = corpus.train.to(args.device)
    step_s = time_step(cfg, model_config, train_tokens, batch_fn, args.device, steps=3 if args.quick else 8)
    cfg = steps_for_budget(cfg, args.minutes * 60, step_s)
    log(f"{step_s * 1e3:.0f} ms a step: training {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}")
    model_dir = args.out / f"model_v{args.version}" if args.save else scratch / "model"

    def on_step(done: int, loss: float) -> None:
        if done % (10 if args.quick else 100) == 0 or done == cfg.steps:
            log(f"step {done}/{cfg.steps} loss {loss:.4f}")

    train(cfg, model_dir, device=args.device, corpus=corpus, progress=False, on_step=on_step, force=True,
          model_config=model_config, batch_fn=batch_fn, max_seconds=args.minutes * 60 * 1.1)
    training = read_json(model_dir / LOG_FILE, kind=LOG_KIND)
    training.pop("environment", None)
    training["val_perplexity"] = training["validation"]["perplexity"]
    log(f"trained: {training['steps_done']} of {cfg.steps} steps"
        + (" (stopped by the time cap: the schedule did not finish)" if training.get("stopped_by_time") else "")
        + f", loss {training['losses'][-1]:.4f}, val perplexity {training['val_perplexity']:.3f}, "
        f"{training['tokens_per_s']:,.0f} tokens/s")
    model = load_model(model_dir, device=args.device)
    test, held_out = corpus.tokens("test")[: args.eval_tokens], corpus.tokens("test")
    probes = (make_probe(tok, held_out, args.distances, args.probe_n, seed=args.seed),
              make_copy_probe(held_out, args.distances, args.copy_n, seed=args.seed))
    dense = scores(model, test, probes, args)
    log(f"dense: ppl {dense['perplexity']}, recall {[v['exact_match'] for v in dense['probe'].values()]}, copy "
        f"{[round(v['accuracy'], 3) for v in dense['copy'].values()]} (control "
        f"{[round(v['control_accuracy'], 3) for v in dense['copy'].values()]})")
    tokenizer_doc = {"identity": tok.identity, "vocab_size": tok.vocab_size, "spec": args.tokenizer}
    if args.tokenizer != "byte":
        shutil.copy(scratch / "tokenizer.json", args.out / f"tokenizer_v{args.version}.json")
    config = {k: (str(v) if isinstance(v, (Path, torch.device)) else v) for k, v in vars(args).items()}
    doc = {"version": args.version, "seed": args.seed, "complete": False, "config": config,
           "corpus": corpus.describe(), "tokenizer": tokenizer_doc, "model_config": training.get("model_config"),
           "train_config": training["config"], "step_seconds_measured": step_s, "training": training,
           "test_tokens": int(test.numel()), "dense": dense, "rows": [], "skipped": []}
    stem = args.out / f"{KIND}_v{args.version}"

    def save(rows: list[dict], skipped: list[dict]) -> None:
        doc.update(rows=rows, skipped=skipped, elapsed_s=time.perf_counter() - START)
        write_json(stem.with_suffix(".json"), doc, kind=KIND)
        atomic_write_text(stem.with_suffix(".md"), markdown(doc))

    save([], [])  # the training and dense scores are kept, whatever happens next
    training["small_model_reference"] = small_model_reference(model, corpus, args)
    log(f"on the small models' held-out stdlib files: {training['small_model_reference']}")
    save([], [])
    rows, skipped = prune_grid(args, model, corpus.train, test, probes, on_row=save)
    doc["complete"] = True
    save(rows, skipped)
    plot(doc, stem.with_suffix(".png"))
    log(f"wrote {stem}.json/.md/.png ({len(rows)} pruned models, {len(skipped)} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
