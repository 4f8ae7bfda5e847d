"""Evaluation: corpora, tokenizers, perplexity, and the small trainer that gives tests a model worth pruning."""

from perfmamba.eval.cache import cache_root, trained_model, trained_model_dir
from perfmamba.eval.data import Corpus, load_corpus, stdlib_files
from perfmamba.eval.evaluate import EvalResult, evaluate, write_eval
from perfmamba.eval.perplexity import PerplexityResult, perplexity
from perfmamba.eval.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from perfmamba.eval.train import (
    TRAIN_PRESETS,
    TrainConfig,
    TrainingInterrupted,
    learning_rate,
    train,
    train_config,
    training_summary,
)

__all__ = [
    "TRAIN_PRESETS", "ByteTokenizer", "Corpus", "EvalResult", "HFTokenizer", "PerplexityResult", "Tokenizer",
    "TrainConfig", "TrainingInterrupted", "cache_root", "evaluate", "learning_rate", "load_corpus",
    "load_tokenizer", "perplexity", "stdlib_files", "train", "train_config", "trained_model", "trained_model_dir",
    "training_summary", "write_eval",
]
