"""Never lose or mix a model (issue #20): outputs checked before work, directories replaced whole under a lock,
interrupts (real signals to a subprocess at the dangerous moment) leave the target as it was."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from perfmamba.cli import main
from perfmamba.models import build_model, load_model, save_model
from perfmamba.outputs import OutputError, check_directory, check_file, locked, replacing_directory
from perfmamba.results import atomic_write_text, write_json

ROOT = Path(__file__).resolve().parents[1]
PRUNE = ["prune", "--ratio", "0.5", "--criterion", "A", "--quiet", "--no-heatmap"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_model(build_model("mamba1-tiny", seed=0), tmp_path_factory.mktemp("m") / "dense")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# A child of a background job (nohup, some CI runners) inherits SIGINT ignored, and Python then never turns it
# into KeyboardInterrupt; a user at a terminal has it. Give the child the terminal's default.
_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


def _run(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _TERMINAL + textwrap.dedent(script), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _signal_when(proc: subprocess.Popen, marker: str, signum: int) -> tuple[int, str]:
    for line in proc.stdout:  # the child says when it reached the dangerous moment
        if marker in line:
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


# --- 1, 4: --out that holds a model ------------------------------------------------------------------------------
def test_prune_refuses_an_out_that_holds_a_model_and_its_own_model_dir(model_dir, tmp_path, capsys):
    victim = save_model(build_model("mamba1-tiny", seed=1), tmp_path / "victim")
    atomic_write_text(victim / "training.json", "{}")
    before = _digest(victim)
    assert main([*PRUNE, "--model", str(model_dir), "--out", str(victim)]) == 2
    assert "not empty" in capsys.readouterr().err and _digest(victim) == before
    assert main([*PRUNE, "--model", str(model_dir), "--out", str(model_dir), "--force"]) == 2
    assert "is the model being pruned" in capsys.readouterr().err
    # --force replaces it whole: nothing of the old model (its training.json) survives.
    assert main([*PRUNE, "--model", str(model_dir), "--out", str(victim), "--force"]) == 0
    assert not (victim / "training.json").exists() and load_model(victim).config.d_state == 8


def test_train_refuses_an_out_that_holds_a_pruned_model(model_dir, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main([*PRUNE, "--model", str(model_dir), "--out", str(pruned)]) == 0
    before = _digest(pruned)
    assert main(["train", "--preset", "mamba1-tiny", "--steps", "1", "--out", str(pruned), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err and _digest(pruned) == before


# --- 2: an interrupted save --------------------------------------------------------------------------------------
SLOW_SAVE = """
    import sys, time
    import torch
    real = torch.save
    def save(obj, f, *a, **k):
        real(obj, f, *a, **k)
        print("SAVING", flush=True)
        time.sleep(120)
    torch.save = save
    from perfmamba.cli import main
    sys.exit(main(["prune", "--ratio", "0.5", "--criterion", "A", "--quiet", "--no-heatmap", "--force",
                   "--model", sys.argv[1], "--out", sys.argv[2]]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("existing", [True, False], ids=["over-a-model", "fresh-out"])
def test_a_signal_during_prunes_save_leaves_the_target_as_it_was(model_dir, tmp_path, signum, existing):
    target = tmp_path / "out"
    if existing:
        save_model(build_model("mamba1-tiny", seed=2), target)
    before = _digest(target) if existing else None
    rc, err = _signal_when(_run(SLOW_SAVE, str(model_dir), str(target)), "SAVING", signum)
    assert rc == 130, err
    assert (_digest(target) if target.exists() else None) == before
    assert _leftovers(tmp_path) == []  # no staging folder, no orphan weights
    if existing:
        assert load_model(target).config.d_state == 16


# --- 3: two writers ----------------------------------------------------------------------------------------------
def test_a_second_writer_of_one_out_fails_at_once(model_dir, tmp_path, capsys):
    target = tmp_path / "out"
    holder = _run("""
        import sys, time
        from perfmamba.outputs import locked
        with locked(sys.argv[1]):
            print("LOCKED", flush=True)
            time.sleep(120)
    """, str(target))
    try:
        assert "LOCKED" in holder.stdout.readline()
        assert main([*PRUNE, "--model", str(model_dir), "--out", str(target)]) == 2
        assert "another process is writing it" in capsys.readouterr().err
        assert not target.exists()
    finally:
        holder.kill()
        holder.wait()


# --- 5: Ctrl-C during train's final evaluation -------------------------------------------------------------------
SLOW_EVAL = """
    import importlib, sys, time
    train = importlib.import_module("perfmamba.eval.train")  # the package's `train` attribute is the function
    def slow(*a, **k):
        print("EVALUATING", flush=True)
        time.sleep(120)
    train.perplexity = slow
    import perfmamba.eval
    configured = perfmamba.eval.train_config
    perfmamba.eval.train_config = lambda *a, **k: configured(*a, **k, eval_tokens=512)  # as the test's own runs
    from perfmamba.cli import main
    sys.exit(main(["train", "--preset", "mamba1-tiny", "--steps", "3", "--batch-size", "2", "--seq-len", "32",
                   "--quiet", "--out", sys.argv[1]]))
"""


def test_ctrl_c_in_trains_final_evaluation_keeps_every_step_and_says_how_to_resume(tmp_path):
    from perfmamba.eval import train, train_config

    out = tmp_path / "run"
    rc, err = _signal_when(_run(SLOW_EVAL, str(out)), "EVALUATING", signal.SIGINT)
    assert rc == 130
    assert "saved 3 of 3 steps" in err and "rerun the same command to resume" in err and "Traceback" not in err
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 3
    config = train_config("mamba1-tiny", steps=3, batch_size=2, seq_len=32, eval_tokens=512)
    train(config, out, progress=False)  # resumes: evaluates and writes the checkpoint
    assert not (out / "train_state.pt").exists()
    # The checkpoint is exactly the 3 saved steps. (Resumed = uninterrupted is tests/eval/test_train.py's, in one
    # process: two processes' CPU training need not agree to the bit, so a reference trained here would not do.)
    got = load_model(out).state_dict()
    assert all(torch.equal(got[k], v) for k, v in state["model"].items())


# --- 7: unwritable outputs, before any work ----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    [*PRUNE, "--model", "mamba1-tiny", "--out", "{file}"],
    ["train", "--preset", "mamba1-tiny", "--out", "{file}/sub"],
    ["eval", "--model", "mamba1-tiny", "--out", "{dir}"],
    ["compare", "{dir}/a.json", "{dir}/b.json", "--markdown", "{dir}"],
])
def test_an_unwritable_out_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv):
    (tmp_path / "file").write_text("x")
    for side in ("a", "b"):  # compare's inputs are real: only its output is wrong
        write_json(tmp_path / f"{side}.json", {"benchmarks": [{"name": "op", "samples": [1.0, 1.1, 0.9],
                                                                "unit": "s"}]}, kind="benchmark")
    argv = [a.format(file=tmp_path / "file", dir=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("file" in err or "folder" in err)


def test_check_directory_and_check_file(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_directory(tmp_path / "f")
    with pytest.raises(OutputError, match="not empty"):
        check_directory(tmp_path / "full")
    assert check_directory(tmp_path / "full", force=True) == tmp_path / "full"
    assert check_directory(tmp_path / "full", reusable=lambda d: (d / "a").is_file())
    assert check_directory(tmp_path / "new" / "deeper")
    with pytest.raises(OutputError, match="is a folder"):
        check_file(tmp_path / "full")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_file(tmp_path / "f" / "x.json")


# --- the directory swap itself -----------------------------------------------------------------------------------
def test_replacing_directory_swaps_whole_or_not_at_all(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "stale").write_text("old")
    with pytest.raises(RuntimeError), replacing_directory(target, force=True) as staging:
        (staging / "new").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["stale"] and _leftovers(tmp_path) == []
    with replacing_directory(target, force=True) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"] and _leftovers(tmp_path) == []


def test_a_killed_writers_remains_are_recovered_under_the_lock(tmp_path):
    target = tmp_path / "t"
    aside = tmp_path / f".t.{12345}.old"  # killed between its two renames: the old content set aside
    aside.mkdir()
    (aside / "model").write_text("old")
    (tmp_path / ".t.staging-abc.tmp").mkdir()
    (tmp_path / ".t.x.staging-abc.tmp").mkdir()  # another target's staging: not ours to touch
    with pytest.raises(OutputError, match="not empty"), replacing_directory(target):
        pass
    assert (target / "model").read_text() == "old"
    assert _leftovers(tmp_path) == [".t.x.staging-abc.tmp"]


def test_the_lock_is_exclusive_and_released(tmp_path):
    with locked(tmp_path / "t"), pytest.raises(OutputError, match="another process"), locked(tmp_path / "t"):
        pass
    with locked(tmp_path / "t"):
        pass
    assert _leftovers(tmp_path) == []


# --- 9: modes ----------------------------------------------------------------------------------------------------
def test_written_files_get_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        folder = save_model(build_model("mamba1-tiny"), tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == dict.fromkeys(
        ("config.json", "perfmamba.json", "pytorch_model.bin"), 0o644)
    assert folder.stat().st_mode & 0o777 == 0o755
