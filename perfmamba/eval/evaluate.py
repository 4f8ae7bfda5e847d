"""`perfmamba eval`: a model (checkpoint or preset) scored on a corpus, as one result that names its data."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perfmamba.checks import check_at_least, check_choice
from perfmamba.data.corpus import SPLITS, STDLIB, load_corpus
from perfmamba.data.tokenizer import check_vocab, load_tokenizer
from perfmamba.eval.perplexity import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEQ_LEN,
    PerplexityResult,
    perplexity,
    resolve_device,
)

EVAL_KIND = "eval"


@dataclass(frozen=True)
class EvalResult:
    model: str
    corpus: dict[str, Any]  # Corpus.describe()
    split: str
    result: PerplexityResult

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "corpus": self.corpus, "split": self.split, **asdict(self.result)}


def evaluate(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    *,
    split: str = "auto",
    seq_len: int = DEFAULT_SEQ_LEN,
    stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Perplexity of `model` (a model, a checkpoint folder or a preset name) on `data` (a text file or folder;
    None: the stdlib corpus), tokenized by `tokenizer` (None: bytes; a path: a Hugging Face tokenizer file).

    `split` "auto" scores all of a user's `data` (text the model has not been trained on) and the validation
    files of the stdlib corpus (whose train files the built-in models learned from). `max_tokens` keeps the
    first that many tokens of the split. `device`: None or "auto" loads a checkpoint or preset onto the GPU
    when there is one (a model object stays where it is unless a device is named).
    """
    check_choice("split", split, ("auto", *SPLITS))
    check_at_least("seq_len", seq_len, 2, integer=False)
    check_at_least("max_tokens", max_tokens, 2, integer=False, optional=True)
    tok = load_tokenizer(tokenizer)
    if isinstance(model, (str, os.PathLike)):
        from perfmamba.models import get_model

        name = str(model)
        if not Path(model).exists() and os.sep in name:
            raise FileNotFoundError(f"{model}: no such checkpoint directory")
        model = get_model(model, device=resolve_device(device))
    else:
        name = type(model).__name__
        if device is not None:
            model = model.to(resolve_device(device))
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None:
        check_vocab(tok, vocab)
    corpus = load_corpus(data, tok)
    if split == "auto":
        split = "val" if data is None or str(data) == STDLIB else "all"
    tokens = corpus.tokens(split)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if tokens.numel() < 2:
        raise ValueError(f"the {split!r} split of {corpus.id} has {tokens.numel()} tokens; at least 2 are needed")
    result = perplexity(model, tokens, seq_len, stride, batch_size, vocab_size=vocab, progress=progress)
    return EvalResult(model=name, corpus=corpus.describe(), split=split, result=result)


def write_eval(path: str | os.PathLike, result: EvalResult) -> Path:
    from perfmamba.results import write_json

    return write_json(path, result.to_dict(), kind=EVAL_KIND)
