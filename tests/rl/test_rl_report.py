"""Meta-RL in `metazoo list` (learners, task families, options) and `metazoo report` (a table of
meta-RL runs, beside the supervised one; CSV rows per metric)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.engine.log import MetricsLog
from metazoo.rl import base, catalog
from tests.test_report import _fabricated, _report

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _listed(capsys, *argv):
    capsys.readouterr()
    assert main(["list", *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_list_algorithms_ends_with_the_meta_rl_learners(capsys):
    lines = _listed(capsys, "algorithms")
    assert lines[-3:] == [
        "meta-RL learners:",
        "  rl2          RL²     Duan et al. 2016, arXiv:1611.02779",
        "  maml_rl      MAML-RL Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast "
        "Adaptation of Deep Networks. ICML 2017 (Sec. 5.3)"]


def test_list_families_says_which_need_mujoco(capsys):
    assert _listed(capsys, "families") == [
        "meta-RL task families:",
        "  bandit        metazoo[rl]     k-armed Bernoulli bandits, means ~ U[0,1], trials of n "
        "one-pull episodes (Duan et al. 2016, Sec. 4.1)",
        "  cheetah_dir   metazoo[mujoco] HalfCheetah-v5 running forward or backward, H = 200 "
        "(Finn et al. 2017, Sec. 5.3)",
        "  cheetah_vel   metazoo[mujoco] HalfCheetah-v5 running at a goal velocity in [0, 2], "
        "H = 200 (Finn et al. 2017, Sec. 5.3)",
        "  navigation_2d metazoo[rl]     point agent to a random goal in [-0.5, 0.5]^2, H = 100 "
        "(Finn et al. 2017, Sec. 5.3)",
        "  tabular_mdp   metazoo[rl]     random MDPs, |S|=10 |A|=5, R ~ N(1,1), P ~ flat "
        "Dirichlet, 10-step episodes, trials of n episodes (Duan et al. 2016, Sec. 4.2)"]
    everything = _listed(capsys)
    at = everything.index("meta-RL task families:")
    assert everything[at - 1].startswith("  folder ") and everything[at + 6] == "backbones:"


def test_the_mujoco_column_is_what_each_family_builds():
    """`register_family(..., extra=)` is written by hand: each family's environment says whether
    it is right."""
    pytest.importorskip("mujoco")
    import numpy as np

    for name in base.family_names():
        family = base.make_family(name)
        env = family.make_env(family.sample_tasks(1, np.random.default_rng(0))[0])
        uses_mujoco = type(env.unwrapped).__module__.startswith("gymnasium.envs.mujoco")
        env.close()
        assert (base.family_spec(name).extra == "mujoco") == uses_mujoco, name


def test_list_without_gymnasium_says_what_to_install(capsys, monkeypatch):
    def missing(*_):
        raise ModuleNotFoundError("No module named 'gymnasium'")

    monkeypatch.setattr(base, "algorithm_spec", missing)
    monkeypatch.setattr(base, "family_names", missing)
    lines = _listed(capsys)
    for head in ("meta-RL learners:", "meta-RL task families:"):
        assert lines[lines.index(head) + 1] == catalog.NO_GYMNASIUM


def test_list_options_of_maml_rl(capsys):
    lines = _listed(capsys, "options", "maml_rl")
    assert lines[:3] == [
        "maml_rl options (--set KEY=VALUE):",
        "  algorithm.hidden               (100, 100)     tuple[int, ...]        two hidden "
        "layers of 100 ReLU units (Sec. 5.3)",
        "  algorithm.init_std             1.0            float                  initial policy "
        "std (rllab GaussianMLPPolicy init_std, ref. code)"]
    assert any(line.startswith("  algorithm.eval_later_lr ") for line in lines)


def test_rl_table_lists_each_learner_with_its_presets():
    rows = catalog.rl_table().splitlines()
    assert rows[:2] == ["| algorithm | paper | file | presets |", "|---|---|---|---|"]
    assert rows[2].startswith("| RL² (`rl2`) | Duan et al. 2016, arXiv:1611.02779 | "
                              "[rl2.py](src/metazoo/rl/rl2.py) | `rl2-bandits-k10-n100`, ")
    assert "`maml_rl-navigation-quick`" in rows[3] and len(rows) == 4


def _stats(**values):
    return {k: {"mean": m, "ci95": h} for k, (m, h) in values.items()}


def _rl_runs(root):
    """An RL² bandit run (with an eval on 200 validation tasks) and a MAML-RL navigation run,
    written as `engine.rl` and `engine.rl_eval` write them; MAML-RL's without provenance.json."""
    rl2, maml = root / "rl2-k5n10", root / "maml-nav"
    for run, preset in ((rl2, "rl2-bandits-k5-n10"), (maml, "maml_rl-navigation")):
        run.mkdir()
        (run / "config.json").write_text(json.dumps(load_config(preset).to_dict()))
    (rl2 / "provenance.json").write_text(json.dumps({
        "preset": "rl2-bandits-k5-n10", "config_file": None, "paper": None, "commit": COMMIT,
        "metazoo": "0.1"}))
    curve = {f"{m}_after_{i}": (i * v, 0.05) for m, v in (("return", 0.66), ("regret", 0.07))
             for i in range(1, 11)}
    rl2_metrics = _stats(**{"return": (6.6912, 0.0871), "regret": (0.7104, 0.0412)}, **curve)
    common = {"algorithm": "rl2", "family": "bandit", "options": {"arms": 5, "episodes": 10},
              "curve_axis": "episodes of the trial", "weights": "last", "device": "cpu"}
    (rl2 / "results.json").write_text(json.dumps({
        **common, "split": "test", "tasks": 1000, "metrics": rl2_metrics, "curves": {},
        "seconds": 12.4, "baselines": {"ucb1": _stats(**{"return": (6.71, 0.08)})}}))
    (rl2 / "results.split=val,episodes=200.json").write_text(json.dumps({
        **common, "split": "val", "tasks": 200, "step": 500, "seconds": 2.5, "curves": {},
        "metrics": _stats(**{"return": (6.5, 0.21), "regret": (0.8, 0.1)})}))
    fields = ["step", "split", "entropy", "loss", "seconds", "tasks_per_s"]
    log = MetricsLog(rl2, tensorboard=False, fields=fields)
    log.write(250, "train", entropy=1.2, loss=0.3, seconds=1500.0, tasks_per_s=4166.0)
    log.write(500, "train", entropy=0.9, loss=0.2, seconds=1600.25, tasks_per_s=3900.0)
    log.close()
    (maml / "results.json").write_text(json.dumps({
        "algorithm": "maml_rl", "family": "navigation_2d",
        "options": {"low": -0.5, "high": 0.5, "horizon": 100}, "split": "test", "tasks": 100,
        "metrics": _stats(return_after_0=(-45.123, 2.04), return_after_1=(-30.51, 1.83),
                          return_after_2=(-25.2, 1.5), return_after_3=(-23.9, 1.41)),
        "curves": {}, "curve_axis": "policy-gradient steps", "seconds": 30.0, "weights": "last",
        "device": "cpu"}))
    log = MetricsLog(maml, tensorboard=False, fields=["step", "split", "return", "seconds"])
    log.write(120, "train", **{"return": -30.0}, seconds=700.4)
    log.close()
    return rl2, maml


RL_HEADER = ["| run | method | family | setting | result (ours) | paper | iterations | wall time "
             "| commit |", "|---|---|---|---|---|---|---|---|---|"]


def test_markdown_rows_of_fabricated_rl_runs(capsys, tmp_path):
    rl2, maml = _rl_runs(tmp_path)
    assert _report(capsys, rl2, maml).splitlines() == [*RL_HEADER,
        f"| {rl2} | RL² | bandit | arms=5 episodes=10, 1000 tasks | return 6.69 ± 0.09, "
        "regret 0.71 ± 0.04 | - | 500 of 500 | 3113 s (incl. 12.4 s test) | 0123456 |",
        f"| {rl2} | RL² (split=val,episodes=200) | bandit | arms=5 episodes=10, 200 tasks, val "
        "split | return 6.50 ± 0.21, regret 0.80 ± 0.10 | - | 500 of 500 | 2 s | 0123456 |",
        f"| {maml} | MAML-RL | navigation_2d | low=-0.5 high=0.5 horizon=100, 100 tasks | "
        "return after 0/1/2/3: -45.12 ± 2.04 / -30.51 ± 1.83 / -25.20 ± 1.50 / -23.90 ± 1.41 "
        "| - | 120 of 500 | 730 s (incl. 30.0 s test) | - |"]


def test_supervised_and_rl_runs_give_a_table_each(capsys, tmp_path):
    rl2, maml = _rl_runs(tmp_path)
    sup, _ = _fabricated(tmp_path)
    alone = _report(capsys, sup)
    mixed = _report(capsys, rl2, sup, maml).split("\n\n")
    assert mixed[0] == alone.rstrip("\n")  # the supervised table as without meta-RL runs
    assert mixed[1].splitlines()[:2] == RL_HEADER and len(mixed[1].splitlines()) == 5


def test_a_paper_entry_of_the_run_stands_beside_its_test_rows(capsys, tmp_path):
    rl2, _ = _rl_runs(tmp_path)
    prov = json.loads((rl2 / "provenance.json").read_text())
    prov["paper"] = {"return": 6.7, "source": "Duan et al. 2016, Table 1"}
    (rl2 / "provenance.json").write_text(json.dumps(prov))
    test, val = _report(capsys, rl2).splitlines()[2:]
    assert "| return 6.7 |" in test and "| - |" in val
    rows = list(csv.DictReader(io.StringIO(_report(capsys, rl2, "--csv"))))
    ret = next(r for r in rows if r["results"] == "results.json" and r["metric"] == "return")
    assert (ret["paper"], ret["paper_source"], ret["paper_from"]) == (
        "6.7", "Duan et al. 2016, Table 1", "run")


def test_a_paper_curve_stands_beside_the_curve_of_each_inner_step(capsys, tmp_path):
    _, maml = _rl_runs(tmp_path)
    paper = {"return_after_0": -40, "return_after_1": -11.6, "return_after_2": -3.3,
             "return_after_3": -3.2, "source": "Finn et al. 2017, Fig. 4"}
    (maml / "provenance.json").write_text(json.dumps({
        "preset": "maml_rl-navigation", "config_file": None, "paper": paper, "commit": COMMIT,
        "metazoo": "0.1"}))
    test = _report(capsys, maml).splitlines()[2]
    assert "| return after 0/1/2/3: -40 / -11.6 / -3.3 / -3.2 |" in test
    rows = list(csv.DictReader(io.StringIO(_report(capsys, maml, "--csv"))))
    by_metric = {r["metric"]: r["paper"] for r in rows if r["results"] == "results.json"}
    assert by_metric["return_after_1"] == "-11.6" and by_metric["return_after_3"] == "-3.2"


def test_csv_has_a_row_per_metric_at_full_precision(capsys, tmp_path):
    rl2, maml = _rl_runs(tmp_path)
    sup, _ = _fabricated(tmp_path)
    rows = list(csv.DictReader(io.StringIO(_report(capsys, sup, rl2, maml, "--csv"))))
    assert len(rows) == 1 + (2 + 20) + 2 + 4 and rows[0]["method"] == "MAML"
    assert rows[0]["rl_options"] == "" and rows[0]["mean"] == "98.533"
    regret = next(r for r in rows if r["metric"] == "regret")
    assert {k: regret[k] for k in ("method", "data", "episodes", "mean", "ci95", "steps",
                                   "wall_s", "commit", "ways", "rl_options")} == {
        "method": "RL²", "data": "bandit", "episodes": "1000", "mean": "0.7104",
        "ci95": "0.0412", "steps": "500", "wall_s": "3112.65", "commit": COMMIT, "ways": "",
        "rl_options": '{"arms": 5, "episodes": 10}'}
    assert [r["metric"] for r in rows[-4:]] == [f"return_after_{i}" for i in range(4)]


def test_plot_leaves_rl_rows_out_with_a_note(capsys, tmp_path):
    rl2, _ = _rl_runs(tmp_path)
    sup, _ = _fabricated(tmp_path)
    png = tmp_path / "report.png"
    capsys.readouterr()
    assert main(["report", str(rl2), "--plot", str(png)]) == 0
    assert "leaves out the 2 meta-RL row(s)" in capsys.readouterr().err and not png.exists()
    assert main(["report", str(rl2), str(sup), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_damaged_rl_results_are_a_one_line_error(capsys, tmp_path):
    rl2, _ = _rl_runs(tmp_path)
    (rl2 / "results.json").write_text(json.dumps({"split": "test", "metrics": {"return": 6}}))
    capsys.readouterr()
    assert main(["report", str(rl2)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.json' is damaged (no meta-RL metrics)" in err


def test_a_real_rl_run_and_its_eval_are_reported(capsys, tmp_path, one_thread):
    run = tmp_path / "tiny"
    assert main(["train", "--preset", "rl2-bandits-quick", "--out", str(run), "--set",
                 "train.meta_steps=2", "algorithm.hidden=8", "train.meta_batch_size=8",
                 "eval.episodes=10", "train.progress=false", "train.tensorboard=false",
                 "rl.options={arms: 2, episodes: 5, baselines: [random]}"]) == 0
    assert main(["eval", str(run), "--episodes", "6"]) == 0
    res = json.loads((run / "results.json").read_text())["metrics"]
    commit = json.loads((run / "provenance.json").read_text())["commit"][:7]
    own, other = _report(capsys, run).splitlines()[2:]
    ret, regret = res["return"], res["regret"]
    assert own.startswith(f"| {run} | RL² | bandit | arms=2 episodes=5, 10 tasks | "
                          f"return {ret['mean']:.2f} ± {ret['ci95']:.2f}, "
                          f"regret {regret['mean']:.2f} ± {regret['ci95']:.2f} | - | 2 of 2 | ")
    assert own.endswith(f" test) | {commit} |")
    assert other.startswith(f"| {run} | RL² (episodes=6) | bandit | arms=2 episodes=5, 6 tasks")


def test_the_baselines_runs_say_what_they_are(capsys, tmp_path):
    """MAML-RL's pretrained baseline (`algorithm.objective=pretrained`) and a run of
    `train.meta_steps=0` (the initial weights tested; no metrics.csv is written) are named so,
    and the preset's paper number (MAML's) does not stand beside them."""
    _, maml = _rl_runs(tmp_path)
    cfg = json.loads((maml / "config.json").read_text())
    pre, init = tmp_path / "pretrained", tmp_path / "init"
    for run, change in ((pre, ("algorithm", "objective", "pretrained")),
                        (init, ("train", "meta_steps", 0))):
        run.mkdir()
        section, key, value = change
        (run / "config.json").write_text(json.dumps(
            {**cfg, section: {**cfg[section], key: value}}))
        (run / "results.json").write_text((maml / "results.json").read_text())
        (run / "provenance.json").write_text(json.dumps({
            "preset": "maml_rl-navigation", "config_file": None, "commit": COMMIT,
            "paper": {"return_after_1": -11.6, "source": "Finn et al. 2017, Fig. 4"}}))
    (pre / "metrics.csv").write_text((maml / "metrics.csv").read_text())
    rows = _report(capsys, pre, init).splitlines()[2:]
    assert rows[0].startswith(f"| {pre} | MAML-RL, pretrained | navigation_2d |")
    assert rows[1].startswith(f"| {init} | MAML-RL, initial weights | navigation_2d |")
    assert all("-11.6" not in row for row in rows)
    assert "| 0 | 30 s (incl. 30.0 s test) |" in rows[1]
    (init / "config.json").write_text(json.dumps(cfg))  # 500 steps asked, no log: an error
    capsys.readouterr()
    assert main(["report", str(init)]) != 0
    assert "has no metrics.csv" in capsys.readouterr().err
