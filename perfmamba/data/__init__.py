"""Text for calibration, training and evaluation: corpora (`corpus`, whose files come from `sources`), tokenizers
(`tokenizer`) and a byte-level BPE trained on a corpus (`bpe`).

Below both `eval` (perplexity, the trainer) and `pruning` (calibration reads it)."""

from perfmamba.data.bpe import train_tokenizer
from perfmamba.data.corpus import Corpus, load_corpus
from perfmamba.data.tokenizer import Tokenizer, load_tokenizer

__all__ = ["Corpus", "Tokenizer", "load_corpus", "load_tokenizer", "train_tokenizer"]
