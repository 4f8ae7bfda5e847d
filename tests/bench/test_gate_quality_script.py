"""benchmarks/gate_quality.py: its kernel-change variants run the same op again over the first p% of the time
steps (results unchanged), and its analysis reads a study's compact per-process medians."""

from __future__ import annotations

import json
import lzma

import bench_scripts
import pytest
import torch

gq = bench_scripts.load_script("gate_quality")


@pytest.mark.parametrize(("op", "axis", "shape"), [("selective_scan", -1, (2, 8, 200)),
                                                     ("ssd_scan", 1, (2, 200, 4, 8))])
def test_a_variant_reruns_its_op_over_the_first_percent_of_the_steps(op, axis, shape):
    calls = []

    def unchanged(*args, backend="auto", **kwargs):
        calls.append((args, kwargs))
        return args[0] * 2

    namespace = {"Tensor": torch.Tensor, op: unchanged}
    exec(gq.patch_text(op, 5), namespace)
    x, small = torch.randn(shape), torch.randn(4)
    out = namespace[op](x, small, z=torch.randn(shape), return_last_state=True, return_final_states=True)
    assert torch.equal(out, x * 2)  # the op's own result, untouched
    (first_args, first_kw), (extra_args, extra_kw) = calls
    assert first_args[0].shape == shape and first_kw["return_last_state"] is True
    assert extra_args[0].shape[axis] == 10 and extra_kw["z"].shape[axis] == 10  # 5% of 200 steps
    assert torch.equal(extra_args[1], small)  # not time-varying: passed whole
    assert "return_last_state" not in extra_kw and "return_final_states" not in extra_kw


@pytest.mark.parametrize(("op", "shape", "b_shape"), [("selective_scan", (2, 8, 200), (2, 4, 200)),
                                                      ("ssd_scan", (2, 200, 4, 8), (2, 200, 1, 4))])
def test_a_calibrated_variant_takes_its_extra_work_from_the_table_by_the_shape_of_B(op, shape, b_shape):
    calls = []

    def unchanged(*args, backend="auto", **kwargs):
        calls.append(args)
        return args[0]

    namespace = {"Tensor": torch.Tensor, op: unchanged}
    exec(gq.patch_text(op, 5, {str(b_shape): [32, 1]}), namespace)
    x, B = torch.randn(shape), torch.randn(b_shape)
    namespace[op](x, torch.randn(shape), torch.randn(4), B, B)
    axis = -1 if op == "selective_scan" else 1
    assert calls[1][0].shape[0] == 1 and calls[1][0].shape[axis] == 32 and calls[1][3].shape[axis] == 32
    other = torch.randn(b_shape[0], 400, *b_shape[2:]) if axis == 1 else torch.randn(2, 4, 400)
    x2 = torch.randn(2, 400, 4, 8) if axis == 1 else torch.randn(2, 8, 400)
    namespace[op](x2, x2, torch.randn(4), other, other)  # a shape not in the table: 5% of the steps, every batch
    assert calls[3][0].shape[0] == 2 and calls[3][0].shape[axis] == 20


def test_calibration_picks_the_extra_work_nearest_each_target(tmp_path):
    out = tmp_path / "calibration.json"
    assert gq.main(["calibrate", "--grid", "quick", "--to", str(out), "--rounds", "1", "--targets", "5,200"]) == 0
    payload = json.loads(out.read_text())
    for entry in payload["measured"]:
        shares = {(s, b): v for s, b, v in entry["shares"]}
        for target in ("5.0", "200.0"):
            chosen = tuple(payload["extra"][target][entry["op"]][entry["key"]])
            assert abs(shares[chosen] - float(target) / 100) == min(abs(v - float(target) / 100)
                                                                    for v in shares.values())


def test_analysis_of_a_compact_study_counts_gate_runs(tmp_path):
    names = ["bench::case[a]", "bench::case[b]"]
    processes, medians = [], {}
    for tree, factor in (("base", 1.0), ("base2", 1.0), ("scan5pct", 1.2)):
        for r in range(1, 4):
            f = f"{tree}-{r}.json"
            processes.append({"tree": tree, "round": r, "rc": 0, "seconds": 1.0, "results": f})
            medians[f] = [1e-3 * (1 + 0.001 * r), 2e-3 * factor * (1 - 0.001 * r)]
    meta = {"grid": "gpu", "trees": {"base": {}, "base2": {}, "scan5pct": {}}, "variants": {"scan+5%": {}},
            "processes": processes, "names": names, "units": ["s", "s"], "clocks": ["cuda_graph"] * 2,
            "medians": medians}
    study = tmp_path / "study.json.xz"
    study.write_bytes(lzma.compress(json.dumps(meta).encode()))
    assert gq.main(["analyse", "--out", str(study), "--summary", str(tmp_path / "s.json"),
                    "--markdown", str(tmp_path / "s.md")]) == 0
    # Detection by measured slowdown: the 20% case falls in the top bin, flagged in its one gate run.
    assert "| 9.0% and more | 1 | 1 | 1 (100%) |" in (tmp_path / "s.md").read_text()
    counts = json.loads((tmp_path / "s.json").read_text())["studies"][str(study)]["comparisons"]
    assert counts["A/A"]["holm"]["gate_runs"] == 1 and counts["A/A"]["holm"]["exit_1"] == 0
    assert counts["scan+5%"]["holm"]["exit_1"] == 1
    assert counts["scan+5%"]["injected"]["bench::case[b]"] == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("command", ["run", "calibrate", "analyse", "compact"])
def test_every_command_prints_its_help(command, capsys):
    """argparse %-formats help text, and a variant's name ends in "%": unescaped, `run --help` raised."""
    with pytest.raises(SystemExit) as e:
        gq.main([command, "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
