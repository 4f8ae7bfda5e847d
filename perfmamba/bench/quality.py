"""Perplexity of trained models before and after pruning: the quality side of the benchmark cases.

The quality cases of a grid (`Grid.quality_cases()`) are trained byte-level presets pruned at each ratio with
each criterion. The model comes from perfmamba.eval's cached trainer (its default recipe: the same cached model
as tests/pruning), the text from the held-out files of the stdlib-source corpus, calibration from its training
split; pruning is `perfmamba.pruning.prune_states`. What this module uses of eval and data is in `EvalAPI`
(tests pass fakes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from perfmamba.bench.cases import Case
from perfmamba.bench.workloads import prune
from perfmamba.timing import all_cpu_threads

# Calibration batch for pruning the trained models: a few sequences of training text.
CALIBRATION_SEQUENCES = 8
EVAL_TOKENS = 32768  # held-out bytes scored per case: ~0.5% relative standard error of the perplexity
EVAL_BATCH = 8


@dataclass(frozen=True)
class EvalAPI:
    """The parts of perfmamba.eval and perfmamba.data a quality case needs."""

    trained_model: Callable[..., Any]  # (preset, device=..., progress=...) -> MambaLM, trained once, cached on disk
    load_corpus: Callable[[], Any]  # () -> Corpus of the stdlib's source, .tokens("train" | "val")
    perplexity: Callable[..., Any]  # (model, tokens, seq_len, stride, batch_size, progress=) -> .perplexity


def eval_api() -> EvalAPI:
    from perfmamba.data.corpus import load_corpus
    from perfmamba.eval.cache import trained_model
    from perfmamba.eval.perplexity import perplexity

    return EvalAPI(trained_model=trained_model, load_corpus=load_corpus, perplexity=perplexity)


def _value(result: Any) -> float:
    return float(getattr(result, "perplexity", result))


class QualityCache:
    """Trained dense models, their perplexities and the evaluation text, per preset (training is the expensive
    part: once per process, and eval's trainer caches it on disk across processes)."""

    def __init__(self, device: torch.device, api: EvalAPI | None = None) -> None:
        self.device = device
        self._api = api
        self._corpus = None
        self._dense: dict[str, Any] = {}
        self._ppl: dict[str, float] = {}

    @property
    def api(self) -> EvalAPI:
        if self._api is None:
            self._api = eval_api()
        return self._api

    def tokens(self, split: str, n: int) -> torch.Tensor:
        """The first `n` tokens of the validation split, or the last `n` of the training split (calibration
        text the model saw last, as tests/pruning does)."""
        if self._corpus is None:
            self._corpus = self.api.load_corpus()
        tokens = self._corpus.tokens(split)
        return (tokens[:n] if split == "val" else tokens[-n:]).to(self.device)

    def dense(self, preset: str):
        if preset not in self._dense:
            # Training (first use only; then eval's cache) is not timed: give it every core back.
            with all_cpu_threads():
                model = self.api.trained_model(preset, device=self.device, progress=False)
            self._dense[preset] = model.eval().requires_grad_(False)
        return self._dense[preset]

    def model(self, case: Case):
        dense = self.dense(case.preset)
        if not case.pruned:
            return dense
        calibration = self.tokens("train", CALIBRATION_SEQUENCES * case.seqlen).reshape(CALIBRATION_SEQUENCES, -1)
        return prune(dense, case.ratio, case.criterion, calibration=calibration)[0]  # prunes a copy

    def evaluate(self, model, case: Case) -> float:
        with torch.inference_mode():
            return _value(self.api.perplexity(model, self.tokens("val", EVAL_TOKENS), seq_len=case.seqlen,
                                              stride=case.seqlen, batch_size=EVAL_BATCH, progress=False))

    def perplexity(self, case: Case) -> float:
        if case.id not in self._ppl:
            self._ppl[case.id] = self.evaluate(self.model(case), case)
        return self._ppl[case.id]

    def increase(self, case: Case) -> float:
        """perplexity(case) / perplexity(dense twin) - 1."""
        return self.perplexity(case) / self.perplexity(case.dense()) - 1.0
