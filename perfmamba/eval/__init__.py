"""Evaluation: perplexity, evaluating a checkpoint, and the small trainer that gives tests a model worth pruning.

Corpora and tokenizers are `perfmamba.data`'s; `recipe` is what the trainer runs, `train` the run itself."""

from perfmamba.eval.cache import cache_root, trained_model
from perfmamba.eval.evaluate import EvalResult, evaluate
from perfmamba.eval.perplexity import PerplexityResult, perplexity
from perfmamba.eval.recipe import TRAIN_PRESETS, TrainConfig, train_config
from perfmamba.eval.train import TrainingInterrupted, train

__all__ = [
    "TRAIN_PRESETS", "EvalResult", "PerplexityResult", "TrainConfig", "TrainingInterrupted", "cache_root", "evaluate",
    "perplexity", "train", "train_config", "trained_model",
]
