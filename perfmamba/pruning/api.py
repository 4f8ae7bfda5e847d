"""The one-call transform `prune_states`, and the checkpoint-to-checkpoint job behind `perfmamba prune`."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from perfmamba.models.checkpoint import get_model, write_model_files
from perfmamba.models.config import ModelConfig
from perfmamba.models.lm import MambaLM
from perfmamba.outputs import OutputError, check_directory, replacing_directory
from perfmamba.pruning.allocation import allocate
from perfmamba.pruning.calibration import CalibrationStats, calibrate, mixers_of
from perfmamba.pruning.config import PruneConfig, legal_multiple, resolve_multiple
from perfmamba.pruning.criteria import check_version, get_criterion, score
from perfmamba.pruning.record import (
    HEATMAP_FILE,
    REPORT_FILE,
    PruneReport,
    cache_bytes,
    layer_reports,
    param_count,
)
from perfmamba.pruning.surgery import apply

Calibration = Tensor | Iterable[Tensor] | None


class CalibrationWarning(UserWarning):
    """Too little calibration data for the state scores to mean much."""


def prune_states(
    model: MambaLM,
    ratio: float | None = None,
    calibration: Calibration = None,
    criterion: str | None = None,
    allocation: str | None = None,
    mode: str | None = None,
    *,
    config: PruneConfig | None = None,
    inplace: bool = False,
    progress: bool | None = None,
    stats: CalibrationStats | None = None,
    **options: Any,
) -> tuple[MambaLM, PruneReport]:
    """Prune the SSM states of `model`: calibrate, score, allocate, cut. Returns (pruned model, report).

    ratio: fraction of states to remove, in [0, 1). calibration: token ids (1-D stream, 2-D rows, or an iterable
    of batches); None only for the data-free criteria. criterion: a name in `CRITERIA` (default
    "contribution"); allocation: "uniform" or "global"; mode: "remove" or "mask". Everything can come in
    `config` (a `PruneConfig`); arguments given here override it, and so do `options` (min_states, multiple,
    seed, batch_size, seq_len, max_batches). `stats`: reuse an earlier `calibrate` of this model (scoring
    several criteria or ratios from one calibration). The caller's model is left untouched unless `inplace`.
    """
    given = dict(ratio=ratio, criterion=criterion, allocation=allocation, mode=mode, **options)
    given = {k: v for k, v in given.items() if v is not None}
    if config is None and "ratio" not in given:
        raise TypeError("prune_states needs a ratio (or config=PruneConfig(ratio=...))")
    unknown = set(given) - {f.name for f in dataclasses.fields(PruneConfig)}
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; PruneConfig fields: "
                        f"{', '.join(f.name for f in dataclasses.fields(PruneConfig))}")
    cfg = dataclasses.replace(config or PruneConfig(ratio=given["ratio"]), **given)
    mixers = mixers_of(model)
    model_config: ModelConfig = model.config
    check_version(get_criterion(cfg.criterion), model_config.version)
    multiple = resolve_multiple(cfg.multiple, model_config)
    if stats is None:
        needs_data = get_criterion(cfg.criterion).needs_data
        if needs_data and calibration is None:
            raise ValueError(f"criterion {cfg.criterion!r} needs calibration tokens; pass calibration=... "
                             "(or use a data-free criterion: A, weight, random)")
        stats = calibrate(model, calibration if needs_data else None, batch_size=cfg.batch_size,
                          seq_len=cfg.seq_len, max_batches=cfg.max_batches, progress=progress)
    elif [layer.d_state for layer in stats.layers] != [m.d_state for m in mixers]:
        raise ValueError(f"stats were calibrated on a model with d_state {[la.d_state for la in stats.layers]}, "
                         f"this one has {[m.d_state for m in mixers]}")
    calibration_note = {}
    if get_criterion(cfg.criterion).needs_data and stats.tokens < cfg.batch_size * cfg.seq_len:
        # Fewer tokens than one calibration batch: each state's activity is an average over too little text to
        # rank states by; the report keeps the warning beside the model it describes.
        calibration_note["warning"] = (
            f"calibrated on {stats.tokens} tokens, fewer than one batch ({cfg.batch_size} x {cfg.seq_len}); "
            "the state scores may be noise: give more calibration text")
        warnings.warn(calibration_note["warning"], CalibrationWarning, stacklevel=2)
    scores = score(stats, cfg.criterion, seed=cfg.seed)
    kept = allocate(scores, cfg.ratio, cfg.allocation, min_states=cfg.min_states, multiple=multiple,
                    legal=legal_multiple(model_config))

    d_before = [m.d_state for m in mixers]
    params_before, bytes_before = param_count(model), cache_bytes(model)
    pruned = model if inplace else copy.deepcopy(model)
    apply(pruned, kept, cfg.mode)
    report = PruneReport(
        version=model_config.version, criterion=cfg.criterion, allocation=cfg.allocation, mode=cfg.mode,
        ratio=float(cfg.ratio), multiple=multiple, min_states=cfg.min_states, seed=cfg.seed,
        layers=layer_reports(d_before, kept, scores),
        params_before=params_before, params_after=param_count(pruned),
        cache_bytes_before=bytes_before, cache_bytes_after=cache_bytes(pruned),
        calibration=calibration_record(stats, cfg) | calibration_note,
        config_before=dataclasses.asdict(model_config), config_after=dataclasses.asdict(pruned.config),
    )
    return pruned, report


def calibration_record(stats: CalibrationStats, cfg: PruneConfig) -> dict[str, Any]:
    """What the report says about the calibration: its size, time and window. `seq_len` is the longest row the
    model actually ran over (a 2-D tensor keeps its rows, a stream shorter than one window is one shorter row),
    `seq_len_requested` the config's; the scores of slowly decaying states depend on it (see `PruneConfig`)."""
    return {"batches": stats.batches, "tokens": stats.tokens, "seconds": stats.seconds,
            "seq_len": stats.seq_len, "seq_len_requested": cfg.seq_len, "batch_size": cfg.batch_size}


def save_pruned(
    model: MambaLM, report: PruneReport, out: str | os.PathLike, *, heatmap: bool | None = None,
    safetensors: bool = False, force: bool = True,
) -> Path:
    """Write the pruned model to directory `out` (mamba-ssm layout, see `save_model`), its report as
    prune_report.json and, if `heatmap` (None: when matplotlib is installed), prune_scores.png: all of them or,
    if anything fails or is interrupted, none (`out` stays as it was). `force=False` refuses an `out` that
    holds anything."""
    if heatmap is None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            heatmap = False
    metadata = {"pruning": {
        k: getattr(report, k) for k in ("criterion", "allocation", "mode", "ratio", "multiple", "min_states", "seed")
    } | {"report": REPORT_FILE}}
    with replacing_directory(out, force=force) as staging:
        write_model_files(model, staging, safetensors=safetensors, metadata=metadata)
        report.save(staging / REPORT_FILE)
        if heatmap is not False:
            report.plot_heatmap(staging / HEATMAP_FILE)
    return Path(out)


def calibration_tokens(
    spec: str, config: ModelConfig, *, tokens: int = 65536, seed: int = 0, tokenizer: str | None = None
) -> Tensor:
    """Calibration token ids from a command-line spec (at most `tokens` of them):

    - a .pt / .pth file holding a tensor of token ids, or a .npy array of them;
    - a text file or a folder of them, or "stdlib" (the Python standard library's source): perfmamba.eval's
      corpus reader with `tokenizer` (None: bytes, for byte-level models), its training split;
    - "random" or "random:N": N uniform random ids, seeded (for timing runs; says nothing about quality)."""
    if spec == "random" or spec.startswith("random:"):
        n = int(spec.split(":", 1)[1]) if ":" in spec else tokens
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, config.vocab_size, (n,), generator=gen)
    path = Path(spec)
    if path.suffix in (".pt", ".pth", ".npy"):
        if not path.is_file():
            raise FileNotFoundError(f"calibration data {spec!r}: no such file")
        if path.suffix == ".npy":
            import numpy as np

            ids = torch.from_numpy(np.load(path))
        else:
            ids = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex:
            raise ValueError(f"{path}: expected an integer tensor of token ids, found "
                             f"{getattr(ids, 'dtype', type(ids).__name__)}")
        return ids.long().reshape(-1)[:tokens] if ids.dim() == 1 else ids.long()
    from perfmamba.data.corpus import load_corpus
    from perfmamba.data.tokenizer import check_vocab, load_tokenizer

    tok = load_tokenizer(tokenizer)
    check_vocab(tok, config.vocab_size)
    corpus = load_corpus(spec, tok)
    ids = corpus.tokens("train")
    if ids.numel() == 0:
        ids = corpus.tokens("all")
    return ids[:tokens].long()


def prune_checkpoint(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    ratio: float,
    criterion: str = "contribution",
    allocation: str = "uniform",
    mode: str = "remove",
    calib: str | Tensor | None = None,
    calib_tokens: int = 65536,
    tokenizer: str | None = None,
    device: str | None = None,
    heatmap: bool | None = None,
    progress: bool | None = None,
    force: bool = False,
    **options: Any,
) -> PruneReport:
    """`perfmamba prune`: load a checkpoint directory or preset, prune it, write it to `out` with its report.

    `calib`: a spec for `calibration_tokens` (with `tokenizer`, at most `calib_tokens` ids) or a token tensor;
    required unless the criterion is data-free. `out` is checked before any work: it must not be the model's own
    directory, and must be empty or absent unless `force` (then what it held is replaced whole)."""
    if Path(model).exists() and Path(out).exists() and Path(out).resolve() == Path(model).resolve():
        raise OutputError(f"--out {out} is the model being pruned; write the pruned model to another folder")
    check_directory(out, force=force)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dense = get_model(model, device=device)
    calibration = None
    if calib is not None:
        calibration = calib if isinstance(calib, Tensor) else calibration_tokens(
            calib, dense.config, tokens=calib_tokens, tokenizer=tokenizer)
    pruned, report = prune_states(dense, ratio, calibration, criterion, allocation, mode, inplace=True,
                                  progress=progress, **options)
    save_pruned(pruned, report, out, heatmap=heatmap, force=force)
    return report
