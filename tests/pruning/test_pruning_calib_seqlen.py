"""The calibration window (`seq_len`): an explicit option of the API and of `perfmamba prune`, recorded in the
report as the length the model actually ran over."""

import pytest
import torch

from perfmamba import cli
from perfmamba.models import build_model
from perfmamba.pruning import PruneReport, calibrate, prune_states


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


def test_report_records_the_window_used_and_the_tokens():
    model = build_model("mamba1-tiny")
    _, report = prune_states(model, 0.5, _tokens(4 * 96), seq_len=96, batch_size=2)
    cal = report.calibration
    assert (cal["seq_len"], cal["seq_len_requested"], cal["batch_size"]) == (96, 96, 2)
    assert (cal["tokens"], cal["batches"]) == (384, 2)
    assert "calibration: 384 tokens in rows of 96" in report.summary()
    assert PruneReport.from_dict(report.to_dict()).calibration == cal


@pytest.mark.filterwarnings("ignore::perfmamba.pruning.CalibrationWarning")
def test_report_records_the_rows_given_not_the_config():
    # A 2-D tensor keeps its rows: the window the model ran over is 40, whatever seq_len says.
    rows = _tokens(3 * 40).reshape(3, 40)
    _, report = prune_states(build_model("mamba1-tiny"), 0.5, rows, seq_len=256)
    assert (report.calibration["seq_len"], report.calibration["seq_len_requested"]) == (40, 256)


@pytest.mark.filterwarnings("ignore::perfmamba.pruning.CalibrationWarning")
def test_reused_stats_keep_their_window():
    model = build_model("mamba2-tiny")
    stats = calibrate(model, _tokens(2 * 64), seq_len=64, batch_size=2)
    assert stats.seq_len == 64
    _, report = prune_states(model, 0.5, stats=stats, seq_len=64)
    assert report.calibration["seq_len"] == 64 and report.calibration["tokens"] == 128


def test_the_window_changes_the_scores():
    # The same tokens cut into windows of 16 and of 256 start the recurrence from h = 0 at different places, so
    # the per-state activity differs: the option is not decorative.
    model, tokens = build_model("mamba1-tiny"), _tokens(512)
    short = calibrate(model, tokens, seq_len=16, batch_size=64)
    long = calibrate(model, tokens, seq_len=256, batch_size=64)
    assert short.tokens == long.tokens == 512
    assert not torch.allclose(short.layers[0].h2, long.layers[0].h2, rtol=1e-3)


def test_data_free_criteria_record_no_window():
    _, report = prune_states(build_model("mamba1-tiny"), 0.5, criterion="weight")
    assert report.calibration["tokens"] == 0 and report.calibration["seq_len"] == 0
    assert "calibration:" not in report.summary()


def test_cli_calib_seqlen_reaches_the_report(tmp_path, capsys):
    out = tmp_path / "pruned"
    rc = cli.main(["prune", "--model", "mamba1-tiny", "--ratio", "0.5", "--calib", "random:512",
                   "--calib-tokens", "512", "--calib-seqlen", "128", "--calib-batch-size", "2", "--out", str(out),
                   "--device", "cpu", "--no-heatmap", "--quiet"])
    assert rc == 0
    cal = PruneReport.load(out / "prune_report.json").calibration
    assert (cal["seq_len"], cal["batch_size"], cal["tokens"], cal["batches"]) == (128, 2, 512, 2)
    assert "in rows of 128" in capsys.readouterr().out


def test_cli_rejects_a_bad_window(tmp_path, capsys):
    rc = cli.main(["prune", "--model", "mamba1-tiny", "--ratio", "0.5", "--calib", "random:64",
                   "--calib-seqlen", "0", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2
    assert "seq_len must be an integer >= 1, got 0" in capsys.readouterr().err
