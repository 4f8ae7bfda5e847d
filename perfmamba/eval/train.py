"""The small trainer: byte-level language models on the default corpus, so accuracy thresholds mean something.

A randomly initialised model has no accuracy to lose; pruning curves and tests need a model that has learned
something, and CI has no network and no pretrained weights. `train` fits a preset on the corpus's train split
with AdamW and a warmup + cosine schedule, evaluates on held-out files and writes a checkpoint `load_model`
reads (mamba-ssm's layout), plus `training.json` with every step's loss.

Resuming: the batch of step s is drawn from a generator seeded by (seed, s) and the learning rate is a function
of s, so a run interrupted after step s and resumed from its state file continues exactly as if uninterrupted.
The state file (model, optimizer, step) is rewritten atomically every `checkpoint_every` steps and on
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.data.corpus import Corpus, load_corpus
from perfmamba.eval.perplexity import perplexity, resolve_device
from perfmamba.eval.recipe import TrainConfig, batch_at, learning_rate, param_groups
from perfmamba.models.config import ModelConfig
from perfmamba.outputs import OutputError, check_directory, replacing_directory, sigterm_interrupts
from perfmamba.results import read_json, write_json

STATE_FILE = "train_state.pt"
LOG_FILE = "training.json"
LOG_KIND = "training"


def training_summary(out: str | os.PathLike) -> dict[str, Any]:
    """The headline numbers of a finished run in `out`: what `perfmamba train` prints."""
    log = read_json(Path(out) / LOG_FILE, kind=LOG_KIND)
    val = log.get("validation") or {}
    return {
        "out": str(out), "preset": log["config"]["preset"], "steps": log["steps_done"], "device": log["device"],
        "corpus": log["corpus"]["id"], "train_time_s": round(log["train_time_s"], 1),
        "tokens_per_s": round(log["tokens_per_s"] or 0.0), "final_loss": log["losses"][-1] if log["losses"] else None,
        "val_perplexity": val.get("perplexity"), "val_bits_per_token": val.get("bits_per_token"),
        # Training scores the first eval_tokens of the val split (a quick check); `perfmamba eval` scores all of
        # it, so their perplexities differ: this says over what this one was taken.
        "val_tokens_scored": val.get("n_tokens"),
        "uniform_perplexity": val.get("uniform_perplexity"), "unigram_perplexity": val.get("unigram_perplexity"),
    }


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM after saving every finished step; the message says how to resume."""


def _progress_enabled(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


@contextlib.contextmanager
def _interrupts_between_steps() -> Iterator[Callable[[], None]]:
    """Ctrl-C and SIGTERM (a job scheduler stopping us) end training between two steps, never inside one: an
    interrupt inside `optimizer.step()` would save weights one update ahead of the saved step count, or half
    updated, and the resumed run would differ from an uninterrupted one. Yields `check()`, which raises
    KeyboardInterrupt at a step boundary once a signal has come (the finished steps are then saved)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)

    def check() -> None:
        if received:
            raise KeyboardInterrupt(f"signal {received[0]}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_complete(out: str | os.PathLike) -> bool:
    """Whether `out` holds a finished training run (final checkpoint and log)."""
    out = Path(out)
    if not (out / LOG_FILE).is_file():
        return False
    try:
        return bool(read_json(out / LOG_FILE, kind=LOG_KIND).get("completed"))
    except ValueError:
        return False


def _config_mismatch(saved: dict, config: TrainConfig) -> list[str]:
    current = asdict(config)
    return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in current.items() if saved.get(k) != v]


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    corpus: Corpus | None = None,
    progress: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
    force: bool = False,
    model_config: ModelConfig | None = None,
    batch_fn: Callable[[Tensor, TrainConfig, int], Tensor] | None = None,
    max_seconds: float | None = None,
) -> Path:
    """Train `config.preset` on the corpus and write the checkpoint to folder `out`; returns `out`.

    `device` None or "auto" trains on the GPU when there is one. CPU training uses the reference ops, which
    run torch's intra-op threads: on a machine shared with other jobs, fewer threads (torch.set_num_threads or
    OMP_NUM_THREADS) are often faster.

    If `out` holds an unfinished run of the same config, training resumes after its last saved step; a finished
    one is returned as it is. Anything else in `out` is refused (checked before any work) unless `force`, which
    starts over in it. The finished checkpoint replaces `out` whole (see `perfmamba.outputs`). Ctrl-C or
    SIGTERM anywhere saves every finished step and raises `TrainingInterrupted`, which says how to resume.
    `on_step(done_steps, loss)` is called after every step. `corpus` may be passed if already loaded (it must be
    the one `config.data` names).

    For recipes beyond the presets (none of these is part of `config`, so the cached models' keys stay as they
    are; a resumed run must pass the same ones): `model_config` replaces the preset's architecture (a preset's
    shape with a tokenizer's vocabulary); `batch_fn(tokens, config, step)` replaces `recipe.batch_at` (it must
    depend on the step alone, as batch_at does); `max_seconds` stops after the first step that brings the
    training time to it (the log says `stopped_by_time`; the schedule was sized for `config.steps`, so size
    `steps` to the budget and keep this as a guard).
    """
    out = Path(out)
    if force:
        check_directory(out, force=True)
        shutil.rmtree(out, ignore_errors=True)
    elif is_complete(out):
        saved = read_json(out / LOG_FILE, kind=LOG_KIND).get("config", {})
        if diff := _config_mismatch(saved, config):
            raise OutputError(f"{out} holds a finished run of a different config ({'; '.join(diff)}); pass --force "
                              "to replace it, or choose another --out")
        return out
    check_directory(out, reusable=lambda d: (d / STATE_FILE).is_file())
    with sigterm_interrupts():
        try:
            return _train(config, out, device, corpus, progress, on_step,
                          _Extras(model_config, batch_fn or batch_at, max_seconds))
        except KeyboardInterrupt as e:
            steps = _saved_steps(out)
            raise TrainingInterrupted(
                f"interrupted: saved {steps} of {config.steps} steps in {out}; rerun the same command to resume"
                if steps else f"interrupted before the first step finished; nothing saved in {out}") from e


def train_step(model, optimizer, batch: Tensor, config: TrainConfig, lr: float, autocast, *, step: int = 0) -> float:
    """One optimizer step on `batch` (rows of seq_len + 1 tokens) at learning rate `lr`; returns the loss. Raises
    RuntimeError on a non-finite loss, before the update (the weights stay those of `step`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast:
        logits = model(batch[:, :-1])
    vocab = model.config.vocab_size
    loss = F.cross_entropy(logits[..., :vocab].float().flatten(0, 1), batch[:, 1:].flatten())
    value = loss.detach().item()
    if not math.isfinite(value):
        raise RuntimeError(f"training diverged at step {step}: loss {value}; try a lower lr than {config.lr}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return value


def _saved_steps(out: Path) -> int:
    """Steps saved in `out`, from the log written beside each state file (reading the state itself would load
    the model and the optimizer to count)."""
    try:
        return int(read_json(out / LOG_FILE, kind=LOG_KIND)["steps_done"])
    except (ValueError, KeyError):
        return 0


class _Extras(NamedTuple):
    model_config: ModelConfig | None
    batch_fn: Callable[[Tensor, TrainConfig, int], Tensor]
    max_seconds: float | None


def _train(config, out: Path, device, corpus, progress, on_step, extras: _Extras) -> Path:
    from tqdm.auto import tqdm

    from perfmamba.models import build_model
    from perfmamba.models.checkpoint import write_model_files

    device = resolve_device(device)
    state_path = out / STATE_FILE

    corpus = corpus if corpus is not None else load_corpus(config.data, max_bytes=config.max_bytes)
    model = build_model(extras.model_config or config.preset, device=device, seed=config.seed)
    if corpus.train.numel() and int(corpus.train.max()) >= model.config.vocab_size:
        raise ValueError(
            f"the corpus has token id {int(corpus.train.max())}, outside {config.preset}'s vocabulary "
            f"[0, {model.config.vocab_size})"
        )
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",
    )
    done, losses, elapsed = 0, [], 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if diff := _config_mismatch(state["config"], config):
            raise ValueError(
                f"{state_path} is from a run with a different config ({'; '.join(diff)}); "
                "resume with the same settings or choose another --out"
            )
        if state["corpus_sha256"] != corpus.sha256:
            raise ValueError(f"{state_path} was trained on corpus {state['corpus_sha256'][:16]}, not {corpus.id}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        done, losses, elapsed = state["step"], list(state["losses"]), state["elapsed_s"]

    train_tokens = corpus.train.to(device)
    use_amp = config.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    def checkpoint() -> None:
        out.mkdir(parents=True, exist_ok=True)
        _save_state(state_path, {
            "config": asdict(config), "corpus_sha256": corpus.sha256, "step": done, "losses": losses,
            "elapsed_s": elapsed, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        })
        _write_log(out, config, corpus, losses, elapsed, device, completed=False)

    saved_at = done
    model.train()
    bar = tqdm(
        total=config.steps, initial=done, desc=f"train {config.preset}", unit="step",
        disable=not _progress_enabled(progress),
    )
    try:
        with _interrupts_between_steps() as stop_if_interrupted:
            while done < config.steps:
                t0 = time.perf_counter()
                lr = learning_rate(config, done)
                value = train_step(model, optimizer, extras.batch_fn(train_tokens, config, done), config, lr,
                                   autocast, step=done)
                done += 1
                losses.append(value)
                elapsed += time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", refresh=False)
                if done % config.checkpoint_every == 0 and done < config.steps:
                    checkpoint()
                    saved_at = done
                if on_step is not None:
                    on_step(done, value)
                stop_if_interrupted()
                if extras.max_seconds is not None and elapsed >= extras.max_seconds:
                    break
    except BaseException:
        # Keep every finished step: Ctrl-C, SIGTERM or a failing callback must not throw work away.
        if done > saved_at:
            checkpoint()
        raise
    finally:
        bar.close()
    if done > saved_at:  # before the final evaluation: an interrupt there must not cost the last steps
        checkpoint()

    val = corpus.val[: config.eval_tokens] if config.eval_tokens else corpus.val
    result = None
    if val.numel() > 1:
        result = perplexity(model, val.to(device), seq_len=config.eval_seq_len, progress=progress)
    summary = {
        "preset": config.preset, "steps": done, "corpus": corpus.id, "tokenizer": corpus.tokenizer,
        "val_perplexity": result.perplexity if result else None,
        "val_bits_per_token": result.bits_per_token if result else None,
    }
    baselines = (
        {"uniform_perplexity": float(vocab), "unigram_perplexity": unigram_perplexity(corpus.train, val, vocab)}
        if result else None
    )
    # The finished checkpoint and log replace `out` whole: the state file (the optimizer is not needed any more)
    # and anything else of the unfinished run are gone with it.
    with replacing_directory(out, force=True) as staging:
        write_model_files(model, staging, metadata={"training": summary, "train_config": asdict(config)})
        _write_log(staging, config, corpus, losses, elapsed, device, completed=True, val=result, baselines=baselines,
                   extras=extras, model=model)
    return out


def unigram_perplexity(train: Tensor, val: Tensor, vocab_size: int) -> float:
    """Perplexity of the best context-free model (token frequencies of `train`, add-one smoothed) on `val`:
    the baseline a model must beat before it has learned anything about context."""
    counts = torch.bincount(train.cpu(), minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return math.exp(-float(logp[val.cpu()].mean()))


def _write_log(out, config, corpus, losses, elapsed, device, *, completed: bool, val=None, baselines=None,
               extras: _Extras | None = None, model=None) -> None:
    tokens_per_step = config.batch_size * config.seq_len
    payload: dict[str, Any] = {
        "completed": completed,
        "config": asdict(config),
        "device": str(device),
        "corpus": corpus.describe(),
        "steps_done": len(losses),
        "train_time_s": elapsed,
        "tokens_per_s": len(losses) * tokens_per_step / elapsed if elapsed > 0 else None,
        "tokens_seen": len(losses) * tokens_per_step,
        "losses": losses,
    }
    if extras is not None and (extras.model_config is not None or extras.max_seconds is not None):
        payload["model_config"] = asdict(model.config)
        payload["max_seconds"] = extras.max_seconds
        payload["stopped_by_time"] = len(losses) < config.steps
    if val is not None:
        # The baselines a model must beat: knowing nothing (uniform), and knowing only token frequencies.
        payload["validation"] = {**val.to_dict(), **(baselines or {})}
    write_json(out / LOG_FILE, payload, kind=LOG_KIND)
