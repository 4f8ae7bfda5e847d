"""Issue 18 in one command: a 130m-shape model trained for minutes on one GPU, pruned every way, scored at long
context and on a recall probe, dense against pruned.

    python3 benchmarks/train_130m.py --out DIR --version 1              # CUDA + mamba-ssm: ~9 min on an H200
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
   and the recall probe at each distance (`--distances`), in bf16;
4. pruning: one calibration at `--calib-seqlen` (default 2048, the training length), then every criterion x
   allocation at each r (`--ratios`), plus contribution calibrated at 256 (does the window matter?); each
   pruned model scored as the dense one. The grid runs in priority order and stops when `--budget-s` (from the
   start of the process) would be overrun; what was left out is listed.
Writes DIR/train_130m_v{V}.json (every number, the loss curve, seed, corpus and tokenizer hashes, environment),
DIR/train_130m_v{V}.md (the table) and DIR/train_130m_v{V}.png (perplexity vs r per context); the BPE tokenizer as
DIR/tokenizer_v{V}.json. The weights are deleted unless `--save` (then DIR/model_v{V}/).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba.data.corpus import load_corpus  # noqa: E402
from perfmamba.data.tokenizer import ByteTokenizer  # noqa: E402
from perfmamba.eval.perplexity import perplexity  # noqa: E402
from perfmamba.eval.probe import make_probe, recall_batch_fn, score_probe  # noqa: E402
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
TOKENS_PER_BATCH = 65536  # scoring batches: windows x context


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
    p.add_argument("--probe-n", type=int, default=None, help="probe examples per distance (default 32)")
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
    """Seconds per training step, measured as the trainer runs one (after warm-up steps, which also compile and
    autotune the kernels for the run); the model is thrown away."""
    import torch.nn.functional as F

    from perfmamba.models import build_model

    model = build_model(model_config, device=device, seed=cfg.seed)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=1e-9, fused=device.type == "cuda")
    times = []
    for step in range(2 + steps):
        t0 = time.perf_counter()
        batch = batch_fn(tokens, cfg, step)
        with autocast(device):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits[..., :model_config.vocab_size].float().flatten(0, 1), batch[:, 1:].flatten())
        loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    del model, opt
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return sorted(times[2:])[len(times[2:]) // 2]


def scores(model, test: torch.Tensor, probe, args) -> dict:
    """Test perplexity per context and the probe per distance, in bf16 on CUDA."""
    out = {"perplexity": {}, "probe": {}}
    with autocast(args.device):
        for ctx in args.contexts:
            r = perplexity(model, test, seq_len=ctx, batch_size=max(1, TOKENS_PER_BATCH // ctx), progress=False)
            out["perplexity"][str(ctx)] = r.perplexity
        for s in score_probe(model, probe, batch_size=lambda d: max(1, TOKENS_PER_BATCH // (d + 64))):
            out["probe"][str(s.distance)] = s.to_dict()
    return out


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


def prune_grid(args, model, train_tokens, test, probe) -> tuple[list[dict], list[dict]]:
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
                                              stats=stats[calib_len], seq_len=calib_len,
                                              batch_size=max(1, args.calib_tokens // calib_len))
            except ValueError as e:  # a ratio no layer can meet (too few states): recorded, not fatal
                rows.append({**cell, "error": str(e)})
                continue
            row = {**cell, "achieved_ratio": report.achieved_ratio, "d_state_after": report.d_state_after,
                   "cache_saving": report.cache_saving, "calibration": report.calibration,
                   **scores(pruned, test, probe, args)}
            del pruned
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            cell_s.append(time.perf_counter() - t0)
            ppl = " ".join(f"{k}:{v:.3f}" for k, v in row["perplexity"].items())
            log(f"{criterion}/{allocation} calib {calib_len} r={ratio:g}: ppl {ppl} ({cell_s[-1]:.1f} s)")
    if skipped:
        log(f"budget {args.budget_s:g} s: skipped {len(skipped)} cells")
    return rows, skipped


def markdown(doc: dict) -> str:
    contexts, dense = doc["config"]["contexts"], doc["dense"]
    distances = [str(d) for d in doc["config"]["distances"]]
    t = doc["training"]
    lines = [f"# Mamba-{doc['version']} 130m shape, {doc['tokenizer']['identity']}, seed {doc['seed']}", "",
             f"Corpus {doc['corpus']['id']}; {t['steps_done']} steps, {t['tokens_seen']:,} tokens in "
             f"{t['train_time_s']:.0f} s ({t['tokens_per_s']:,.0f} tokens/s); final loss {t['losses'][-1]:.3f}, "
             f"validation perplexity {t['val_perplexity']:.3f}; recall rows {doc['config']['recall_fraction']:g}.",
             "", "Test perplexity by context (change vs dense) and recall exact match by distance.", "",
             "| criterion | allocation | calib L | r | achieved | " + " | ".join(f"ppl@{c}" for c in contexts)
             + " | " + " | ".join(f"recall@{d}" for d in distances) + " |",
             "|" + "---|" * (5 + len(contexts) + len(distances))]

    def cells(s: dict) -> list[str]:
        out = []
        for c in contexts:
            p, base = s["perplexity"][str(c)], dense["perplexity"][str(c)]
            out.append(f"{p:.3f}" if s is dense else f"{p:.3f} ({100 * (p / base - 1):+.1f}%)")
        return out + [f"{s['probe'][d]['exact_match']:.2f}" for d in distances]

    lines.append("| dense | | | 0 | 0 | " + " | ".join(cells(dense)) + " |")
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['criterion']} | {r['allocation']} | {r['calib_seqlen']} | {r['ratio']:g} | "
                         f"{r['error']} |")
            continue
        lines.append(f"| {r['criterion']} | {r['allocation']} | {r['calib_seqlen']} | {r['ratio']:g} | "
                     f"{r['achieved_ratio']:.3f} | " + " | ".join(cells(r)) + " |")
    if doc["skipped"]:
        lines += ["", f"Left out for time ({len(doc['skipped'])} cells): "
                  + ", ".join(sorted({f"{s['criterion']}/{s['allocation']}@{s['calib_seqlen']}"
                                      for s in doc["skipped"]}))]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    contexts = doc["config"]["contexts"]
    fig, axes = plt.subplots(1, len(contexts), figsize=(5 * len(contexts), 4), squeeze=False)
    for ax, ctx in zip(axes[0], contexts):
        series: dict[str, list] = {}
        for r in doc["rows"]:
            if "error" not in r:
                key = f"{r['criterion']}/{r['allocation']}" + (f" L{r['calib_seqlen']}" if r['calib_seqlen'] ==
                                                               SHORT_CALIB != doc["config"]["calib_seqlen"] else "")
                series.setdefault(key, []).append((r["ratio"], r["perplexity"][str(ctx)]))
        for key, points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=key, linestyle="--" if " L" in key else "-")
        ax.axhline(doc["dense"]["perplexity"][str(ctx)], color="k", linewidth=1, label="dense")
        ax.set(title=f"context {ctx}", xlabel="r (fraction of states removed)", ylabel="test perplexity",
               yscale="log")
    axes[0][-1].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Mamba-{doc['version']} 130m shape ({doc['tokenizer']['identity']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    log(f"trained: loss {training['losses'][-1]:.4f}, val perplexity {training['val_perplexity']:.3f}, "
        f"{training['tokens_per_s']:,.0f} tokens/s")
    model = load_model(model_dir, device=args.device)
    test = corpus.tokens("test")[: args.eval_tokens]
    probe = make_probe(tok, corpus.tokens("test"), args.distances, args.probe_n, seed=args.seed)
    dense = scores(model, test, probe, args)
    log(f"dense: ppl {dense['perplexity']}, recall {[v['exact_match'] for v in dense['probe'].values()]}")
    rows, skipped = prune_grid(args, model, corpus.train, test, probe)
    tokenizer_doc = {"identity": tok.identity, "vocab_size": tok.vocab_size, "spec": args.tokenizer}
    if args.tokenizer != "byte":
        shutil.copy(scratch / "tokenizer.json", args.out / f"tokenizer_v{args.version}.json")
    config = {k: (str(v) if isinstance(v, (Path, torch.device)) else v) for k, v in vars(args).items()}
    doc = {"version": args.version, "seed": args.seed, "config": config, "corpus": corpus.describe(),
           "tokenizer": tokenizer_doc, "model_config": training.get("model_config"), "train_config": training["config"],
           "step_seconds_measured": step_s, "training": training, "test_tokens": int(test.numel()),
           "dense": dense, "rows": rows, "skipped": skipped, "elapsed_s": time.perf_counter() - START}
    stem = args.out / f"{KIND}_v{args.version}"
    write_json(stem.with_suffix(".json"), doc, kind=KIND)
    atomic_write_text(stem.with_suffix(".md"), markdown(doc))
    plot(doc, stem.with_suffix(".png"))
    log(f"wrote {stem}.json/.md/.png ({len(rows)} pruned models, {len(skipped)} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
