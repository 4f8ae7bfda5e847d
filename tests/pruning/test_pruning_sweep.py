"""benchmarks/ssd_dstate_sweep.py runs on a CPU (reference ops) and writes a complete result file."""

import bench_scripts
import pytest
import torch

from perfmamba.results import read_json
from perfmamba.timing import subnormals_flushed


@pytest.fixture(autouse=True)
def process_settings_restored():
    """The script's main() configures its process (subnormals flushed); run in-process here, it must not leave
    that to the tests after it (hypothesis refuses to draw floats once subnormals are flushed)."""
    flushed, threads = subnormals_flushed(), torch.get_num_threads()
    yield
    torch.set_flush_denormal(flushed)
    torch.set_num_threads(threads)


def load_script():
    return bench_scripts.load_script("ssd_dstate_sweep")


def test_sweep_runs_on_cpu(tmp_path):
    sweep = load_script()
    out = tmp_path / "sweep.json"
    sweep.main(["--tiny", "--device", "cpu", "--rounds", "2", "--d-states", "16,12,8,6", "--out", str(out)])
    doc = read_json(out, kind="ssd_dstate_sweep")
    assert doc["config"]["d_states"] == [16, 12, 8, 6]
    for name in ("ssd_scan", "mixer", "step"):
        points = doc["results"][name]["points"]
        assert [p["d_state"] for p in points] == [16, 12, 8, 6]
        assert [p["legal"] for p in points] == [True, True, True, False]  # ngroups * 6 % 4 != 0
        assert all(len(p["samples_ms"]) == 2 and p["median_ms"] > 0 for p in points)  # the reference runs all
        assert doc["results"][name]["efficient"][0] == 16


def test_efficient_sizes():
    sweep = load_script()
    assert sweep.efficient({128: 1.45, 100: 1.34, 96: 1.63, 64: 1.07}, 0.03) == [128, 100, 64]
    assert sweep.efficient({128: 1.0, 96: 0.99}, 0.03) == [128]
    assert sweep.legal(100, 1) and not sweep.legal(102, 1) and sweep.legal(102, 2)
