"""Tokenizers: raw bytes (the default; vocabulary 256) and a Hugging Face `tokenizers` file from a local path.

A tokenizer turns a corpus file's bytes into token ids. `identity` names it exactly (the byte tokenizer, or the
sha256 of the tokenizer file), so a result or a cached model records which tokenization produced its numbers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

BYTE_VOCAB_SIZE = 256
HF_TOKENIZER_FILE = "tokenizer.json"
_BATCH_CHARS = 8 * 1024 * 1024


@runtime_checkable
class Tokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    @property
    def identity(self) -> str: ...

    def encode(self, data: bytes, source: str = "<text>") -> Tensor:
        """Token ids of `data` as a 1-D int64 tensor; `source` names the data in errors."""
        ...

    def decode(self, ids: Tensor | list[int]) -> str: ...


class ByteTokenizer:
    """One token per byte, so any file (any encoding) tokenizes and decodes back exactly."""

    vocab_size = BYTE_VOCAB_SIZE
    identity = "byte"

    def encode(self, data: bytes, source: str = "<text>") -> Tensor:
        # frombuffer needs a writable buffer to avoid a warning; bytearray copies once.
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.empty(0, dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return bytes(values).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class HFTokenizer:
    """A Hugging Face `tokenizers` file (`tokenizer.json`), as shipped beside a model's weights."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / HF_TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such tokenizer file (expected a {HF_TOKENIZER_FILE} or a folder with one)"
            )
        try:
            from tokenizers import Tokenizer as _HFTokenizer
        except ImportError:
            raise RuntimeError(
                f"reading the tokenizer file {path} needs the `tokenizers` package, which is not installed: "
                "pip install tokenizers (or perfmamba[hf])"
            ) from None
        raw = path.read_bytes()
        try:
            self._tok = _HFTokenizer.from_str(raw.decode("utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path}: not a valid Hugging Face tokenizer file ({e})") from e
        self.path = path
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.identity = f"hf:{path.name}:sha256:{hashlib.sha256(raw).hexdigest()[:16]}"

    def encode(self, data: bytes, source: str = "<text>") -> Tensor:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{source}: not UTF-8 text ({e}); the byte tokenizer reads any bytes") from e
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return torch.tensor(ids, dtype=torch.long)

    def encode_batch(self, data: list[bytes], sources: list[str] | None = None) -> list[Tensor]:
        """`encode` of many texts, on every core (the `tokenizers` package's own threads)."""
        texts = []
        for i, item in enumerate(data):
            try:
                texts.append(item.decode("utf-8"))
            except UnicodeDecodeError as e:
                source = sources[i] if sources else f"<text {i}>"
                raise ValueError(f"{source}: not UTF-8 text ({e}); the byte tokenizer reads any bytes") from e
        # The fast variant skips the character offsets, which nothing here uses; batches of a few MB bound the
        # memory of the per-token structures tokenizers builds before the ids are copied out.
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        out: list[Tensor] = []
        start = 0
        while start < len(texts):
            stop, size = start, 0
            while stop < len(texts) and (stop == start or size + len(texts[stop]) <= _BATCH_CHARS):
                size += len(texts[stop])
                stop += 1
            out += [torch.tensor(e.ids, dtype=torch.long) for e in encode(texts[start:stop], add_special_tokens=False)]
            start = stop
        return out

    def decode(self, ids: Tensor | list[int]) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self._tok.decode(values)

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r})"


def load_tokenizer(spec: str | os.PathLike | Tokenizer | None = None) -> Tokenizer:
    """None or "byte": the byte tokenizer; a path: a Hugging Face tokenizer file (or a folder holding one)."""
    if spec is None or (isinstance(spec, str) and spec == "byte"):
        return ByteTokenizer()
    if isinstance(spec, Tokenizer):
        return spec
    return HFTokenizer(spec)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
    """A tokenizer may use fewer ids than the model knows, never more."""
    if tokenizer.vocab_size > model_vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.identity} has vocab_size={tokenizer.vocab_size}, more than the model's "
            f"vocab_size={model_vocab_size}; use the model's own tokenizer (byte-level models: the default)"
        )
