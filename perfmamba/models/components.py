"""Named component spans inside the models, so profilers can attribute time and memory.

The models wrap each component of a block (the paper's RMSNorm, in_proj, conv1d, SSM scan, out_proj, plus the
pieces around them) in `span(name)`. With no tracer installed a span is a shared `nullcontext`, so the models pay
nothing for being observable; `tracing(tracer)` installs a callable `name -> context manager` for the duration of
a block of code (timers, `torch.profiler.record_function`, memory snapshots).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

COMPONENTS: tuple[str, ...] = (
    "embedding",
    "norm",  # the pre-norm RMSNorm of every block and the final norm_f
    "in_proj",
    "conv1d",
    "x_proj",  # Mamba-1: x_proj + dt_proj, which produce delta, B and C
    "ssm_scan",
    "gated_norm",  # Mamba-2: RMSNorm(y * silu(z))
    "out_proj",
    "lm_head",
    "mixer_fused",  # the fused production path (mamba_inner_fn / mamba_split_conv1d_scan_combined)
)

# The two ways a model runs: the parallel forward over a prompt, and one recurrent step per token.
MODES: tuple[str, ...] = ("prefill", "decode")

Tracer = Callable[[str], AbstractContextManager]

_NULL = contextlib.nullcontext()
_tracer: Tracer | None = None


def span(name: str) -> AbstractContextManager:
    return _NULL if _tracer is None else _tracer(name)


@contextlib.contextmanager
def tracing(tracer: Tracer) -> Iterator[None]:
    """Install `tracer` for the spans entered inside this block (not thread-safe, like the profilers it serves)."""
    global _tracer
    previous, _tracer = _tracer, tracer
    try:
        yield
    finally:
        _tracer = previous
