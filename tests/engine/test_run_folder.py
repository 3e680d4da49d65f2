"""The run folder as a unit (issue #23, findings 3, 4 and 6): a resume continues the run that is in
the folder, one writer at a time, a failed start leaves nothing, interrupts say the truth and the
metrics of a resumed run equal those of a run never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metazoo import batching
from metazoo.cli import main
from metazoo.engine import checkpoint, lock
from metazoo.engine.log import read

FAST = ["data.name=synthetic", "model.hidden=8", "train.progress=false", "train.meta_steps=4",
        "train.tensorboard=false", "eval.every=2", "eval.val_episodes=4", "eval.episodes=10",
        "eval.queries=3", "data.queries=3"]
GLYPHS = ["data.ways=5", "eval.episodes=10", "eval.every=0", "train.progress=false",
          "train.tensorboard=false", "model.hidden=16"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("metazoo: error:"), err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _metazoo(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metazoo.cli", *args], env=env,
                            stderr=subprocess.PIPE, text=True, **kwargs)


# Finding 3: --resume continues the run in the folder.

def test_resume_takes_the_config_from_the_folder_and_never_rewrites_it(tmp_path, capsys,
                                                                        synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    config = (run / "config.json").read_bytes()
    assert main(["train", "--out", str(run), "--resume"]) == 0  # not the defaults' 500 steps
    assert (run / "config.json").read_bytes() == config
    assert checkpoint.read_meta(run / "checkpoint.safetensors")["step"] == 4
    assert json.loads((run / "results.json").read_text())["episodes"] == 10
    assert not (run / "resumes.json").exists()  # nothing changed

    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--set", "train.meta_steps=6",
                 "eval.episodes=12"]) == 0
    assert (run / "config.json").read_bytes() == config
    meta = checkpoint.read_meta(run / "checkpoint.safetensors")
    assert meta["step"] == 6 and meta["config"]["train"]["meta_steps"] == 6
    [entry] = json.loads((run / "resumes.json").read_text())
    assert entry["from_step"] == 4 and entry["changes"] == {
        "eval.episodes": [10, 12], "train.meta_steps": [4, 6]}
    # the run now goes to step 6 with 12 test episodes, without --set
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert json.loads((run / "results.json").read_text())["episodes"] == 12
    assert len(json.loads((run / "resumes.json").read_text())) == 1


@pytest.mark.parametrize(("argv", "match"), [
    (["--set", "train.outer_lr=0.5"], "not 'train.outer_lr'"),
    (["--set", "data.ways=3"], "not 'data.ways'"),
    (["--set", "seed=1"], "not 'seed'"),
    (["--set", "train.meta_steps=2"], "below the checkpoint's step 4"),
    (["--preset", "maml-sinusoid"], "drop --preset"),
    (["--config", "x.yaml"], "drop --config"),
])
def test_resume_refuses_settings_that_would_change_the_run(tmp_path, capsys, synthetic_data,
                                                            argv, match):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert match in _error(capsys, ["train", "--out", str(run), "--resume", *argv])
    assert _snapshot(run) == before


def test_a_hand_edited_config_is_refused_on_resume(tmp_path, capsys, synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["seed"], cfg["data"]["ways"] = 7, 3
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    capsys.readouterr()
    err = _error(capsys, ["train", "--out", str(run), "--resume"])
    assert "edited" in err and "seed: 0 -> 7" in err and "data.ways: 20 -> 3" in err


def test_the_engine_refuses_a_changed_config_too(tmp_path, synthetic_data):
    from metazoo.config_files import load_config
    from metazoo.engine.train import train
    from metazoo.errors import ConfigError

    train(load_config(overrides=FAST), tmp_path)
    with pytest.raises(ConfigError, match=r"not train.outer_lr: 0.001 -> 0.5"):
        train(load_config(overrides=[*FAST, "train.outer_lr=0.5"]), tmp_path, resume=True)


# Finding 4: one writer per run folder.

def test_a_second_train_into_a_busy_folder_is_refused_and_the_first_completes(tmp_path):
    run = tmp_path / "run"
    first = _metazoo("train", "--out", str(run), "--set", *GLYPHS, "train.meta_steps=400",
                     "train.log_every=10", stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / ".lock").exists() or not (run / ".lock").read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.05)
    second = _metazoo("train", "--out", str(run), "--set", *GLYPHS, "seed=1",
                      stdout=subprocess.DEVNULL)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert first.poll() is None, "the first run ended before the second was refused: too fast"
    assert len(err.strip().splitlines()) == 1 and f"pid {first.pid}" in err
    assert "metazoo train" in err and "started" in err
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    rows = read(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(10, 401, 10))
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    assert (run / "results.json").exists() and not (run / ".lock").exists()


def test_busy_folders_are_refused_by_train_and_eval_in_one_line(tmp_path, capsys,
                                                                 synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    held = lock.RunLock(run)
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from metazoo.engine.lock import RunLock\n"
        f"RunLock(Path({str(run)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        capsys.readouterr()
        err = _error(capsys, ["train", "--out", str(run), "--resume"])
        assert f"pid {child.pid}" in err and "in use" in err
        err = _error(capsys, ["eval", str(run), "--episodes", "4"])
        assert f"pid {child.pid}" in err and "being trained" in err
    finally:
        child.kill()  # kill -9: the OS drops the lock, no stale lock is left
        child.communicate()
    held.acquire()
    held.release()
    assert not (run / ".lock").exists()
    assert main(["eval", str(run), "--episodes", "4"]) == 0


def test_without_fcntl_a_dead_holders_lock_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "fcntl", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps(
        {"pid": dead.pid, "host": lock.socket.gethostname(), "command": "train"}))
    mine = lock.RunLock(tmp_path)
    mine.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    with pytest.raises(lock.RunFolderBusy, match=f"pid {os.getpid()}"):
        lock.RunLock(tmp_path).acquire()
    mine.release()
    assert not (tmp_path / ".lock").exists()


# Finding 6: failed starts, interrupts, metrics after a resume, closed pipes.

@pytest.mark.parametrize(("exists", "extra"), [
    (False, ["algorithm.name=maml", "data.ways=5", "eval.ways=3"]),  # a config the model refuses
    (True, ["data.name=omniglot", "data.root={tmp}"]),  # no data files
])
def test_a_failed_start_leaves_the_folder_as_it_was(tmp_path, capsys, synthetic_data, exists,
                                                    extra):
    out = tmp_path / "a" / "b"
    if exists:
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("mine")
    extra = [e.format(tmp=tmp_path) for e in extra]
    _error(capsys, ["train", "--out", str(out), "--set", *FAST, *extra])
    if exists:
        assert _snapshot(out) == {"notes.txt": b"mine"} and not (out / ".lock").exists()
    else:
        assert not (tmp_path / "a").exists()


def test_a_resume_removes_what_writes_cut_short_by_a_kill_left(tmp_path, synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    debris = [".tmpAb12Cd", ".checkpoint.safetensors.k2j4.tmp", ".results.json.x9.tmp"]
    for name in debris:
        (run / name).write_bytes(b"\0" * 64)
    (run / "notes.tmp").write_text("mine")
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert not any((run / name).exists() for name in debris) and (run / "notes.tmp").exists()


def _interrupt_at(monkeypatch, call: int, how: str) -> None:
    """Make the `call`-th meta-step (0-based) raise KeyboardInterrupt or send SIGINT to us."""
    real, calls = batching.meta_backward, [0]

    def hooked(alg, batch, *args, **kwargs):
        calls[0] += 1
        if calls[0] == call + 1:
            if how == "raise":
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)  # stops after this step
        return real(alg, batch, *args, **kwargs)

    monkeypatch.setattr(batching, "meta_backward", hooked)


def _rows(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "episodes_per_s")}
            for r in read(run / "metrics.csv")]


@pytest.mark.parametrize(("how", "at", "saved"), [("raise", 7, 5), ("signal", 6, 7)])
def test_metrics_weights_and_results_after_a_resume_equal_an_uninterrupted_run(
        tmp_path, capsys, monkeypatch, synthetic_data, how, at, saved):
    argv = ["--set", *FAST, "train.meta_steps=12", "train.log_every=3",
            "train.checkpoint_every=5", "eval.every=4", "train.meta_batch_size=2"]
    assert main(["train", "--out", str(tmp_path / "full"), *argv]) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, at, how)
        assert main(["train", "--out", str(tmp_path / "cut"), *argv]) == 130
    err = capsys.readouterr().err
    assert f"step {saved}" in err and "--resume" in err, err
    assert checkpoint.read_meta(tmp_path / "cut" / "checkpoint.safetensors")["step"] == saved
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
    for name in ("checkpoint.safetensors", "best.safetensors"):
        a, _ = checkpoint.load(tmp_path / "full" / name)
        b, _ = checkpoint.load(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("full", "cut")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in results] == [
        {k: v for k, v in results[0].items() if k != "seconds"}] * 2


def test_an_interrupt_before_the_first_checkpoint_says_there_is_none(tmp_path, capsys,
                                                                     monkeypatch, synthetic_data):
    _interrupt_at(monkeypatch, 2, "raise")
    assert main(["train", "--out", str(tmp_path), "--set", *FAST, "train.meta_steps=50",
                 "eval.every=0", "train.checkpoint_every=100"]) == 130
    err = capsys.readouterr().err.strip()
    assert "before the first checkpoint" in err and "nothing to resume" in err
    assert "intact" not in err and not (tmp_path / "checkpoint.safetensors").exists()


def test_sigterm_stops_with_a_message_and_a_resumable_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _metazoo("train", "--out", str(run), "--set", *GLYPHS, "train.meta_steps=100000",
                    "train.log_every=1", "train.checkpoint_every=1000",
                    stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() or len(read(run / "metrics.csv")) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 143), (proc.returncode, err)
    assert "SIGTERM" in err and "checkpoint saved" in err, err
    step = checkpoint.read_meta(run / "checkpoint.safetensors")["step"]
    assert step >= 3
    again = _metazoo("train", "--out", str(run), "--resume", "--set",
                     f"train.meta_steps={step + 2}", stdout=subprocess.DEVNULL)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert checkpoint.read_meta(run / "checkpoint.safetensors")["step"] == step + 2


def test_a_closed_stdout_is_no_traceback(tmp_path):
    proc = _metazoo("train", "--out", str(tmp_path / "run"), "--set", *GLYPHS,
                    "train.meta_steps=3", stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "run" / "results.json").exists()
