"""`metazoo tune`: a study finds the better value, prunes, resumes, is shared, writes a preset.

Tiny MAML trials on glyphs (3-way 1-shot, 20 meta-steps validated every 10): with
`algorithm.inner_lr` 1e-6 the inner loop cannot adapt, so validation stays at chance (1/3);
with 0.4 it is well above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.tune.study import open_storage, open_study, tune
from tests.conftest import REPO

TINY = ["data.name=glyphs", "algorithm.name=maml", "algorithm.inner_lr=1e-6", "model.hidden=16",
        "data.ways=3", "data.queries=3", "eval.ways=3", "eval.queries=3", "train.meta_steps=20",
        "train.meta_batch_size=4", "train.outer_lr=0.003", "eval.every=10",
        "eval.val_episodes=16", "train.progress=false", "train.tensorboard=false",
        "train.log_every=10"]
LR = "algorithm.inner_lr"


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A study of 2 trials, then the same command with --trials 4; the first study's trials."""
    root = tmp_path_factory.mktemp("tune")
    space = root / "space.yaml"
    space.write_text(f"{LR}: {{categorical: [1e-6, 0.4]}}\n")
    first = tune(None, None, TINY, space=space, trials=2, out=root / "out")
    before = first.get_trials()
    study = tune(None, None, TINY, space=space, trials=4, out=root / "out")
    return root / "out", before, study


def test_a_tune_finds_a_better_inner_lr_than_a_bad_start(resumed):
    out, _, study = resumed
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    bad = [t.value for t in complete if t.params[LR] == 1e-6]
    assert bad, "the starting value was tried"
    assert study.best_params == {LR: 0.4}
    assert study.best_value > max(bad) + 0.1 and study.best_value > 1 / 3 + 0.1
    cfg = load_config(config_file=out / "best.yaml")
    assert cfg.algorithm.config.inner_lr == 0.4 and cfg.data.name == "glyphs"


def test_running_again_resumes_to_n_trials_keeping_the_first(resumed):
    out, before, study = resumed
    after = study.trials
    assert len(after) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in after)
    for a, b in zip(before, after[:2], strict=True):
        assert (a.number, a.state, a.params, a.value, a.intermediate_values,
                a.datetime_complete) == (b.number, b.state, b.params, b.value,
                                         b.intermediate_values, b.datetime_complete)
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    rows = (out / "trials" / "0000" / "metrics.csv").read_text().splitlines()
    assert sum(",val," in r for r in rows) == 2  # trained once, not again
    assert not (out / "trials" / "0000" / "results.json").exists()  # never tested


def test_best_yaml_trains(resumed, capsys, tmp_path):
    out, _, _ = resumed
    assert main(["train", "--config", str(out / "best.yaml"), "--out", str(tmp_path / "run"),
                 "--set", "train.meta_steps=2", "eval.episodes=4"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["episodes"] == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["algorithm"][
        "inner_lr"] == 0.4


def test_the_pruner_stops_a_trial_in_a_planted_bad_region(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(f"{LR}: {{categorical: [1e-6, 0.4]}}\n")
    from metazoo.tune.space import read_space
    from metazoo.tune.study import base_config

    raw, cfg = base_config(None, None, TINY)
    (tmp_path / "out").mkdir()
    storage = open_storage(f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    study = open_study(storage, "out", cfg, read_space(space, raw), "median")
    for lr in (0.4, 0.4, 1e-6):  # two good trials first, then one at chance
        study.enqueue_trial({LR: lr})
    study = tune(None, None, TINY, space=space, trials=3, out=tmp_path / "out")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
    assert study.trials[2].last_step == 10  # stopped at its first validation, of 2
    rows = (tmp_path / "out" / "trials" / "0002" / "metrics.csv").read_text().splitlines()
    assert sum(",val," in r for r in rows) == 1


def test_two_processes_share_one_study_and_the_count_is_exact(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(f"{LR}: {{log_float: [0.01, 1]}}\n")
    argv = [sys.executable, "-m", "metazoo.cli", "tune", "--space", str(space), "--trials", "5",
            "--out", str(tmp_path / "out"), "--set", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    study = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path}/out/study.db")
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 5
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in counted)
    assert len({t.user_attrs["worker"] for t in counted}) == 2  # both took trials
    assert sorted(p.name for p in (tmp_path / "out" / "trials").iterdir()) == [
        f"{t.number:04d}" for t in counted]


def test_joining_needs_the_same_config_and_space_except_where_data_lives(tmp_path):
    from metazoo.errors import ConfigError
    from metazoo.tune.space import Param
    from metazoo.tune.study import base_config

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    _, cfg = base_config(None, None, TINY)
    space = [Param(LR, "categorical", choices=(1e-6, 0.4))]
    open_study(storage, "s", cfg, space, "median")
    _, moved = base_config(None, None, [*TINY, f"data.root={tmp_path}"])
    assert open_study(storage, "s", moved, space, "hyperband").user_attrs["metric"] == "accuracy"
    with pytest.raises(ConfigError, match=r"another space"):
        open_study(storage, "s", cfg, [Param(LR, "log_float", 0.01, 1.0)], "median")
    _, other = base_config(None, None, [*TINY, "train.meta_steps=30"])
    with pytest.raises(ConfigError, match=r"another config \(train.meta_steps\)"):
        open_study(storage, "s", other, space, "median")


def test_a_bad_storage_url_is_a_one_line_error(capsys, tmp_path):
    from tests.test_cli import _one_line_error

    space = tmp_path / "space.yaml"
    space.write_text(f"{LR}: {{log_float: [0.01, 1]}}\n")
    _one_line_error(capsys, ["tune", "--space", str(space), "--trials", "1", "--out",
                             str(tmp_path / "out"), "--storage", "nodb://x", "--set", *TINY],
                    "--storage 'nodb://x' cannot be opened")


def test_a_stopped_trial_runs_again_and_a_diverged_one_counts(tmp_path, monkeypatch):
    import signal

    from metazoo.engine.evaluate import EvalResult
    from metazoo.engine.stopping import Interrupted
    from metazoo.errors import TrainingError
    from metazoo.tune import objective as objective_module

    calls = []

    def fake_train(cfg, run_dir, *, test, on_validation):  # no training: the study's logic only
        assert test is False
        calls.append(run_dir.name)
        run_dir.mkdir(parents=True)
        if len(calls) == 2:
            raise Interrupted(signal.SIGTERM)
        if len(calls) == 3:
            raise TrainingError("training diverged at step 3")
        on_validation(10, EvalResult("accuracy", 0.5, 0.0, 1, 3, 1, 3, "val", 0.0))
        return {"best_val": 0.5}

    monkeypatch.setattr(objective_module, "train", fake_train)
    space = tmp_path / "space.yaml"
    space.write_text(f"{LR}: {{log_float: [0.01, 1]}}\n")
    with pytest.raises(Interrupted, match="SIGTERM: the running trial stopped and will run "
                                          "again; the study keeps 1 trials"):
        tune(None, None, TINY, space=space, trials=3, out=tmp_path / "out")
    study = tune(None, None, TINY, space=space, trials=3, out=tmp_path / "out")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert "error" not in study.trials[1].user_attrs  # stopped: not counted, run again
    assert study.trials[2].user_attrs["error"] == "training diverged at step 3"  # counted
    assert calls == ["0000", "0001", "0002", "0003"]
