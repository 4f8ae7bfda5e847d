"""On a trained model, the calibrated criteria must beat random state selection in perplexity.

Needs perfmamba.eval's cached trainer (`trained_model`) and `perplexity`, on its default corpus (the stdlib's
source, `load_corpus`): skipped with the reason until they exist. The first run trains the tiny presets
(minutes on a CPU); later runs load them.
"""

import statistics

import pytest
import torch

from perfmamba.pruning import calibrate, prune_states

pytestmark = pytest.mark.slow

RATIO = 0.5
EVAL_TOKENS = 16384
SEQ_LEN = 256


def eval_api():
    ev = pytest.importorskip("perfmamba.eval", reason="needs perfmamba.eval (trainer, corpus, perplexity)")
    missing = [n for n in ("trained_model", "perplexity") if not hasattr(ev, n)]
    if missing:
        pytest.skip(f"needs perfmamba.eval.{', '.join(missing)}")
    return ev


def ppl(ev, model, tokens) -> float:
    with torch.inference_mode():
        result = ev.perplexity(model, tokens, seq_len=SEQ_LEN, stride=SEQ_LEN, batch_size=8)
    return float(getattr(result, "perplexity", result))


@pytest.mark.parametrize("preset", ["mamba1-tiny", "mamba2-tiny"])
def test_calibrated_criteria_beat_random_at_half_the_states(preset):
    ev = eval_api()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ev.trained_model(preset, device=device).eval()
    from perfmamba.data.corpus import load_corpus

    corpus = load_corpus()
    test = corpus.tokens("val")[:EVAL_TOKENS].to(device)
    calib = corpus.tokens("train")[-16 * SEQ_LEN :].reshape(16, SEQ_LEN).to(device)
    stats = calibrate(model, calib, progress=False)
    dense = ppl(ev, model, test)
    result = {}
    for criterion in ("contribution", "gramian", "energy", "delta"):
        for allocation in ("uniform", "global"):
            pruned, _ = prune_states(model, RATIO, calib, criterion, allocation, stats=stats)
            result[f"{criterion}/{allocation}"] = ppl(ev, pruned, test)
    for criterion in ("weight", "A") if model.config.version == 1 else ("weight",):
        result[f"{criterion}/uniform"] = ppl(ev, prune_states(model, RATIO, None, criterion)[0], test)
    randoms = [ppl(ev, prune_states(model, RATIO, None, "random", seed=s)[0], test) for s in range(3)]
    random = statistics.median(randoms)
    best = min(result["contribution/uniform"], result["gramian/uniform"])
    table = "\n".join(f"  {k:<24} {v:8.3f}" for k, v in sorted(result.items(), key=lambda kv: kv[1]))
    msg = (f"{preset} at r={RATIO}: dense perplexity {dense:.3f}; random (3 seeds) "
           f"{', '.join(f'{r:.3f}' for r in randoms)} (median {random:.3f});\n{table}")
    print(msg)
    assert best < random, "contribution and gramian (uniform) do not beat random:\n" + msg
