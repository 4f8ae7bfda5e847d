"""Text for calibration, training and evaluation: corpora (`corpus`) and tokenizers (`tokenizer`).

Below both `eval` (perplexity, the trainer) and `pruning` (calibration reads it)."""

from perfmamba.data.corpus import Corpus, load_corpus
from perfmamba.data.tokenizer import Tokenizer, load_tokenizer

__all__ = ["Corpus", "Tokenizer", "load_corpus", "load_tokenizer"]
