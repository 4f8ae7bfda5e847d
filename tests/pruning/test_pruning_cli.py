"""`perfmamba prune`: a pruned checkpoint and its report from the command line, and clear errors."""

import pytest

from perfmamba import cli
from perfmamba.models import load_model
from perfmamba.pruning import PruneReport
from perfmamba.pruning.config import parse_multiple


def test_prune_command_writes_checkpoint_and_report(tmp_path, capsys):
    out = tmp_path / "pruned"
    rc = cli.main(["prune", "--model", "mamba1-tiny", "--ratio", "0.5", "--criterion", "contribution",
                   "--allocation", "global", "--calib", "random:1024", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    report = PruneReport.load(out / "prune_report.json")
    assert (report.criterion, report.allocation, report.ratio) == ("contribution", "global", 0.5)
    assert list(load_model(out).config.d_states) == report.d_state_after
    assert sum(report.d_state_after) == 4 * 16 // 2
    assert "d_state" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--ratio", "1.5"], "ratio must be in [0, 1), got 1.5"),
    (["--ratio", "0.5", "--criterion", "magic"], "unknown criterion 'magic'"),
    (["--ratio", "0.97"], "layer 0: ratio 0.97 keeps floor(16 * (1 - 0.97)) = 0 states"),
    (["--ratio", "0.5", "--multiple", "three"], "multiple must be an integer >= 1, 'pow2' or 'legal'"),
])
def test_prune_command_errors(tmp_path, capsys, argv, message):
    rc = cli.main(["prune", "--model", "mamba1-tiny", "--calib", "random:256", "--out", str(tmp_path / "o"),
                   "--device", "cpu", *argv])
    assert rc != 0
    assert message in capsys.readouterr().err


def test_parse_multiple():
    assert parse_multiple(None) is None and parse_multiple("legal") is None
    assert parse_multiple("8") == 8 and parse_multiple("pow2") == "pow2"
    with pytest.raises(ValueError, match="got '0'|got 0"):
        parse_multiple("0")
