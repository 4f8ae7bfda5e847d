"""Trained models for tests and benchmarks, trained once and kept in a cache folder.

The cache key is the training config plus the corpus's content hash, so a change of recipe or of the data
(another Python version's stdlib) trains a new model instead of reusing a stale one. A file lock makes
concurrent processes (pytest-xdist workers) wait for one training instead of each running its own, and an
interrupted training resumes where it stopped the next time the model is asked for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from perfmamba.data.corpus import Corpus, load_corpus
from perfmamba.eval.recipe import TrainConfig, train_config
from perfmamba.eval.train import is_complete, train
from perfmamba.outputs import locked

CACHE_ENV = "PERFMAMBA_CACHE"


def cache_root() -> Path:
    """$PERFMAMBA_CACHE, else $XDG_CACHE_HOME/perfmamba, else ~/.cache/perfmamba."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "perfmamba"


@functools.lru_cache(maxsize=4)
def _corpus(data: str | None, max_bytes: int | None) -> Corpus:
    return load_corpus(data, max_bytes=max_bytes)


def cache_key(config: TrainConfig, corpus_sha256: str) -> str:
    blob = json.dumps({"config": asdict(config), "corpus": corpus_sha256}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained_model_dir(
    preset: str = "mamba1-tiny",
    *,
    config: TrainConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> Path:
    """The checkpoint folder of `preset` trained with its default recipe (or `config`, or the recipe with
    `overrides` such as steps=...), training it first if the cache does not hold it."""
    config = config if config is not None else train_config(preset, **overrides)
    corpus = _corpus(config.data, config.max_bytes)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "models"
    out = root / f"{config.preset}-{config.steps}steps-{cache_key(config, corpus.sha256)}"
    if is_complete(out):
        return out
    # One training per model across processes (pytest-xdist workers wait for it); train's own write lock is
    # another, on `out` itself.
    with locked(out.with_name(out.name + ".train"), wait=True):
        if not is_complete(out):  # another process may have finished it while we waited
            train(config, out, device=device, corpus=corpus, progress=progress)
    return out


def trained_model(
    preset: str = "mamba1-tiny",
    *,
    config: TrainConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    **overrides: Any,
):
    """A fresh copy of the cached trained model (trained first if needed), loaded on `device` (None: the CPU;
    a model that must first be trained trains on the GPU when there is one). Each call loads its own copy, so
    a test may prune or otherwise change it without affecting the next."""
    from perfmamba.models import load_model

    path = trained_model_dir(
        preset, config=config, cache_dir=cache_dir, device=device, progress=progress, **overrides
    )
    return load_model(path, device=device)
