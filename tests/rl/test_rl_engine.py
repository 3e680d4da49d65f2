"""The `rl` task kind end to end through the CLI: train a tiny RL² run, resume it to the same
numbers as a run never stopped, evaluate and plot it; bad settings are one-line errors."""

from __future__ import annotations

import csv
import json

import pytest
from safetensors.torch import load_file

from metazoo.cli import main
from metazoo.config_files import load_config, preset_names

TINY = ["algorithm.hidden=8", "train.meta_batch_size=8", "train.log_every=2",
        "train.checkpoint_every=100", "eval.episodes=30",
        "rl.options={arms: 2, episodes: 5, baselines: [random, ucb1, thompson]}"]


def train(out, *extra):
    return main(["train", "--preset", "rl2-bandits-quick", "--out", str(out), "--set", *TINY,
                 *extra])


def rows(run):
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "tasks_per_s")}
                for r in csv.DictReader(f)]


def test_train_resume_eval_plot(tmp_path, capsys, one_thread):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(whole, "train.meta_steps=6") == 0
    assert train(parts, "train.meta_steps=3") == 0
    out = capsys.readouterr().out
    assert "step 2/3: " in out and "regret" in out and "ucb1: regret" in out
    assert main(["train", "--out", str(parts), "--resume", "--set", "train.meta_steps=6"]) == 0
    assert rows(parts) == rows(whole) and [r["step"] for r in rows(whole)] == ["2", "4", "6"]
    a, b = (load_file(str(r / "checkpoint.safetensors")) for r in (whole, parts))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert all(a[k].equal(b[k]) for k in a)  # weights and Adam state as if never stopped
    result = json.loads((whole / "results.json").read_text())
    assert result["tasks"] == 30 and set(result["baselines"]) == {"random", "ucb1", "thompson"}
    assert {"regret", "return", "regret_after_5"} <= set(result["metrics"])
    assert result["curves"]["regret"]["x"] == [1, 2, 3, 4, 5]
    assert result["curve_axis"] == "episodes of the trial"
    capsys.readouterr()
    assert main(["eval", str(whole), "--episodes", "12"]) == 0
    said = capsys.readouterr().out
    assert "test (12 tasks of bandit): return" in said and "results.episodes=12.json" in said
    assert json.loads((whole / "results.episodes=12.json").read_text())["tasks"] == 12
    assert main(["plot", str(whole)]) == 0
    assert (whole / "learning_curves.png").stat().st_size > 0
    assert (whole / "adaptation.png").stat().st_size > 0


@pytest.mark.parametrize(("settings", "match"), [
    (["rl.family=bandt"], "unknown meta-RL task family 'bandt'; did you mean 'bandit'"),
    (["rl.family=null"], "algorithm 'rl2' is a meta-RL learner: set rl.family"),
    (["algorithm={name: protonet}"], "needs a meta-RL learner as algorithm.name"),
    (["rl.options=5"], "rl.options must be a mapping"),
    (["rl.options={arms: 1}"], "bandit needs arms >= 2"),
    (["algorithm.hiden=3"], "has no option 'hiden'"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, settings, match):
    status = main(["train", "--preset", "rl2-bandits-quick", "--out", str(tmp_path / "r"),
                   "--set", "train.meta_steps=1", *settings])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and match in err, err
    assert not (tmp_path / "r" / "config.json").exists()  # refused before the run started


def test_rl2_presets_load():
    names = [n for n in preset_names() if n.startswith("rl2-")]
    assert {"rl2-bandits-k5-n10", "rl2-bandits-k5-n100", "rl2-bandits-k10-n100",
            "rl2-tabular-n10", "rl2-tabular-n25", "rl2-bandits-quick",
            "rl2-tabular-quick"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.algorithm.name == "rl2" and cfg.rl.family in ("bandit", "tabular_mdp")


def test_list_options_shows_the_rl_section_and_rl2(capsys):
    assert main(["list", "options", "rl"]) == 0
    assert "rl.family" in capsys.readouterr().out
    assert main(["list", "options", "rl2"]) == 0
    out = capsys.readouterr().out
    assert "algorithm.gae_lambda" in out and "GAE lambda" in out


def test_eval_set_changes_test_time_options_of_a_meta_rl_run(tmp_path, capsys, one_thread):
    """MAML-RL's test step size from `eval --set` (the paper tunes its baselines' step size):
    another file, other returns after the steps, the same before them."""
    run = tmp_path / "nav"
    assert main(["train", "--preset", "maml_rl-navigation-quick", "--out", str(run), "--set",
                 "train.meta_steps=0", "eval.episodes=6", "algorithm.eval_trajectories=4",
                 "algorithm.hidden=[8]"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--set", "algorithm.eval_inner_lr=2.0",
                 "algorithm.eval_later_lr=1.0"]) == 0
    assert "results.eval_inner_lr=2.0,eval_later_lr=1.0.json" in capsys.readouterr().out
    tuned = json.loads((run / "results.eval_inner_lr=2.0,eval_later_lr=1.0.json").read_text())
    own = json.loads((run / "results.json").read_text())
    assert tuned["metrics"]["return_after_0"] == own["metrics"]["return_after_0"]
    assert tuned["metrics"]["return_after_1"] != own["metrics"]["return_after_1"]
    for bad, match in ((["algorithm.name=rl2"], "test-time algorithm options only"),
                       (["train.meta_steps=3"], "test-time algorithm options only"),
                       (["algorithm.eval_inner_lr=-1"], "eval_inner_lr must be > 0")):
        assert main(["eval", str(run), "--set", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err, err
