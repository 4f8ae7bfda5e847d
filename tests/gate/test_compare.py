"""The comparison around the statistics: thresholds per pattern, missing and renamed benchmarks, fallbacks for
data without raw samples, exit codes, and the markdown / text / JSON reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gate_synthetic import draw, measurement

from perfmamba import cli
from perfmamba.gate import Comparison, GateConfig, compare, compare_files
from perfmamba.gate.compare import judge, rename_hints
from perfmamba.gate.config import load_thresholds_file
from perfmamba.gate.measurement import Measurement
from perfmamba.gate.render import nothing_compared, to_markdown, to_text
from perfmamba.results import ResultsFileError, write_json


def _pair(name: str, factor: float, n: int = 30, noise: float = 0.002, seed: int = 0, **kw):
    rng = np.random.default_rng(seed)
    return measurement(name, draw(rng, n, noise, "lognormal"), **kw), \
        measurement(name, draw(rng, n, noise, "lognormal", factor), **kw)


def _suite() -> tuple[dict[str, Measurement], dict[str, Measurement]]:
    base, new = {}, {}
    for i, (name, factor) in enumerate([("op/scan[L2048]", 1.10), ("op/conv", 1.0), ("model/fwd", 0.90),
                                        ("model/decode", 1.01)]):
        base[name], new[name] = _pair(name, factor, seed=i)
    base["op/old_name[L4096]"], _ = _pair("op/old_name[L4096]", 1.0, seed=9)
    _, new["op/new_name[L4096]"] = _pair("op/new_name[L4096]", 1.0, seed=9)
    _, new["op/brand_new"] = _pair("op/brand_new", 1.0, seed=10)
    return base, new


def test_verdicts_missing_renamed_and_exit_code():
    base, new = _suite()
    c = compare(base, new)
    verdicts = {r.name: r.verdict for r in c.rows}
    assert verdicts == {"op/scan[L2048]": "regressed", "op/conv": "unchanged", "model/fwd": "improved",
                        "model/decode": "unchanged"}
    assert [r.name for r in c.rows][:2] == ["op/scan[L2048]", "model/fwd"]  # regressions first
    assert c.missing == ("op/old_name[L4096]",)
    assert c.added == ("op/brand_new", "op/new_name[L4096]")
    assert c.renamed == {"op/old_name[L4096]": "op/new_name[L4096]"}
    assert c.counts == {"regressed": 1, "improved": 1, "unchanged": 2, "inconclusive": 0, "not assessed": 0,
                        "missing": 1, "added": 2, "skipped": 0}
    assert c.exit_code() == 1
    # no regression: 0, unless missing benchmarks should fail
    del base["op/scan[L2048]"], new["op/scan[L2048]"]
    c = compare(base, new)
    assert c.exit_code() == 0 and c.exit_code(fail_on_missing=True) == 1
    del base["op/old_name[L4096]"]
    assert compare(base, new).exit_code(fail_on_missing=True) == 0  # only additions: nothing is missing


def test_thresholds_first_matching_pattern_wins():
    config = GateConfig(default_threshold=0.02, thresholds={"op/scan*": 0.2, "op/*": 0.005, "model/*": 0.03})
    assert config.threshold_for("op/scan[L2048]") == 0.2
    assert config.threshold_for("op/conv") == 0.005
    assert config.threshold_for("model/fwd") == 0.03
    assert config.threshold_for("other") == 0.02
    base, new = _suite()
    c = compare(base, new, config)
    row = {r.name: r for r in c.rows}["op/scan[L2048]"]
    assert (row.threshold, row.verdict) == (0.2, "unchanged")  # a 10% slowdown within a 20% tolerance
    assert c.exit_code() == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"default_threshold": -0.01}, r"default_threshold must be in \[0, 10\) .*got -0.01"),
    ({"thresholds": {"op/*": "5%"}}, r"threshold for 'op/\*' must be a finite number, got '5%'"),
    ({"alpha": 0.7}, r"alpha must be in \(0, 0.5\), got 0.7"),
    ({"correction": "bonferoni"}, r"correction must be one of \('holm', 'none'\), got 'bonferoni'"),
    ({"higher_is_better": "tok*"}, "must be a sequence of patterns"),
    ({"resamples": 10}, "resamples must be >= 100, got 10"),
])
def test_config_errors_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateConfig(**kwargs)


def test_unit_change_is_listed_not_compared():
    base, new = _pair("mem", 1.0)
    new = Measurement(**{**new.__dict__, "unit": "bytes"})
    c = compare({"mem": base}, {"mem": new})
    assert c.rows == () and c.skipped == (("mem", "unit changed from 's' to 'bytes'"),)
    # the only common benchmark is not comparable: nothing was judged, which is not a regression either
    assert c.exit_code() == 2 and c.exit_code(fail_on_missing=True) == 2
    assert to_text(c).splitlines()[-1] == ("nothing compared: 0 of 1 benchmarks in both BASE and NEW could be "
                                           "judged: 1 not comparable (mem: unit changed from 's' to 'bytes')")


def test_higher_is_better_by_pattern():
    base, new = _pair("tps", 0.9, unit="tok")  # unit without a direction: lower is better by default
    assert judge(base, new, 0.02, GateConfig()).verdict == "improved"
    assert judge(base, new, 0.02, GateConfig(higher_is_better=("tp*",))).verdict == "regressed"


def test_few_samples_fall_back_to_separation():
    base = measurement("x", np.array([1.00, 1.01, 1.02]))
    slower = measurement("x", np.array([1.20, 1.21, 1.25]))
    overlapping = measurement("x", np.array([1.00, 1.15, 1.30]))
    f = judge(base, slower, 0.02, GateConfig())
    assert (f.verdict, f.method) == ("regressed", "separation")
    assert f.ci == pytest.approx((1.20 / 1.02, 1.25 / 1.00))
    assert "3 + 3 samples cannot reach p < 0.01" in f.note
    # the range of ratios reaches past both edges of the tolerance band: the data cannot tell
    assert judge(base, overlapping, 0.02, GateConfig()).verdict == "inconclusive"


def test_single_values_exact_for_bytes_not_assessed_for_time():
    one = {"unit": "bytes", "rounds": 1}
    b = Measurement(name="m", median=1000.0, samples=(1000.0,), **one)
    n = Measurement(name="m", median=1030.0, samples=(1030.0,), **one)
    f = judge(b, n, 0.02, GateConfig())
    assert (f.verdict, f.method) == ("regressed", "exact")
    assert judge(b, n, 0.05, GateConfig()).verdict == "unchanged"
    t_b = Measurement(name="t", unit="s", median=1.0, samples=(1.0,))
    t_n = Measurement(name="t", unit="s", median=2.0, samples=(2.0,))
    f = judge(t_b, t_n, 0.02, GateConfig())
    assert (f.verdict, f.method) == ("not assessed", "none")
    c = compare({"t": t_b}, {"t": t_n})
    assert c.exit_code() == 2 and c.counts["not assessed"] == 1  # the only row was not judged


def test_summary_statistics_without_samples():
    # pytest-benchmark saved without data: median, quartiles, rounds
    b = Measurement(name="s", unit="s", median=1.00e-3, q1=0.99e-3, q3=1.01e-3, rounds=100)
    slow = Measurement(name="s", unit="s", median=1.10e-3, q1=1.09e-3, q3=1.11e-3, rounds=100)
    same = Measurement(name="s", unit="s", median=1.005e-3, q1=0.99e-3, q3=1.02e-3, rounds=100)
    f = judge(b, slow, 0.02, GateConfig())
    assert (f.verdict, f.method) == ("regressed", "summary")
    assert f.ci[0] < 1.10 < f.ci[1] and f.ci[0] > 1.02
    assert "no raw samples" in f.note and "quartiles" in f.note
    assert judge(b, same, 0.02, GateConfig()).verdict == "unchanged"
    # asv without samples and too few repeats: an unbounded interval is never a regression
    asv_b = Measurement(name="a", unit="s", median=1.0, interval=(-np.inf, np.inf), interval_confidence=0.99)
    asv_n = Measurement(name="a", unit="s", median=3.0, interval=(-np.inf, np.inf), interval_confidence=0.99)
    f = judge(asv_b, asv_n, 0.02, GateConfig())
    assert f.verdict == "inconclusive" and f.ci == (0.0, np.inf)
    # samples on one side, summary on the other
    rng = np.random.default_rng(0)
    with_samples = measurement("s", draw(rng, 50, 0.005, "lognormal", factor=1.2, scale=1e-3))
    f = judge(b, with_samples, 0.02, GateConfig())
    assert (f.verdict, f.method) == ("regressed", "summary")


def test_holm_demotes_a_marginal_finding_and_says_so():
    rng = np.random.default_rng(11)
    base, new = {}, {}
    for i in range(60):  # one marginal slowdown among 59 unchanged benchmarks
        factor = 1.0 + (0.006 if i == 0 else 0.0)
        base[f"b{i}"] = measurement(f"b{i}", draw(rng, 12, 0.004, "lognormal"))
        new[f"b{i}"] = measurement(f"b{i}", draw(rng, 12, 0.004, "lognormal", factor))
    alone = compare({"b0": base["b0"]}, {"b0": new["b0"]}, GateConfig(default_threshold=0.0))
    assert alone.rows[0].verdict == "regressed"
    family = compare(base, new, GateConfig(default_threshold=0.0))
    row = {r.name: r for r in family.rows}["b0"]
    assert row.verdict == "inconclusive"
    assert "not significant after Holm over 60 tests" in row.note
    assert row.p_value < 0.01 <= row.p_adjusted
    assert compare(base, new, GateConfig(default_threshold=0.0, correction="none")).exit_code() == 1


def test_markdown_report():
    base, new = _suite()
    md = to_markdown(compare(base, new, base_label="main.json", new_label="pr.json"))
    assert md.startswith("### perfmamba compare: 1 regressed, 1 improved, 2 unchanged, 1 missing in NEW, "
                         "2 only in NEW")
    assert "**BASE** `main.json` → **NEW** `pr.json`" in md
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("|  | benchmark"))
    assert header.split(" | ")[1:9] == ["benchmark", "BASE", "NEW", "change", "99% interval", "threshold",
                                        "p (Holm)", "n"]
    regressed = next(line for line in lines if "op/scan[L2048]" in line)
    assert regressed.startswith("| 🔴 | `op/scan[L2048]` |") and "**regressed**" in regressed
    assert "| ±2% |" in regressed and "| 30/30 |" in regressed
    change = regressed.split(" | ")[4]
    assert change.startswith("+") and 9.0 < float(change.rstrip("%")) < 11.0
    assert "<details><summary>2 unchanged, inconclusive or not assessed</summary>" in md
    assert "- `op/old_name[L4096]` (renamed to `op/new_name[L4096]`?)" in md
    assert "**Only in NEW (2)**" in md
    assert "Holm-adjusted over 4 tested" in md


def test_markdown_escapes_pipes_and_caps_rows():
    base, new = {}, {}
    for i in range(30):
        name = f"bench|{i:02d}"
        base[name], new[name] = _pair(name, 1.0, n=10, seed=i)
    md = to_markdown(compare(base, new), max_rows=5)
    assert "`bench\\|" in md and "`bench|" not in md and "… and 25 more" in md
    assert "No benchmark changed beyond its threshold." in md


def test_text_and_json_reports():
    base, new = _suite()
    c = compare(base, new)
    text = to_text(c)
    assert text.splitlines()[0] == "perfmamba compare: 1 regressed, 1 improved, 2 unchanged, 1 missing in NEW, " \
                                   "2 only in NEW"
    assert any(line.startswith("regressed  op/scan[L2048]") for line in text.splitlines())
    assert "op/old_name[L4096]  (renamed to op/new_name[L4096]?)" in text
    doc = json.loads(c.to_json())
    assert doc["counts"]["regressed"] == 1
    row = next(r for r in doc["rows"] if r["name"] == "op/scan[L2048]")
    assert row["verdict"] == "regressed" and row["ci_low"] > 1.02 and row["n_base"] == 30
    assert doc["config"]["default_threshold"] == 0.02


def test_json_has_no_infinities(tmp_path):
    b = Measurement(name="a", unit="s", median=1.0, interval=(-np.inf, np.inf), interval_confidence=0.99)
    c = compare({"a": b}, {"a": b})
    doc = json.loads(c.to_json())  # strict JSON: allow_nan=False in to_json would raise otherwise
    assert doc["rows"][0]["ci_high"] is None
    path = write_json(tmp_path / "cmp.json", c.payload(), kind="comparison")
    assert "Infinity" not in path.read_text()


def test_compare_files_and_thresholds_file(tmp_path):
    rng = np.random.default_rng(0)

    def bench(path, factor):
        write_json(path, {"benchmarks": [
            {"name": "op/scan", "samples": list(draw(rng, 30, 0.001, "lognormal", factor)), "unit": "s"},
            {"name": "model/tok_s", "samples": list(1 / draw(rng, 30, 0.001, "lognormal", factor)),
             "unit": "tokens/s"},
        ]}, kind="benchmark")

    bench(tmp_path / "base.json", 1.0)
    bench(tmp_path / "new.json", 1.04)
    c = compare_files(tmp_path / "base.json", tmp_path / "new.json")
    assert isinstance(c, Comparison)
    assert {r.name: r.verdict for r in c.rows} == {"op/scan": "regressed", "model/tok_s": "regressed"}
    (tmp_path / "t.json").write_text(json.dumps({"thresholds": {"op/*": 0.10}}))
    (tmp_path / "t.toml").write_text('[gate.thresholds]\n"model/*" = 0.10\n')
    assert load_thresholds_file(tmp_path / "t.toml") == {"model/*": 0.10}
    c = compare_files(tmp_path / "base.json", tmp_path / "new.json", thresholds=tmp_path / "t.json")
    assert {r.name: r.verdict for r in c.rows} == {"op/scan": "unchanged", "model/tok_s": "regressed"}
    (tmp_path / "bad.json").write_text(json.dumps({"op/*": -1}))
    with pytest.raises(ResultsFileError, match=r"bad\.json: threshold for 'op/\*' must be in \[0, 10\)"):
        load_thresholds_file(tmp_path / "bad.json")
    (tmp_path / "broken.toml").write_text("[gate\n")
    with pytest.raises(ResultsFileError, match=r"broken\.toml: corrupt thresholds file"):
        load_thresholds_file(tmp_path / "broken.toml")


def test_few_rounds_in_a_large_family_are_judged_by_separation_not_lost_to_holm():
    """With 5 rounds a side the rank test's smallest two-sided p is 0.0079: below alpha = 0.01 alone, but never
    after Holm over 5 benchmarks. Such rows go to the separation rule, so a 2x slowdown of each is still caught."""
    rng = np.random.default_rng(0)
    base = {f"b{i}": measurement(f"b{i}", draw(rng, 5, 0.01, "lognormal")) for i in range(5)}
    new = {f"b{i}": measurement(f"b{i}", draw(rng, 5, 0.01, "lognormal", 2.0)) for i in range(5)}
    c = compare(base, new)
    assert {r.verdict for r in c.rows} == {"regressed"} and {r.method for r in c.rows} == {"separation"}
    assert "after Holm over 5 tests" in c.rows[0].note and c.exit_code() == 1
    alone = compare({"b0": base["b0"]}, {"b0": new["b0"]})
    assert alone.rows[0].method == "bootstrap+rank" and alone.rows[0].verdict == "regressed"


def test_a_value_of_zero_is_listed_not_divided_by():
    base = {"track": Measurement(name="track", unit="x", median=0.0), "ok": measurement("ok", np.ones(5) * 1e-3)}
    new = {"track": Measurement(name="track", unit="x", median=1.0), "ok": measurement("ok", np.ones(5) * 1e-3)}
    c = compare(base, new)
    assert [r.name for r in c.rows] == ["ok"]
    assert c.skipped == (("track", "a value <= 0 (BASE 0, NEW 1): no ratio to judge"),)


def _write(path, benchmarks: dict[str, list[float]]):
    write_json(path, {"benchmarks": [{"name": k, "samples": v, "unit": "s"} for k, v in benchmarks.items()]},
               kind="benchmark")
    return str(path)


def test_disjoint_names_judge_nothing_and_exit_2(tmp_path):
    rng = np.random.default_rng(0)
    base = _write(tmp_path / "a.json", {f"old{i}": list(draw(rng, 10, 0.01, "lognormal")) for i in range(3)})
    new = _write(tmp_path / "b.json", {f"new_{i}x": list(draw(rng, 10, 0.01, "lognormal")) for i in range(2)})
    c = compare_files(base, new)
    assert c.rows == () and len(c.missing) == 3 and len(c.added) == 2
    assert c.exit_code() == 2 and c.exit_code(fail_on_missing=True) == 2
    line = f"nothing compared: no benchmark name is in both BASE ({base}: 3) and NEW ({new}: 2)"
    assert nothing_compared(c) == line and to_text(c).splitlines()[-1] == line
    assert f"**{line}**" in to_markdown(c)


def test_one_sample_per_side_judges_nothing_and_exit_2():
    base = {f"t{i}": Measurement(name=f"t{i}", unit="s", median=1.0, samples=(1.0,)) for i in range(3)}
    new = {f"t{i}": Measurement(name=f"t{i}", unit="s", median=9.0, samples=(9.0,)) for i in range(3)}
    c = compare(base, new, base_label="a.json", new_label="b.json")
    assert c.counts["not assessed"] == 3 and c.exit_code() == 2
    assert to_text(c).splitlines()[-1] == ("nothing compared: 0 of 3 benchmarks in both BASE (a.json) and NEW "
                                           "(b.json) could be judged: 3 not assessed (one timing per side: its "
                                           "noise is unknown)")
    # one benchmark that can be judged beside them: the comparison showed something, and it passes
    base["ok"], new["ok"] = _pair("ok", 1.0)
    c = compare(base, new)
    assert c.exit_code() == 0 and nothing_compared(c) is None
    assert "nothing compared" not in to_text(c) + to_markdown(c)


@pytest.mark.parametrize(("base_names", "new_names", "message"), [
    ((), (), "no benchmark in BASE ({base}) or NEW ({new})"),
    (("x",), (), "no benchmark in NEW ({new})"),
    ((), ("x",), "no benchmark in BASE ({base})"),
])
def test_an_empty_benchmark_list_judges_nothing_and_exits_2(tmp_path, capsys, base_names, new_names, message):
    rng = np.random.default_rng(0)
    base = _write(tmp_path / "a.json", {n: list(draw(rng, 10, 0.01, "lognormal")) for n in base_names})
    new = _write(tmp_path / "b.json", {n: list(draw(rng, 10, 0.01, "lognormal")) for n in new_names})
    # through the CLI, which passes exit_code on unchanged
    assert cli.main(["compare", base, new]) == 2
    assert cli.main(["compare", base, new, "--fail-on-missing"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "nothing compared: " + message.format(base=base, new=new)


def test_rename_hints_pair_each_name_at_most_once():
    assert rename_hints(["test_a", "test_b"], ["test_d"]) == {"test_a": "test_d"}
    # the most similar pair first, even where the other missing name sorts first
    assert rename_hints(["op/scan_L1", "op/scan_L12"], ["op/scan_L123"]) == {"op/scan_L12": "op/scan_L123"}
    old, new = ["m/mamba1/decode-v1", "m/mamba2/decode-v1"], ["m/mamba1/decode-v2", "m/mamba2/decode-v2"]
    assert rename_hints(old, new) == dict(zip(old, new))
    base, new = _pair("test_a", 1.0)
    c = compare({"test_a": base, "test_b": base, "keep": base}, {"test_d": new, "keep": new})
    assert c.renamed == {"test_a": "test_d"}
    assert to_text(c).count("(renamed to test_d?)") == 1
