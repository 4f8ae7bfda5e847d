"""The built-in trained models have learned Python: far below the byte baselines on held-out files.

These train each tiny preset once per run (a few CPU minutes each) unless the model cache already holds it."""

import pytest

from perfmamba.data import load_corpus
from perfmamba.eval import evaluate
from perfmamba.eval.train import LOG_FILE, LOG_KIND, unigram_perplexity
from perfmamba.results import read_json

# A byte model that knows nothing scores 256; one that knows only byte frequencies about 22 on Python source.
# A model that has learned words and syntax is well under 8.
MAX_VAL_PERPLEXITY = 8.0


@pytest.mark.parametrize("preset", ["mamba1-tiny", "mamba2-tiny"])
def test_trained_tiny_model_beats_the_byte_baselines_on_held_out_files(trained_model_path, preset):
    path = trained_model_path(preset)
    corpus = load_corpus()
    result = evaluate(path, split="val", max_tokens=16384, progress=False)
    assert result.corpus["sha256"] == corpus.sha256
    assert result.result.n_tokens == 16383
    ppl = result.result.perplexity
    unigram = unigram_perplexity(corpus.train, corpus.val[:16384], 256)
    assert unigram > 15  # the held-out text is real source, not something trivially predictable
    assert ppl < MAX_VAL_PERPLEXITY, f"{preset}: validation perplexity {ppl:.2f}"
    assert ppl < unigram / 3
    log = read_json(path / LOG_FILE, kind=LOG_KIND)
    assert log["completed"] and log["validation"]["perplexity"] < MAX_VAL_PERPLEXITY
    assert log["losses"][-1] < log["losses"][0] / 2
