"""benchmarks/gpu_profile_sweep.py: the CPU smoke sweep writes every model's report and the summary; --report-only
re-renders them from profile.json alone, keeping the measuring machine and recomputing the derived numbers."""

import json

import bench_scripts

sweep = bench_scripts.load_script("gpu_profile_sweep")


def test_smoke_then_report_only_keeps_the_measuring_machine(tmp_path):
    assert sweep.main(["--smoke", "--out", str(tmp_path), "--seqlens", "32,64", "--models", "mamba1-tiny"]) == 0
    folder = tmp_path / "mamba1-tiny"
    assert {"profile.json", "profile.txt", "profile.csv"} <= {f.name for f in folder.iterdir()}
    doc = json.loads((folder / "profile.json").read_text())
    doc["environment"]["cpu"] = "the machine that measured"
    doc["fits"] = []  # derived: --report-only recomputes it
    (folder / "profile.json").write_text(json.dumps(doc))

    assert sweep.main(["--report-only", "--out", str(tmp_path), "--note", "re-rendered"]) == 0
    again = json.loads((folder / "profile.json").read_text())
    assert again["environment"]["cpu"] == "the machine that measured"
    assert again["fits"] and again["points"] == doc["points"]
    summary = (tmp_path / "summary.md").read_text()
    assert "the machine that measured" in summary and "note: re-rendered" in summary
    assert "## mamba1-tiny" in summary


def test_report_only_without_profiles_is_an_error(tmp_path, capsys):
    assert sweep.main(["--report-only", "--out", str(tmp_path)]) == 2
    assert "no <model>/profile.json under" in capsys.readouterr().err
