"""What the small trainer runs: `TrainConfig`, the recipe of each preset, the learning-rate schedule and the
batch of each step (a function of the step alone, so that a resumed run continues exactly)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from perfmamba.checks import check_at_least, check_in_range


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (the device aside). Defaults suit the tiny CPU presets."""

    preset: str = "mamba1-tiny"
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine schedule ends at lr * min_lr_ratio
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    data: str | None = None  # a corpus path; None: the stdlib corpus
    max_bytes: int | None = None  # cap on the corpus read (None: load_corpus's default)
    eval_tokens: int = 32768  # validation tokens scored at the end (0: all of them)
    eval_seq_len: int = 512
    checkpoint_every: int = 50
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_at_least(name, getattr(self, name), integer=False)
        if self.seq_len < 2 or self.eval_seq_len < 2:
            raise ValueError(f"seq_len and eval_seq_len must be >= 2, got {self.seq_len} and {self.eval_seq_len}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        check_in_range("min_lr_ratio", self.min_lr_ratio, 0, 1, closed="[]")
        if self.warmup_steps < 0 or self.eval_tokens < 0:
            raise ValueError(f"warmup_steps and eval_tokens must be >= 0, got {self.warmup_steps}, {self.eval_tokens}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# Steps enough for the loss to stop falling; measured times and perplexities: docs/results/constants.md.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "mamba1-tiny": TrainConfig(preset="mamba1-tiny", steps=300),
    "mamba2-tiny": TrainConfig(preset="mamba2-tiny", steps=500),
    # GPU recipes: 16k tokens a step over the whole stdlib corpus (~8.8 MB; 4 MiB would be repeated ~4 times).
    "mamba1-small": TrainConfig(
        preset="mamba1-small", steps=1000, batch_size=32, seq_len=512, lr=2e-3, warmup_steps=100,
        max_bytes=64 << 20, eval_tokens=262144, checkpoint_every=100,
    ),
    "mamba2-small": TrainConfig(
        preset="mamba2-small", steps=1000, batch_size=32, seq_len=512, lr=2e-3, warmup_steps=100,
        max_bytes=64 << 20, eval_tokens=262144, checkpoint_every=100,
    ),
    # The 130m shapes (d_model 768 x 24 layers) on one H200 in minutes, bf16 with mamba-ssm's fused kernels:
    # benchmarks/train_130m.py sizes `steps` to a time budget from the measured step time (this is a placeholder),
    # sets the vocabulary to its tokenizer's (the preset's own is GPT-NeoX's 50277) and mixes in recall rows.
    # 32k tokens a step in rows of 2048, so that recall across thousands of tokens is something training asks for.
    "mamba1-130m": TrainConfig(
        preset="mamba1-130m", steps=1000, batch_size=16, seq_len=2048, lr=2e-3, warmup_steps=50,
        max_bytes=64 << 20, eval_tokens=262144, eval_seq_len=2048, checkpoint_every=1_000_000,
    ),
    "mamba2-130m": TrainConfig(
        preset="mamba2-130m", steps=1000, batch_size=16, seq_len=2048, lr=2e-3, warmup_steps=50,
        max_bytes=64 << 20, eval_tokens=262144, eval_seq_len=2048, checkpoint_every=1_000_000,
    ),
}


def steps_for_budget(config: TrainConfig, seconds: float, step_seconds: float, *,
                     warmup_fraction: float = 0.05) -> TrainConfig:
    """`config` with `steps` sized to train for `seconds` at `step_seconds` a step (measured, not guessed), and a
    warmup of `warmup_fraction` of them (at least one step): the cosine then ends where the time does."""
    if not seconds > 0 or not step_seconds > 0:
        raise ValueError(f"seconds and step_seconds must be > 0, got {seconds} and {step_seconds}")
    check_in_range("warmup_fraction", warmup_fraction, 0.0, 1.0)
    steps = max(1, int(seconds / step_seconds))
    return config.replace(steps=steps, warmup_steps=max(1, round(steps * warmup_fraction)))


def train_config(preset: str, **overrides: Any) -> TrainConfig:
    """The default training recipe of `preset`, with `overrides` (None values are ignored)."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"no training recipe for preset {preset!r}; choose one of: {', '.join(TRAIN_PRESETS)}")
    return TRAIN_PRESETS[preset].replace(**{k: v for k, v in overrides.items() if v is not None})


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup to `lr`, then a cosine decay to lr * min_lr_ratio at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_at(tokens: Tensor, config: TrainConfig, step: int) -> Tensor:
    """The (batch_size, seq_len + 1) windows of step `step`: random starts from a generator seeded by
    (seed, step), so the batch does not depend on what ran before (resuming needs no generator state)."""
    n = tokens.numel()
    if n < config.seq_len + 1:
        raise ValueError(f"the training split has {n} tokens, fewer than seq_len + 1 = {config.seq_len + 1}")
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    starts = torch.randint(0, n - config.seq_len, (config.batch_size,), generator=gen)
    index = starts[:, None] + torch.arange(config.seq_len + 1)
    return tokens[index.to(tokens.device)]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices only; A_log and D are parameters of the dynamics (mamba-ssm marks them
    # _no_weight_decay), and norms and biases are offsets.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.dim() < 2 or leaf in ("A_log", "D") or getattr(p, "_no_weight_decay", False):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
