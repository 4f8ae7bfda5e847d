"""The pruning report: its numbers, its result file and its heatmap."""

import pytest
import torch
from prune_strategies import TINY, model_and_tokens

from perfmamba.models.config import ModelConfig
from perfmamba.pruning import PruneReport, calibration_tokens, prune_checkpoint, prune_states, save_pruned
from perfmamba.results import ResultsFileError, read_json


@pytest.mark.parametrize("version", [1, 2])
def test_report_numbers(version):
    model, ids = model_and_tokens(TINY[version], seed=0)
    pruned, report = prune_states(model, 0.5, ids, "energy", progress=False)
    cfg = TINY[version]
    N, k = cfg.d_state, cfg.d_state // 2
    G = cfg.ngroups if version == 2 else 1
    assert report.d_state_before == [N, N] and report.d_state_after == [k, k]
    assert report.states_before == 2 * G * N and report.states_after == 2 * G * k and report.achieved_ratio == 0.5
    # Parameters removed: B and C rows of the projection (+ conv channels and A_log columns).
    if version == 1:
        per_state = cfg.d_inner + cfg.d_inner + cfg.d_inner  # x_proj B row + C row, A_log column
    else:
        per_state = G * (2 * cfg.d_model + 2 * (cfg.d_conv + 1))  # in_proj B/C rows + their conv channels
    assert report.params_before - report.params_after == cfg.n_layer * (N - k) * per_state
    assert report.params_after == sum(p.numel() for p in pruned.parameters())
    ssm_state = cfg.d_inner if version == 1 else cfg.nheads * cfg.headdim
    conv_saved = 0 if version == 1 else 2 * G * cfg.d_conv
    assert report.cache_bytes_before - report.cache_bytes_after == 4 * cfg.n_layer * (N - k) * (ssm_state + conv_saved)
    assert report.calibration["tokens"] == ids.numel() and report.calibration["batches"] == 1
    assert report.layers[0].scores and len(report.layers[0].scores[0]) == N
    assert f"d_state: {N} in every layer -> {k} in every layer" in report.summary()
    _, masked = prune_states(model, 0.5, ids, "energy", mode="mask", progress=False)
    assert masked.params_after == masked.params_before and masked.cache_bytes_after == masked.cache_bytes_before
    assert masked.states_after == report.states_after


def test_report_file_round_trip_and_heatmap(tmp_path):
    pytest.importorskip("matplotlib")
    model, ids = model_and_tokens(TINY[2], seed=1)
    pruned, report = prune_states(model, 0.5, ids, "gramian", "global", progress=False)
    out = save_pruned(pruned, report, tmp_path / "ckpt")
    doc = read_json(out / "prune_report.json", kind="prune_report")
    assert doc["schema_version"] >= 1 and "environment" in doc and doc["criterion"] == "gramian"
    assert doc["summary"]["d_state_after"] == report.d_state_after
    back = PruneReport.load(out / "prune_report.json")
    assert back == report
    png = out / "prune_scores.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    sidecar = read_json(out / "perfmamba.json")
    assert sidecar["metadata"]["pruning"]["criterion"] == "gramian"
    (tmp_path / "bad.json").write_text('{"kind": "profile", "schema_version": 1}')
    with pytest.raises(ResultsFileError, match="expected a 'prune_report' result file"):
        PruneReport.load(tmp_path / "bad.json")


def test_prune_checkpoint_job(tmp_path):
    """What `perfmamba prune` runs: preset or checkpoint in, pruned checkpoint + report out."""
    pytest.importorskip("perfmamba.data.corpus")
    text = tmp_path / "calib.txt"
    text.write_bytes(bytes(range(256)) * 8)
    report = prune_checkpoint("mamba2-tiny", tmp_path / "out", ratio=0.5, criterion="contribution",
                              allocation="global", calib=str(text), heatmap=False, progress=False, seq_len=64,
                              device="cpu")
    # a single file's training split is its first 90%: 1843 tokens, cut into 28 rows of 64
    assert report.calibration["tokens"] == 28 * 64 and (tmp_path / "out" / "config.json").is_file()
    again = prune_checkpoint(tmp_path / "out", tmp_path / "again", ratio=0.25, criterion="random", heatmap=False,
                             device="cpu")
    assert again.d_state_before == report.d_state_after


def test_calibration_specs(tmp_path):
    byte_cfg = ModelConfig(version=1, d_model=8, n_layer=1, vocab_size=256)
    word_cfg = ModelConfig(version=1, d_model=8, n_layer=1, vocab_size=1000)
    r = calibration_tokens("random:100", word_cfg)
    assert r.shape == (100,) and r.max() < 1000 and torch.equal(r, calibration_tokens("random:100", word_cfg))
    torch.save(torch.arange(10), tmp_path / "ids.pt")
    assert torch.equal(calibration_tokens(str(tmp_path / "ids.pt"), word_cfg), torch.arange(10))
    torch.save(torch.rand(3), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="expected an integer tensor of token ids"):
        calibration_tokens(str(tmp_path / "bad.pt"), word_cfg)
    with pytest.raises(FileNotFoundError, match="no such file"):
        calibration_tokens(str(tmp_path / "missing.pt"), word_cfg)
    pytest.importorskip("perfmamba.data.corpus")
    (tmp_path / "t.txt").write_bytes(b"hello world, " * 40)
    ids = calibration_tokens(str(tmp_path / "t.txt"), byte_cfg, tokens=64)
    assert ids.tolist() == list(b"hello world, " * 5)[:64]
    with pytest.raises(FileNotFoundError):
        calibration_tokens(str(tmp_path / "missing.txt"), byte_cfg)
