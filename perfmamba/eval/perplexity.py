"""Token-level perplexity with a sliding window.

Every token but the first is scored once, from the tokens before it inside its window. Windows hold `seq_len`
input tokens and start every `stride` tokens; a window scores only the targets that no earlier window scored, so
with stride < seq_len each scored token (after the first window) sees at least seq_len - stride tokens of context
(Hugging Face's "perplexity of fixed-length models" recipe). The negative log-likelihoods are summed in float64
in a fixed order, so the result does not depend on the batch size beyond float32 rounding of the logits.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perfmamba.checks import check_at_least

DEFAULT_SEQ_LEN = 512
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token, nats
    bits_per_token: float
    n_tokens: int  # scored tokens (every token but the first)
    seq_len: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)


def windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) per window: inputs tokens[start:end], targets tokens[start+1:end+1], of which
    those at positions >= first_scored + 1 are new. Together the windows score positions 1..n_tokens-1 once."""
    out = []
    last = n_tokens - 1  # the last input position that has a target
    scored = 0  # targets at positions 1..scored are done
    start = 0
    while scored < last:
        end = min(start + seq_len, last)
        out.append((start, end, scored - start))
        scored = end
        start += stride
    return out


def model_vocab_size(model: nn.Module) -> int | None:
    """The real vocabulary of a perfmamba / mamba-ssm model (its logits carry padding columns beyond it)."""
    config = getattr(model, "config", None)
    return getattr(config, "vocab_size", None)


def resolve_device(device: torch.device | str | None) -> torch.device:
    """None or "auto": the GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but torch sees no CUDA device")
    return device


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _progress_enabled(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def perplexity(
    model: nn.Module,
    tokens: Tensor,
    seq_len: int = DEFAULT_SEQ_LEN,
    stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    vocab_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> PerplexityResult:
    """Perplexity of `model` (input_ids (b, L) -> logits (b, L, >= vocab)) on the 1-D token tensor `tokens`.

    `stride` defaults to `seq_len` (non-overlapping windows). Only the first `vocab_size` logit columns are
    real tokens (default: `model.config.vocab_size`, else every column); the softmax runs over those alone.
    Runs on `device` (default: where the model's parameters are); progress bar on a terminal unless
    `progress=False`.
    """
    check_at_least("seq_len", seq_len, 2, integer=False)
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len={seq_len}], got {stride}")
    check_at_least("batch_size", batch_size, integer=False)
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D tensor of token ids, got shape {tuple(tokens.shape)}")
    if tokens.numel() < 2:
        raise ValueError(f"need at least 2 tokens to score one, got {tokens.numel()}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    vocab = vocab_size if vocab_size is not None else model_vocab_size(model)
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} is outside the model's vocabulary [0, {vocab})")

    device = torch.device(device) if device is not None else _device_of(model)
    tokens = tokens.to(device=device, dtype=torch.long)
    spans = windows(tokens.numel(), seq_len, stride)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(spans), desc="perplexity", unit="window", disable=not _progress_enabled(progress))
    try:
        with torch.inference_mode():
            for b0 in range(0, len(spans), batch_size):
                batch = spans[b0 : b0 + batch_size]
                width = max(end - start for start, end, _ in batch)
                # Short windows (the last one) are right-padded: a causal model's outputs at real positions do
                # not see the padding, and padded targets get mask 0.
                ids = tokens.new_zeros((len(batch), width))
                targets = tokens.new_zeros((len(batch), width))
                mask = torch.zeros((len(batch), width), dtype=torch.bool, device=device)
                for row, (start, end, first) in enumerate(batch):
                    ids[row, : end - start] = tokens[start:end]
                    targets[row, : end - start] = tokens[start + 1 : end + 1]
                    mask[row, first : end - start] = True
                logits = model(ids)
                if vocab is not None:
                    if logits.shape[-1] < vocab:
                        raise ValueError(
                            f"model returned {logits.shape[-1]} logits per token, fewer than vocab_size={vocab}"
                        )
                    logits = logits[..., :vocab]
                nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
                total += nll.view(len(batch), width)[mask].double().sum()
                count += int(mask.sum())
                bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    mean = float(total) / count
    return PerplexityResult(
        perplexity=math.exp(mean), nll=mean, bits_per_token=mean / math.log(2), n_tokens=count, seq_len=seq_len,
        stride=stride,
    )
