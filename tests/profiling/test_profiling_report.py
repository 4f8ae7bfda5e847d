import argparse
import csv
import dataclasses
import json

import pytest
from profiling_configs import QUICK, TINY

from perfmamba.gate import load_results
from perfmamba.models import build_model, save_model
from perfmamba.profiling.command import add_arguments, config_from_args, main, run_profile
from perfmamba.profiling.report import (
    compare_profiles,
    format_comparison,
    format_table,
    gate_entries,
    read_profile,
    write_report,
)
from perfmamba.profiling.sweep import PointResult, ProfileResult, profile
from perfmamba.results import ResultsFileError


def test_json_round_trips_and_validates(tiny_profile, tmp_path):
    files = write_report(tiny_profile, tmp_path, plots=False)
    doc = json.loads(files["json"].read_text())
    assert doc["kind"] == "profile" and doc["schema_version"] == 1 and doc["profile_version"] == 1
    assert doc["environment"]["torch"] and "git_commit" in doc["environment"]
    assert doc["model"]["config"]["d_model"] == 64 and doc["config"]["seqlens"] == [32, 64, 128]
    assert read_profile(tmp_path) == tiny_profile
    assert read_profile(files["json"]) == tiny_profile


def test_json_round_trips_a_pruned_model_with_per_layer_states(tmp_path):
    pruned = dataclasses.replace(TINY[2], layer_d_state=(5, 12))
    config = dataclasses.replace(QUICK, seqlens=(16,), modes=("prefill",), memory=False, count_flops=False)
    result = profile(pruned, config, name="pruned")
    write_report(result, tmp_path, plots=False)
    back = read_profile(tmp_path)
    assert back == result and back.model.config["layer_d_state"] == [5, 12]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("points"), "'points' must be a list"),
    (lambda d: d["points"][0].update(status="done"), r"points\[0\] has no valid status"),
    (lambda d: d["points"][0].update(time_s=None), r"points\[0\] is ok but its time_s is None"),
    (lambda d: d["benchmarks"].append({"name": "x"}), "needs a 'name' and a 'samples' list"),
    (lambda d: d.update(profile_version=99), "unsupported profile_version 99"),
    (lambda d: d["points"][0].update(colour="red"), "malformed profile"),
    (lambda d: d.update(kind="benchmark"), "expected a 'profile' result file"),
])
def test_invalid_files_are_rejected_with_the_reason(tiny_profile, tmp_path, mutate, message):
    path = write_report(tiny_profile, tmp_path, plots=False)["json"]
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultsFileError, match=message):
        read_profile(path)


def test_the_gate_reads_the_profile(tiny_profile, tmp_path):
    path = write_report(tiny_profile, tmp_path, plots=False)["json"]
    measurements = load_results(path)
    name = f"profile/{tiny_profile.model.name}/unfused/prefill/b1/L64/ssm_scan"
    assert measurements[name].samples == tuple(tiny_profile.point(mode="prefill", seqlen=64)
                                               .component("ssm_scan").samples_s)
    assert measurements[name].unit == "s"
    peak = measurements[f"profile/{tiny_profile.model.name}/unfused/decode/b1/L32/peak_memory"]
    assert peak.unit == "bytes" and peak.median == tiny_profile.point(mode="decode", seqlen=32).peak_bytes
    assert len(measurements) == len(gate_entries(tiny_profile))


def test_csv_has_a_row_per_point_and_component(tiny_profile, tmp_path):
    path = write_report(tiny_profile, tmp_path, plots=False)["csv"]
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == sum(len(p.components) for p in tiny_profile.points)
    row = next(r for r in rows if r["mode"] == "prefill" and r["seqlen"] == "128" and r["component"] == "ssm_scan")
    c = tiny_profile.point(mode="prefill", seqlen=128).component("ssm_scan")
    assert float(row["time_s"]) == c.time_s and float(row["flops"]) == c.flops


def test_table_shows_series_points_and_failures(tiny_profile):
    result = dataclasses.replace(tiny_profile, points=[
        *tiny_profile.points,
        PointResult(path="unfused", mode="prefill", batch=1, seqlen=256, status="oom", message="out of memory: x"),
    ])
    text = format_table(result)
    assert "prefill, unfused, batch 1" in text and "decode, unfused, batch 1" in text
    assert "ssm_scan" in text and "OOM" in text and "256: out of memory: x" in text
    assert "measured peaks" in text
    share = tiny_profile.point(mode="prefill", seqlen=128).component("ssm_scan").share
    assert f"{100 * share:.1f}%" in text


def test_plots_are_written(tiny1_profile, tmp_path):
    files = write_report(tiny1_profile, tmp_path)
    for name in ("shares", "scaling", "roofline"):
        assert files[name].read_bytes()[:4] == b"\x89PNG"


def _scaled(result: ProfileResult, factor: float, name: str) -> ProfileResult:
    points = []
    for p in result.points:
        comps = [dataclasses.replace(c, time_s=c.time_s * factor, peak_bytes=(c.peak_bytes or 0) // 2)
                 for c in p.components]
        points.append(dataclasses.replace(p, time_s=p.time_s * factor, components=comps,
                                          peak_bytes=p.peak_bytes // 2))
    return dataclasses.replace(result, points=points, model=dataclasses.replace(result.model, name=name))


def test_compare_dense_with_pruned(tiny_profile):
    pruned = _scaled(tiny_profile, 0.5, "pruned")
    cmp = compare_profiles(tiny_profile, pruned)
    assert len(cmp.rows) == sum(len(p.components) + 1 for p in tiny_profile.points)
    for row in cmp.rows:
        assert row.speedup == pytest.approx(2.0)
    total = next(r for r in cmp.rows if r.component == "total" and r.mode == "prefill" and r.seqlen == 64)
    assert total.memory_change == pytest.approx(-0.5, abs=1e-3)
    text = format_comparison(cmp)
    assert "pruned vs tiny" in text and "2.000x" in text


def test_command_profiles_and_compares_a_pruned_checkpoint(tmp_path):
    """`perfmamba profile --model ... --compare PRUNED_DIR --out DIR` end to end on a CPU."""
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
    for name in ("profile.json", "profile.csv", "profile.txt", "compare.json", "compare.csv", "compare.txt",
                 "compared/profile.json"):
        assert (out / name).is_file(), name
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
