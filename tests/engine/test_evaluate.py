"""`metazoo eval` from the Python API (`evaluate_run`), and what a run loads."""

import json
from collections import Counter
from dataclasses import replace

import pytest

from metazoo.config_files import load_config
from metazoo.data import DATASETS, DatasetSpec
from metazoo.engine.evaluate import evaluate, evaluate_run, results_name
from metazoo.engine.run import load_run, task_source
from metazoo.engine.train import train
from metazoo.errors import ConfigError
from tests.conftest import make_dataset

FAST = ["model.hidden=8", "train.progress=false", "train.meta_steps=4", "train.tensorboard=false",
        "eval.every=2", "eval.val_episodes=4", "eval.episodes=10", "eval.queries=3",
        "data.queries=3"]


def test_evaluate_run_overrides_eval_settings_and_writes_the_results(tmp_path, synthetic_data):
    run = tmp_path / "run"
    train(load_config(overrides=[f"data.name={synthetic_data}", *FAST]), run)
    trained = (run / "results.json").read_text()
    result, path = evaluate_run(run, episodes=7, ways=3, shots=2, split="val")
    assert path == run / "results.split=val,ways=3,shots=2,episodes=7.json"
    assert (run / "results.json").read_text() == trained  # the training run's result is kept
    assert (result.episodes, result.ways, result.shots, result.queries, result.split) == (
        7, 3, 2, 3, "val")
    written = json.loads(path.read_text())
    assert written["accuracy"] == result.mean and written["episodes"] == 7
    assert written["options"] == [] and written["dataset"] == synthetic_data
    # the same number as evaluating the loaded run by hand
    cfg, alg = load_run(run)
    cfg = replace(cfg, eval=replace(cfg.eval, ways=3, shots=2))
    by_hand = evaluate(alg, task_source(cfg, "val", training=False), episodes=7,
                       batch_size=cfg.eval.batch_size, split="val")
    assert by_hand.mean == result.mean and by_hand.ci95 == result.ci95


def test_evaluate_run_with_options_writes_its_own_file(tmp_path):
    run = tmp_path / "rep"
    train(load_config("reptile-sinusoid", overrides=[
        "train.meta_steps=2", "eval.episodes=3", "train.progress=false",
        "train.tensorboard=false"]), run)
    own = (run / "results.json").read_text()
    result, path = evaluate_run(run, episodes=3, options=["algorithm.eval_inner_steps=1"])
    assert path == run / "results.eval_inner_steps=1.json" and result.metric == "mse"
    assert json.loads(path.read_text())["options"] == ["algorithm.eval_inner_steps=1"]
    assert (run / "results.json").read_text() == own
    with pytest.raises(ConfigError, match="test-time"):
        evaluate_run(run, options=["train.meta_steps=9"])


def test_results_name():
    assert results_name() == results_name([]) == "results.eval.json"
    assert results_name(["ways=20", "algorithm.a=1"]) == "results.ways=20,a=1.json"


def test_eval_with_the_runs_own_settings_keeps_its_results_json(tmp_path, synthetic_data):
    run = tmp_path / "run"
    train(load_config(overrides=[f"data.name={synthetic_data}", *FAST]), run)
    trained = json.loads((run / "results.json").read_text())
    cfg, _ = load_run(run)
    result, path = evaluate_run(run, ways=cfg.eval.ways)  # asked, but the same as the run's
    assert path == run / "results.eval.json"
    assert json.loads((run / "results.json").read_text()) == trained  # "weights" and all
    assert "weights" in trained and result.mean == trained["accuracy"]


def test_a_run_loads_each_split_once(tmp_path):
    """The train split is loaded once per run (its input shape comes from the task source)."""
    loads: Counter[str] = Counter()
    seeds = {"train": 0, "val": 1, "test": 2}

    def load(split, *, root, download, image_size, seed):
        loads[split] += 1
        return make_dataset(classes=24 if split == "train" else 12, per_class=8,
                            name=f"counted/{split}", size=image_size, seed=seeds[split])

    with DATASETS.temporarily(DatasetSpec("counted", load, "images", tuple(seeds), "", False)):
        train(load_config(overrides=["data.name=counted", *FAST]), tmp_path / "run")
    assert loads == {"train": 1, "val": 1, "test": 1}


def test_only_probabilistic_regression_reports_interval_coverage():
    import torch

    from metazoo.algorithms import build
    from metazoo.engine.evaluate import evaluate
    from metazoo.models import MLP
    from metazoo.tasks import SinusoidTasks

    torch.manual_seed(0)
    src = SinusoidTasks(shots=5, queries=10, seed=0, split="test")
    alpaca = evaluate(build("alpaca", MLP((1,), (16,), "tanh"), ways=1), src, episodes=8)
    maml = evaluate(build("maml", MLP((1,), (16,)), ways=1), src, episodes=8)
    assert alpaca.coverage95 is not None and 0.0 <= alpaca.coverage95 <= 1.0
    assert "95% interval holds" in alpaca.line() and "coverage95" in alpaca.to_json()
    assert maml.coverage95 is None and "coverage95" not in maml.to_json()
    assert alpaca.nll is not None and "NLL" in alpaca.line() and maml.nll is None
    assert alpaca.ece is None and "ece" not in alpaca.to_json()  # ECE is a classifier's


def test_classifiers_report_nll_brier_and_ece_of_their_predictions():
    import torch

    from metazoo import calibration
    from metazoo.algorithms import build
    from metazoo.models import Conv4
    from metazoo.tasks import make_task_source

    torch.manual_seed(0)
    src = make_task_source("glyphs", "test", ways=3, shots=1, queries=4, seed=0)
    alg = build("protonet", Conv4(src.input_shape, hidden=8), ways=3)
    result = evaluate(alg, src, episodes=5, batch_size=2)  # batches of 2, 2, 1
    alg.eval()
    with torch.no_grad():
        batch = src.batch(0, 5)  # the same 5 episodes at once
        out = alg.predict(batch.support_x, batch.support_y, batch.query_x)
    assert result.nll == pytest.approx(calibration.nll(out, batch.query_y).mean().item())
    assert result.brier == pytest.approx(calibration.brier(out, batch.query_y).mean().item())
    pooled = calibration.Reliability()
    pooled.add(out, batch.query_y)
    assert result.ece == pytest.approx(pooled.ece())
    table = pooled.to_json()
    assert result.reliability is not None and result.reliability["count"] == table["count"]
    for key in ("confidence", "accuracy"):  # pooled batch by batch: equal up to rounding
        assert [v or 0.0 for v in result.reliability[key]] == pytest.approx(
            [v or 0.0 for v in table[key]])
    written = result.to_json()
    assert {"nll", "nll_ci95", "brier", "ece", "reliability"} <= written.keys()
    assert "ECE" in result.line() and "Brier" in result.line()


def test_regression_results_say_tasks_and_shots_and_no_batch_norm():
    import torch

    from metazoo.algorithms import build
    from metazoo.engine.evaluate import batch_norm_mode
    from metazoo.models import MLP, Conv4
    from metazoo.tasks import SinusoidTasks

    torch.manual_seed(0)
    maml = build("maml", MLP((1,), (16,)), ways=1)
    line = evaluate(maml, SinusoidTasks(shots=5, queries=10, seed=0, split="test"),
                    episodes=4).line()
    assert "(4 tasks, 5-shot 10-query" in line and "1-way" not in line
    assert batch_norm_mode(maml) == "none"  # an MLP has no batch norm to describe
    assert batch_norm_mode(build("maml", Conv4(hidden=8), ways=5)) == "transductive"


def test_evaluation_shows_its_episodes_on_a_terminal_only(capsys, monkeypatch):
    import sys

    import torch

    from metazoo.algorithms import build
    from metazoo.models import MLP
    from metazoo.tasks import SinusoidTasks

    torch.manual_seed(0)
    alg, src = build("maml", MLP((1,), (8,)), ways=1), SinusoidTasks(2, 3, seed=0, split="test")
    evaluate(alg, src, episodes=5, batch_size=2, progress=True)
    assert "episodes" not in capsys.readouterr().err  # piped: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    evaluate(alg, src, episodes=5, batch_size=2, progress=True)
    assert "test episodes" in capsys.readouterr().err
