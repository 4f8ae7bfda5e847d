"""`perfmamba`'s subcommands end to end on the CPU: each parses, calls its one function and prints or writes the
result; bad input is one clear line on stderr and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfmamba import cli
from perfmamba.results import read_json, write_json


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("info", "profile", "prune", "eval", "train", "compare"):
        assert name in out


@pytest.mark.parametrize("command", ["info", "profile", "prune", "eval", "train", "compare", "gate"])
def test_every_subcommand_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0 and f"usage: perfmamba {command}" in capsys.readouterr().out


def test_info_json_names_the_backends(capsys):
    assert cli.main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["backends"]["selective_scan"]["reference"] == "available"


def test_profile_prints_the_table_and_writes_the_report(tmp_path, capsys):
    rc = cli.main(["profile", "--model", "mamba2-tiny", "--seqlens", "32,64", "--mode", "prefill", "--rounds", "2",
                   "--warmup", "0", "--no-plots", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ssm_scan" in out and "L 64" in out
    doc = read_json(tmp_path / "profile.json")
    assert [p["seqlen"] for p in doc["points"]] == [32, 64]


def test_eval_and_train(tmp_path, capsys):
    assert cli.main(["train", "--preset", "mamba1-tiny", "--steps", "2", "--seq-len", "64", "--batch-size", "2",
                     "--device", "cpu", "--quiet", "--out", str(tmp_path / "m")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["preset"] == "mamba1-tiny"
    # train scores the first eval_tokens of val, eval (below) the whole split: the summary says over how many.
    assert summary["val_tokens_scored"] == 32767
    rc = cli.main(["eval", "--model", str(tmp_path / "m"), "--max-tokens", "2048", "--seq-len", "256",
                   "--device", "cpu", "--quiet", "--out", str(tmp_path / "eval.json")])
    assert rc == 0
    doc = read_json(tmp_path / "eval.json")
    assert doc["n_tokens"] == 2047 and 1 < doc["perplexity"] < 256 * 4
    assert f"perplexity {doc['perplexity']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["eval", "--model", "/no/such/checkpoint"], "/no/such/checkpoint: no such checkpoint directory"),
    (["eval", "--model", "mamba1-tiny", "--seq-len", "1"], "seq_len must be >= 2, got 1"),
    (["eval", "--model", "mamba9-huge"], "'mamba9-huge' is neither a checkpoint directory nor a preset"),
    (["profile", "--model", "mamba9-huge", "--quiet"], "mamba9-huge"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _bench_file(path, factor: float, seed: int):
    rng = np.random.default_rng(seed)
    samples = 1e-3 * factor * rng.lognormal(0.0, 0.002, 30)
    write_json(path, {"benchmarks": [{"name": "op/scan", "samples": list(samples), "unit": "s"}]}, kind="benchmark")


def test_compare_exits_1_on_a_regression_and_writes_markdown(tmp_path, capsys):
    _bench_file(tmp_path / "base.json", 1.0, 0)
    _bench_file(tmp_path / "same.json", 1.0, 1)
    _bench_file(tmp_path / "slow.json", 1.10, 2)
    assert cli.main(["compare", str(tmp_path / "base.json"), str(tmp_path / "same.json")]) == 0
    rc = cli.main(["compare", str(tmp_path / "base.json"), str(tmp_path / "slow.json"),
                   "--markdown", str(tmp_path / "c.md"), "--json", str(tmp_path / "c.json")])
    assert rc == 1
    assert "regressed" in capsys.readouterr().out
    assert "op/scan" in (tmp_path / "c.md").read_text()
    assert read_json(tmp_path / "c.json")["rows"][0]["verdict"] == "regressed"


def test_compare_of_a_corrupt_file_is_a_clear_error(tmp_path, capsys):
    _bench_file(tmp_path / "base.json", 1.0, 0)
    (tmp_path / "bad.json").write_text("{not json")
    assert cli.main(["compare", str(tmp_path / "base.json"), str(tmp_path / "bad.json")]) == 2
    assert "bad.json: corrupt result file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["prune", "--model", "m", "--out", "o", "--ratio", "abc"],
                                  ["profile", "--seqlens", ""]])
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "error:" in err and "--help" in err


def test_too_little_calibration_is_warned_and_recorded(tmp_path, capsys):
    assert cli.main(["prune", "--model", "mamba1-tiny", "--ratio", "0.5", "--calib", "random:1", "--quiet",
                     "--no-heatmap", "--out", str(tmp_path / "p")]) == 0
    assert "warning: calibrated on 1 tokens, fewer than one batch" in capsys.readouterr().out
    report = json.loads((tmp_path / "p" / "prune_report.json").read_text())
    assert "fewer than one batch" in report["calibration"]["warning"]
