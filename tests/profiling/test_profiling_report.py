import csv
import dataclasses
import json

import pytest
from profiling_configs import QUICK, TINY

from perfmamba.gate import load_results
from perfmamba.profiling.analysis import trace_cost
from perfmamba.profiling.formatting import component_names, format_table
from perfmamba.profiling.plots import scaling_figure
from perfmamba.profiling.report import write_report
from perfmamba.profiling.result import ComponentStats, PointResult, gate_entries, read_profile
from perfmamba.profiling.sweep import profile
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


def _legend_lines(block: str) -> str:
    return "\n".join(line for line in block.splitlines() if " = " in line and line.startswith("  "))


def test_every_table_explains_its_columns_and_special_rows(tiny_profile):
    """Under each table a legend names every column that is not a component (and the k row, cover, trace)."""
    text = format_table(tiny_profile)
    blocks = [b for b in text.split("\n\n") if "---" in b]
    assert len(blocks) == 4  # a table per series and the detail of each series' longest point
    for block in blocks:
        header = block.splitlines()[1]  # under the title
        columns = {c.strip() for c in header.split("  ") if c.strip()}
        columns -= {"L", "component", *component_names(tiny_profile, tiny_profile.points)}
        assert len(columns) >= 5, header
        legend = _legend_lines(block)
        for column in columns:
            assert column in legend, (column, legend)
    series = blocks[0]
    assert "  k = row of fitted exponents" in series and "above 100% when the timers' own cost" in series


def test_the_timers_cost_is_paired_round_by_round():
    """A load spike in one traced round moves the traced median (3.3 ms against 1 ms) but not the paired ratio."""
    e2e = [1e-3, 1e-3, 1e-3, 3e-3, 3e-3]
    traced = [1.1e-3, 1.1e-3, 3.3e-3, 3.3e-3, 3.3e-3]
    half = [t / 2 for t in traced]
    point = PointResult(path="unfused", mode="prefill", batch=1, seqlen=64, status="ok", time_s=1e-3,
                        samples_s=e2e, traced_time_s=3.3e-3, coverage=0.95,
                        components=[ComponentStats("ssm_scan", 1e-3, half), ComponentStats("other", 1e-3, half)])
    assert trace_cost(point) == pytest.approx(0.1)


def test_the_scaling_plot_names_its_clock_and_keeps_title_and_legends_clear(tiny1_profile):
    fig = scaling_figure(tiny1_profile)
    fig.canvas.draw()
    title = fig._suptitle
    assert "host clock" in title.get_text() and "CUDA" not in title.get_text()
    box = title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # not cut off at the edges
    for ax in fig.axes:
        assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the lines, not on them
        assert "host clock" in ax.get_ylabel()
    gpu = [dataclasses.replace(p, clock="cuda_event", busy_fraction=0.9, graph_time_s=p.time_s)
           for p in tiny1_profile.points]
    assert "total: CUDA-graph replay" in scaling_figure(dataclasses.replace(tiny1_profile, points=gpu))._suptitle \
        .get_text()
