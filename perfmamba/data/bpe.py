"""A subword tokenizer trained here, on a corpus's train split: byte-level BPE with the `tokenizers` package.

No pretrained tokenizer can be downloaded on the training machines, and bytes make sequences ~3-4x longer than
a subword vocabulary does. Byte-level BPE (GPT-2's scheme) starts from the 256 bytes, so any UTF-8 text encodes
and decodes back exactly, with no unknown token. Training reads only the train split, so the held-out files
shape neither the model nor its vocabulary. The result is a `tokenizer.json` that `load_tokenizer` reads; its
identity is the file's hash, so a model records exactly which vocabulary it was trained with.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from perfmamba.checks import check_at_least
from perfmamba.data.corpus import Corpus
from perfmamba.data.tokenizer import BYTE_VOCAB_SIZE, HF_TOKENIZER_FILE, HFTokenizer
from perfmamba.results import atomic_write_text

# Beyond any vocabulary a language model here uses; a typo (an extra zero or two) fails at once instead of
# after minutes of training on a vocabulary the embedding cannot hold.
MAX_VOCAB_SIZE = 1 << 20
# A pair seen once is noise (a hash, an identifier used once), not a unit worth a token.
MIN_FREQUENCY = 2


def _sample(texts: list[bytes], max_bytes: int | None, seed: int) -> list[bytes]:
    """All of `texts`, or whole texts up to `max_bytes` in an order drawn from `seed` (BPE counts pairs, so
    the order of what it reads does not matter; which texts it reads does)."""
    if max_bytes is None:
        return texts
    keyed = sorted(range(len(texts)), key=lambda i: hashlib.sha256(f"{seed}\0{i}".encode()).digest())
    out, total = [], 0
    for i in keyed:
        if out and total + len(texts[i]) > max_bytes:
            break
        out.append(texts[i])
        total += len(texts[i])
    return out


def train_tokenizer(
    corpus: Corpus | Iterable[str | os.PathLike],
    vocab_size: int,
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    max_bytes: int | None = None,
) -> HFTokenizer:
    """Train a byte-level BPE tokenizer of `vocab_size` ids (the 256 bytes included) and write it to `out_path`
    (a file, or a folder that gets a tokenizer.json), atomically; returns it loaded.

    `corpus` is a `Corpus` read as bytes (its train split is used) or text files. `max_bytes` caps the text read
    (whole files, chosen by `seed`; seed has no other effect: the same text and vocab_size give the same file).
    The vocabulary may come out smaller than `vocab_size` when the text has fewer pairs seen twice.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) \
            or not BYTE_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be an integer in [{BYTE_VOCAB_SIZE}, {MAX_VOCAB_SIZE}] (the {BYTE_VOCAB_SIZE} bytes "
            f"included), got {vocab_size!r}"
        )
    check_at_least("seed", seed, 0)
    check_at_least("max_bytes", max_bytes, optional=True)
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise RuntimeError(
            "training a tokenizer needs the `tokenizers` package, which is not installed: pip install tokenizers "
            "(or perfmamba[hf])"
        ) from None
    if isinstance(corpus, Corpus):
        texts, where = corpus.texts("train"), f"the train split of {corpus.id}"
    else:
        paths = [Path(p) for p in corpus]
        texts, where = [p.read_bytes() for p in paths], f"{len(paths)} files"
    texts = _sample(texts, max_bytes, seed)
    if not any(texts):
        raise ValueError(f"no text to train a tokenizer on in {where}")

    tok = Tokenizer(models.BPE())
    # use_regex: GPT-2's split into words, numbers and punctuation, so merges never cross a word boundary.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, show_progress=False, special_tokens=[],
        # Every byte gets an id even if the training text lacks it, so unseen text still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Invalid UTF-8 (rare in a text corpus) becomes U+FFFD: the trainer takes str.
    tok.train_from_iterator((t.decode("utf-8", errors="replace") for t in texts), trainer, length=len(texts))

    out = Path(out_path)
    if out.is_dir():
        out = out / HF_TOKENIZER_FILE
    atomic_write_text(out, tok.to_str(pretty=True) + "\n")
    return HFTokenizer(out)
