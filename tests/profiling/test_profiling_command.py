"""`perfmamba profile` end to end on a CPU: what it writes and names, and what it refuses before any work."""

import argparse
import dataclasses
import json
import sys

import pytest
from profiling_configs import QUICK, TINY

from perfmamba import cli
from perfmamba.models import build_model, save_model
from perfmamba.profiling import command, footprint
from perfmamba.profiling.command import add_arguments, config_from_args, main, run_profile
from perfmamba.profiling.result import read_profile

FAKE_FREE = 8 << 30  # "free memory" for the refusal tests: the same verdicts on any machine


def _no_work(monkeypatch):
    """Fail the test if a profile starts: what is refused must be refused before any work."""
    monkeypatch.setattr(command, "profile", lambda *a, **k: pytest.fail("a profile started"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_command_profiles_and_compares_a_pruned_checkpoint(tmp_path, capsys):
    """`perfmamba profile --model ... --compare PRUNED_DIR --out DIR` end to end, naming every file it wrote."""
    dense_dir, pruned_dir, out = tmp_path / "dense", tmp_path / "pruned", tmp_path / "report"
    save_model(build_model(TINY[1]), dense_dir)
    save_model(build_model(dataclasses.replace(TINY[1], layer_d_state=(4, 6))), pruned_dir)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([
        "--model", str(dense_dir), "--compare", str(pruned_dir), "--seqlens", "16,32", "--mode", "prefill,decode",
        "--rounds", "2", "--warmup", "0", "--threads", "1", "--out", str(out), "--quiet", "--no-plots",
    ])
    config = config_from_args(args)
    assert (config.seqlens, config.modes, config.cpu_threads) == ((16, 32), ("prefill", "decode"), 1)
    assert main(args) == 0
    names = ("profile.json", "profile.csv", "profile.txt", "compare.json", "compare.csv", "compare.txt",
             "compared/profile.json", "compared/profile.csv", "compared/profile.txt")
    for name in names:
        assert (out / name).is_file(), name
    listed = capsys.readouterr().out.split(f"wrote {len(names)} files:\n")[1].split("\nreport: ")[0].split()
    assert sorted(listed) == sorted(str(out / name) for name in names)
    dense, pruned = read_profile(out), read_profile(out / "compared")
    assert dense.model.config["layer_d_state"] is None and pruned.model.config["layer_d_state"] == [4, 6]
    cache = json.loads((out / "compare.json").read_text())["cache_bytes_per_sequence"]
    assert cache[1] < cache[0]  # fewer states, smaller decode cache
    assert not (out / "shares.png").exists()


def test_run_profile_without_output_dir_returns_text():
    run = run_profile("mamba1-tiny", dataclasses.replace(QUICK, seqlens=(16,), modes=("prefill",), memory=False,
                                                         count_flops=False))
    assert run.files == {} and run.result.points[0].status == "ok"
    assert run.text.startswith("mamba1-tiny: Mamba-1")


@pytest.mark.parametrize("seqlens", ["64,10000000", "1000000000"])
def test_a_sweep_that_cannot_fit_is_refused_before_any_point_runs(seqlens, monkeypatch, capsys):
    """The issue's commands: L = 10^7 grew until the OOM killer ended it, L = 10^9 allocated 8 GB of token ids,
    printed an OOM row and exited 0."""
    monkeypatch.setattr(footprint, "available_memory", lambda device: FAKE_FREE)
    _no_work(monkeypatch)
    assert cli.main(["profile", "--model", "mamba1-tiny", "--seqlens", seqlens, "--quiet"]) == 2
    err = _one_error_line(capsys)
    longest = seqlens.split(",")[-1]
    assert f"mamba1-tiny: prefill batch 1 L={longest} needs up to" in err and "8 GiB available on cpu" in err
    assert "the longest prefill at batch 1 that fits is L=" in err


def test_the_compared_model_is_checked_before_the_first_profiles(tmp_path, monkeypatch, capsys):
    wide = dataclasses.replace(TINY[1], d_model=2048, n_layer=8)  # only its config.json is read
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide" / "config.json").write_text(json.dumps(wide.to_mamba_ssm()))
    need = {name: footprint.point_footprint(cfg, mode="prefill", seqlen=4096, dtype="float32", weights=True).total
            for name, cfg in (("dense", build_model("mamba1-tiny", device="meta").config), ("wide", wide))}
    assert need["dense"] < need["wide"]
    monkeypatch.setattr(footprint, "available_memory", lambda device: (need["dense"] + need["wide"]) // 2)
    _no_work(monkeypatch)
    argv = ["profile", "--model", "mamba1-tiny", "--compare", str(tmp_path / "wide"), "--seqlens", "4096",
            "--mode", "prefill", "--quiet"]
    assert cli.main(argv) == 2
    assert f"{tmp_path / 'wide'}: prefill batch 1 L=4096 needs up to" in _one_error_line(capsys)


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    (tmp_path / "taken").write_text("x")
    assert cli.main(["profile", "--model", "mamba1-tiny", "--seqlens", "16", "--quiet", "--out",
                     str(tmp_path / "taken")]) == 2
    assert "taken: is a file, not a folder" in _one_error_line(capsys)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc, which no one can write in")
def test_an_out_that_cannot_be_written_is_refused_before_any_work(monkeypatch, capsys):
    _no_work(monkeypatch)
    assert cli.main(["profile", "--model", "mamba1-tiny", "--seqlens", "16", "--quiet", "--out", "/proc/report"]) == 2
    assert "/proc/report: cannot write in /proc" in _one_error_line(capsys)


def test_an_earlier_report_is_replaced_only_with_force(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "profile.json").write_text("{}")
    argv = ["profile", "--model", "mamba1-tiny", "--seqlens", "16", "--mode", "prefill", "--rounds", "1",
            "--warmup", "0", "--no-plots", "--no-memory", "--quiet", "--out", str(out)]
    with monkeypatch.context() as m:
        _no_work(m)
        assert cli.main(argv) == 2
    assert "report: not empty (holds profile.json); pass --force" in _one_error_line(capsys)
    assert cli.main([*argv, "--force"]) == 0
    assert read_profile(out).points[0].status == "ok"


def test_no_point_measured_is_an_error_and_writes_nothing(tmp_path, capsys):
    """The fused path on a CPU: every point is skipped; before, the command printed SKIPPED rows and exited 0."""
    out = tmp_path / "report"
    assert cli.main(["profile", "--model", "mamba1-tiny", "--seqlens", "16", "--mode", "prefill", "--path", "fused",
                     "--quiet", "--out", str(out)]) == 1
    err = _one_error_line(capsys)
    assert "no point of mamba1-tiny was measured: skipped (the fused path needs CUDA tensors)" in err
    assert "nothing written" in err and not out.exists()


def test_the_main_job_writes_its_report_by_default_and_says_where_last(tmp_path, monkeypatch, capsys):
    """README's main job, `perfmamba profile --model mamba1-tiny`: no --out, yet the report and plots are
    written (a new folder, never an earlier one) and the last line printed says where."""
    monkeypatch.chdir(tmp_path)
    argv = ["profile", "--model", "mamba1-tiny", "--seqlens", "16", "--mode", "both", "--path", "both",
            "--rounds", "1", "--warmup", "0", "--quiet"]
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    (report,) = (tmp_path / "perfmamba-profile").iterdir()
    plots = sorted(p.name for p in report.glob("*.png"))
    assert last.startswith(f"report: {report.relative_to(tmp_path)}/") and f"{len(plots)} plots" in last
    assert (report / "profile.json").is_file() and {"shares.png", "roofline.png"} <= set(plots)
    assert cli.main([*argv, "--no-out"]) == 0 and len(list((tmp_path / "perfmamba-profile").iterdir())) == 1


@pytest.mark.parametrize("flag, text, want", [("--path", "both", ("unfused", "fused")),
                                              ("--mode", "both", ("prefill", "decode")),
                                              ("--path", "fused", ("fused",))])
def test_both_means_every_choice(flag, text, want):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "m", flag, text])
    assert getattr(args, flag[2:]) == want


def test_an_unknown_path_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["profile", "--model", "mamba1-tiny", "--path", "fast"])
    assert "expected unfused, fused or both, got 'fast'" in _one_error_line(capsys)
