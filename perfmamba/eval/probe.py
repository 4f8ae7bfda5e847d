"""Long-context probes that need memory: recall a key-value pair, or copy a span, seen `distance` tokens earlier.

Perplexity in windows of a few hundred tokens cannot tell a model that remembers from one that forgets: most
next tokens are predictable from the last few. A state that decays slowly is what carries a fact across
thousands of tokens, and pruning it may cost nothing in a short window and everything here. An example:

    #qhzkwm=R7K2QX\\n <distance tokens of held-out text> #qhzkwm=  ->  the model must continue with R7K2QX

Keys are random lowercase letters, values random uppercase letters and digits (`KEY_CHARS`, `VALUE_CHARS`), so
neither the text nor the key says the value: only memory of the pair does. Each piece is encoded on its own and
the ids concatenated, so the stored and the queried key are the same ids under any tokenizer (bytes or BPE).

Scoring is teacher-forced, in one parallel forward: greedy decoding reproduces the value exactly iff the argmax
at every value position is the value's next token, so `exact_match` equals greedy generation's, and
`token_accuracy` is the fraction of value tokens predicted right. Chance is ~0 for both (a value is ~36^6).

A model trained for minutes on text alone has never needed to recall a random string and may score ~0 at every
distance, dense or pruned; `recall_batch_fn` mixes a small fraction of synthetic rows in this format (several
pairs, queried later in the same row) into training, so that the probe measures how much of a learned skill
survives pruning. The training rows and the probe share the format, not the examples (other seeds, filler from
the train split; the probe's filler is the held-out split).

The copy probe needs no trained skill beyond language modelling: a span of held-out text, `distance` tokens of
other text, then the same span again; scored on the repeat's tokens after its first `COPY_SKIP` (which say which
span it is). Its control is the same row with the first occurrence replaced by other text: the same span at the
same position, not shown before (the pieces are drawn independently from held-out text, so a chance overlap is
possible, and rare in a corpus of millions of tokens). Accuracy on the copy minus the control's is what memory
of the span adds.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from perfmamba.checks import check_at_least, check_in_range
from perfmamba.data.tokenizer import Tokenizer

KEY_CHARS = string.ascii_lowercase
VALUE_CHARS = string.ascii_uppercase + string.digits
DISTANCES = (256, 2048, 8192)
COPY_SPAN = 64  # tokens in a copied span
COPY_SKIP = 8  # the repeat's first tokens, not scored: until they are read, nothing says which span comes


@dataclass(frozen=True)
class RecallExample:
    """One probe row: `ids`, scored at ids[answer_start:] (recall: the pair, the filler, the query and the value;
    copy: the span, the filler and the span again, scored after its first tokens)."""

    ids: Tensor
    answer_start: int
    distance: int

    @property
    def answer(self) -> Tensor:
        return self.ids[self.answer_start:]


@dataclass(frozen=True)
class ProbeScore:
    distance: int  # filler tokens between the stored pair and the query
    n: int  # examples
    exact_match: float  # fraction of examples whose whole value is recalled
    token_accuracy: float  # fraction of value tokens predicted right
    value_tokens: int  # value tokens scored, all examples

    def to_dict(self) -> dict:
        return asdict(self)


def _random_text(chars: str, n: int, gen: torch.Generator) -> bytes:
    picks = torch.randint(0, len(chars), (n,), generator=gen).tolist()
    return "".join(chars[i] for i in picks).encode()


def _pair(tokenizer: Tokenizer, gen: torch.Generator, key_chars: int, value_chars: int) -> tuple[Tensor, Tensor]:
    """(the key prompt "#key=", the value) as token ids, each encoded on its own."""
    key = tokenizer.encode(b"#" + _random_text(KEY_CHARS, key_chars, gen) + b"=")
    value = tokenizer.encode(_random_text(VALUE_CHARS, value_chars, gen))
    return key.long(), value.long()


def _filler(filler: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """`n` consecutive tokens of `filler` from a random offset (real text keeps the states busy, as in use)."""
    if filler.dim() != 1:
        raise ValueError(f"filler must be a 1-D token tensor, got shape {tuple(filler.shape)}")
    if filler.numel() < n:
        raise ValueError(f"filler has {filler.numel()} tokens, fewer than the {n} needed (a distance or a row's "
                         "gaps); give a longer held-out split or a shorter distance")
    start = int(torch.randint(0, filler.numel() - n + 1, (1,), generator=gen))
    return filler[start:start + n].long().cpu()


def recall_example(tokenizer: Tokenizer, filler: Tensor, distance: int, gen: torch.Generator, *,
                   key_chars: int = 6, value_chars: int = 6) -> RecallExample:
    """One example: "#key=value\\n", `distance` tokens of `filler`, then "#key=" followed by the value."""
    check_at_least("distance", distance, 0)
    key, value = _pair(tokenizer, gen, key_chars, value_chars)
    newline = tokenizer.encode(b"\n").long()
    ids = torch.cat([key, value, newline, _filler(filler, distance, gen), key, value])
    return RecallExample(ids=ids, answer_start=ids.numel() - value.numel(), distance=distance)


def make_probe(tokenizer: Tokenizer, filler: Tensor, distances: Sequence[int] = DISTANCES, n: int = 32, *,
               seed: int = 0, key_chars: int = 6, value_chars: int = 6) -> dict[int, list[RecallExample]]:
    """`n` examples per distance, from `seed` alone: score a dense and a pruned model on the same set."""
    check_at_least("n", n)
    out = {}
    for distance in distances:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(distance))
        out[int(distance)] = [recall_example(tokenizer, filler, distance, gen, key_chars=key_chars,
                                             value_chars=value_chars) for _ in range(n)]
    return out


def copy_examples(filler: Tensor, distance: int, gen: torch.Generator, *, span: int = COPY_SPAN,
                  skip: int = COPY_SKIP) -> tuple[RecallExample, RecallExample]:
    """(copy, control): [span, `distance` of text, span] and [other text, the same `distance`, span], each scored
    on the last `span - skip` tokens."""
    check_at_least("distance", distance, 0)
    check_in_range("skip", skip, 0, span, closed="[)")
    piece = _filler(filler, span, gen)
    gap, other = _filler(filler, distance, gen), _filler(filler, span, gen)
    copy, control = torch.cat([piece, gap, piece]), torch.cat([other, gap, piece])
    start = copy.numel() - span + skip
    return (RecallExample(ids=copy, answer_start=start, distance=distance),
            RecallExample(ids=control, answer_start=start, distance=distance))


def make_copy_probe(filler: Tensor, distances: Sequence[int] = DISTANCES, n: int = 32, *, seed: int = 0,
                    span: int = COPY_SPAN) -> dict[str, dict[int, list[RecallExample]]]:
    """{"copy": {distance: examples}, "control": {distance: examples}}, `n` pairs per distance, from `seed`
    alone; score each half with `score_probe`."""
    check_at_least("n", n)
    out: dict[str, dict[int, list[RecallExample]]] = {"copy": {}, "control": {}}
    for distance in distances:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(distance) + 500_000)
        pairs = [copy_examples(filler, int(distance), gen, span=span) for _ in range(n)]
        out["copy"][int(distance)] = [c for c, _ in pairs]
        out["control"][int(distance)] = [c for _, c in pairs]
    return out


def _vocab(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def score_examples(model: nn.Module, examples: Sequence[RecallExample], *, batch_size: int = 4) -> ProbeScore:
    """Exact match and per-token accuracy of `model` (ids (b, L) -> logits (b, L, >= vocab)) on `examples`.
    Rows of a batch are right-padded (a causal model's outputs at real positions do not see the padding)."""
    check_at_least("batch_size", batch_size)
    if not examples:
        raise ValueError("no examples to score")
    vocab, device = _vocab(model), _device(model)
    exact, right, total = 0, 0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b0 in range(0, len(examples), batch_size):
                batch = examples[b0:b0 + batch_size]
                width = max(e.ids.numel() for e in batch)
                ids = torch.zeros(len(batch), width, dtype=torch.long)
                for row, e in enumerate(batch):
                    ids[row, :e.ids.numel()] = e.ids
                logits = model(ids.to(device))
                logits = logits[..., :vocab] if vocab is not None else logits
                for row, e in enumerate(batch):
                    # the logits at position t predict token t + 1
                    guess = logits[row, e.answer_start - 1:e.ids.numel() - 1].argmax(-1).cpu()
                    hits = guess == e.answer
                    exact += bool(hits.all())
                    right += int(hits.sum())
                    total += hits.numel()
    finally:
        model.train(was_training)
    return ProbeScore(distance=examples[0].distance if len({e.distance for e in examples}) == 1 else -1,
                      n=len(examples), exact_match=exact / len(examples), token_accuracy=right / max(total, 1),
                      value_tokens=total)


def score_probe(model: nn.Module, probe: dict[int, list[RecallExample]], *,
                batch_size: int | Callable[[int], int] = 4) -> list[ProbeScore]:
    """`score_examples` per distance of a `make_probe` set; `batch_size` may depend on the distance."""
    return [score_examples(model, examples, batch_size=batch_size(d) if callable(batch_size) else batch_size)
            for d, examples in probe.items()]


# Training rows ------------------------------------------------------------------------------------------------
def recall_row(tokenizer: Tokenizer, filler: Tensor, length: int, gen: torch.Generator, *, pairs: int = 4,
               key_chars: int = 6, value_chars: int = 6) -> Tensor:
    """A training row of exactly `length` tokens: `pairs` pairs stored at random places, then each queried (in
    random order) with its value, all separated by gaps of consecutive filler text, so recall distances range
    from a few tokens to most of the row. Fewer pairs are used when the row is too short for them."""
    check_at_least("pairs", pairs)
    newline = tokenizer.encode(b"\n").long()
    items = [_pair(tokenizer, gen, key_chars, value_chars) for _ in range(pairs)]
    stores = [torch.cat([k, v, newline]) for k, v in items]
    queries = [torch.cat([k, v]) for k, v in items]
    while stores and sum(s.numel() for s in stores + queries) > length:
        stores, queries = stores[:-1], queries[:-1]
    order = torch.randperm(len(queries), generator=gen).tolist()
    pieces = stores + [queries[i] for i in order]
    fill = length - sum(p.numel() for p in pieces)
    text = _filler(filler, fill, gen)
    cuts = torch.randint(0, fill + 1, (len(pieces),), generator=gen).sort().values.tolist()
    out, prev = [], 0
    for cut, piece in zip(cuts, pieces):
        out += [text[prev:cut], piece]
        prev = cut
    out.append(text[prev:])
    return torch.cat(out)


def recall_batch_fn(tokenizer: Tokenizer, filler: Tensor, fraction: float, *, pairs: int = 4, seed: int = 0,
                    base: Callable | None = None) -> Callable:
    """A `batch_fn(tokens, config, step)` for `perfmamba.eval.train.train`: `base`'s batch (default
    `recipe.batch_at`) with each row replaced, with probability `fraction`, by a `recall_row` of the same length.
    A function of (seed, config.seed, step) alone, so a resumed run draws the same batches."""
    from perfmamba.eval.recipe import batch_at

    check_in_range("fraction", fraction, 0.0, 1.0, closed="[]")
    base = base or batch_at
    filler = filler.long().cpu()

    def batch_fn(tokens: Tensor, config, step: int) -> Tensor:
        batch = base(tokens, config, step)
        if fraction == 0:
            return batch
        gen = torch.Generator().manual_seed((seed * 1_000_003 + config.seed) * 1_000_003 + step + 7)
        swap = (torch.rand(batch.shape[0], generator=gen) < fraction).nonzero().flatten().tolist()
        for row in swap:
            batch[row] = recall_row(tokenizer, filler, batch.shape[1], gen, pairs=pairs).to(batch.device)
        return batch

    return batch_fn
