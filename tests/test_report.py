"""`metazoo report`: the table of run folders beside the papers' numbers, its CSV and figure,
the `paper:` entry of presets and config files, and what a run records in provenance.json."""

import csv
import io
import json
import re

import pytest

from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.data import DATASETS, DatasetSpec
from metazoo.engine.log import MetricsLog
from metazoo.engine.provenance import commit, origin
from metazoo.errors import ConfigError
from tests.conftest import REPO, make_dataset
from tests.test_cli import _one_line_error

FAST = ["model.hidden=8", "train.progress=false", "train.meta_steps=2",
        "train.log_every=1", "train.tensorboard=false", "eval.every=2", "eval.val_episodes=4",
        "eval.episodes=10", "eval.queries=3", "data.ways=5", "data.queries=3"]
PAPER_A = 'paper: {accuracy: 55.5, ci95: 1.5, source: "A et al. 2001, Table 9"}\n'
PAPER_B = 'paper: {accuracy: 66.6, source: "B et al. 2002, Table 8"}\n'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny real runs (`metazoo train`, 2 steps): two from config files whose `paper:`
    entries differ, one from a preset whose setting `--set` changed; and an eval of the first."""
    root = tmp_path_factory.mktemp("runs")
    splits = {"train": 0, "val": 1, "test": 2}

    def load(split, *, root, download, image_size, seed):
        return make_dataset(classes=24 if split == "train" else 12, per_class=8,
                            name=f"synthetic/{split}", size=image_size, seed=splits[split])

    with DATASETS.temporarily(DatasetSpec("synthetic", load, "images", tuple(splits), "test",
                                          False)):
        for name, entry in (("a", PAPER_A), ("b", PAPER_B)):
            (root / f"{name}.yaml").write_text("data: {name: synthetic}\n" + entry)
            assert main(["train", "--config", str(root / f"{name}.yaml"), "--out",
                         str(root / name), "--set", *FAST]) == 0
        assert main(["train", "--preset", "protonet-omniglot-5w1s", "--out", str(root / "c"),
                     "--set", "data.name=synthetic", *FAST]) == 0
        assert main(["eval", str(root / "a"), "--episodes", "6"]) == 0
        assert main(["eval", str(root / "a"), "--ways", "3"]) == 0
    return root


def _fabricated(root):
    """Two run folders as the engine writes them, with the numbers of two docs/results.md
    rows (MAML's 48-minute run; ALPaCA on sinusoid) and no provenance.json (older runs)."""
    maml, alpaca = root / "maml-48min", root / "alpaca"
    for run, preset in ((maml, "maml-omniglot-5w1s"), (alpaca, "alpaca-sinusoid")):
        run.mkdir()
        (run / "config.json").write_text(json.dumps(load_config(preset).to_dict()))
    (maml / "results.json").write_text(json.dumps({
        "metric": "accuracy", "ci95": 0.0043, "episodes": 600, "ways": 5, "shots": 1,
        "queries": 1, "split": "test", "seconds": 9.5, "accuracy": 0.98533, "weights": "best",
        "algorithm": "maml", "dataset": "omniglot", "batch_norm": "transductive"}))
    log = MetricsLog(maml, tensorboard=False)
    log.write(3500, "train", loss=0.1, acc=0.97, seconds=2800.0)
    log.write(3500, "val", acc=0.99, ci95=0.01, seconds=7.0)  # inside the next window
    log.write(3546, "train", loss=0.1, acc=0.97, seconds=80.0)
    log.write(3546, "val", acc=0.99, ci95=0.01, seconds=9.5)  # after the last window
    (alpaca / "results.json").write_text(json.dumps({
        "metric": "mse", "ci95": 0.000176915, "episodes": 600, "ways": 1, "shots": 10,
        "queries": 100, "split": "test", "seconds": 0.3, "mse": 0.001718891,
        "algorithm": "alpaca", "dataset": "sinusoid"}))
    MetricsLog(alpaca, tensorboard=False).write(5000, "train", loss=0.5, mse=0.01, seconds=1158.6)
    return maml, alpaca


def _report(capsys, *argv):
    capsys.readouterr()  # what the runs' training printed
    assert main(["report", *map(str, argv)]) == 0
    return capsys.readouterr().out


def test_markdown_rows_of_fabricated_runs_and_the_preset_paper(capsys, tmp_path):
    maml, alpaca = _fabricated(tmp_path)
    assert _report(capsys, maml, alpaca).splitlines() == [
        "| run | method | data | setting | accuracy or MSE (ours) | paper | iterations | "
        "wall time | commit |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {maml} | MAML | omniglot | 5-way 1-shot 1-query, 600 episodes | 98.53 ± 0.43 | "
        "98.7 ± 0.4 | 3546 of 60000 | 2899 s (incl. 9.5 s test) | - |",
        f"| {alpaca} | ALPaCA | sinusoid | 10-shot 100-query, 600 tasks | MSE 0.0017 ± 0.0002 | "
        "- | 5000 of 5000 | 1159 s (incl. 0.3 s test) | - |"]


def test_csv_holds_the_numbers_at_full_precision(capsys, tmp_path):
    maml, _ = _fabricated(tmp_path)
    row, = csv.DictReader(io.StringIO(_report(capsys, maml, "--csv")))
    assert row["method"] == "MAML" and row["metric"] == "accuracy"
    assert (row["mean"], row["ci95"], row["steps"], row["meta_steps"]) == (
        "98.533", "0.43", "3546", "60000")
    assert (row["wall_s"], row["test_s"], row["commit"]) == ("2899", "9.5", "")
    assert (row["paper"], row["paper_ci95"], row["paper_from"]) == (
        "98.7", "0.4", "preset maml-omniglot-5w1s")
    assert row["paper_source"].startswith("Finn et al. 2017, Table 1")


def test_a_resume_that_extended_the_run_counts_its_new_length(capsys, tmp_path):
    maml, _ = _fabricated(tmp_path)
    (maml / "resumes.json").write_text(json.dumps([
        {"time": "t1", "from_step": 3000, "changes": {"eval.episodes": [600, 1000]}},
        {"time": "t2", "from_step": 3400, "changes": {"train.meta_steps": [60000, 70000]}}]))
    row, = csv.DictReader(io.StringIO(_report(capsys, maml, "--csv")))
    assert (row["steps"], row["meta_steps"]) == ("3546", "70000")


def _expected(run, method, result_file, paper, *, own=True):
    """A row of a real run, its cells computed from the files the run wrote."""
    r = json.loads((run / result_file).read_text())
    prov = json.loads((run / "provenance.json").read_text())
    rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    wall = r["seconds"] + (sum(float(x["seconds"]) for x in rows if x["split"] == "train")
                           + sum(float(x["seconds"]) for x in rows
                                 if x["split"] == "val" and x["step"] == "2") if own else 0)
    time = f"{wall:.0f} s (incl. {r['seconds']:.1f} s test)" if own else f"{wall:.0f} s"
    return (f"| {run} | {method} | synthetic | {r['ways']}-way 1-shot 3-query, "
            f"{r['episodes']} episodes | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
            f"{paper} | {r['nll']:.3f} | {r['ece']:.3f} | 2 of 2 | {time} | "
            f"{prov['commit'][:7]} |")


def test_real_runs_record_the_paper_of_their_config_file(capsys, runs):
    a, b, c = runs / "a", runs / "b", runs / "c"
    lines = _report(capsys, a, b, c).splitlines()
    assert lines[0] == ("| run | method | data | setting | accuracy (ours) | paper | NLL | ECE "
                        "| iterations | wall time | commit |")
    assert lines[2:] == [
        _expected(a, "ProtoNet", "results.json", "55.5 ± 1.5"),
        _expected(a, "ProtoNet (episodes=6)", "results.episodes=6.json", "55.5 ± 1.5",
                  own=False),
        _expected(a, "ProtoNet (ways=3)", "results.ways=3.json", "-", own=False),
        _expected(b, "ProtoNet", "results.json", "66.6"),
        _expected(c, "ProtoNet", "results.json", "-")]  # data.name=synthetic: not the paper's
    recorded = json.loads((a / "provenance.json").read_text())
    assert recorded["paper"]["source"] == "A et al. 2001, Table 9"
    assert recorded["config_file"] == str(runs / "a.yaml") and recorded["preset"] is None
    assert json.loads((c / "provenance.json").read_text())["preset"] == "protonet-omniglot-5w1s"


def test_the_commit_is_the_checkout_head():
    value = commit()
    if (REPO / ".git").exists():
        assert re.fullmatch("[0-9a-f]{40}", value), value
    else:
        assert value == "unknown"


def test_commit_is_unknown_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert commit() == "unknown"


def test_paper_entry_layers_and_holds_for_its_setting_only(tmp_path):
    assert origin("maml-omniglot-5w1s", None).paper == {
        "accuracy": 98.7, "ci95": 0.4, "source": "Finn et al. 2017, Table 1: MAML, Omniglot "
                                                  "5-way 1-shot"}
    assert origin("maml-omniglot-5w1s", None, ["train.time_limit_min=20"]).paper["accuracy"] \
        == 98.7  # a budget keeps the setting
    for change in ("eval.shots=5", "algorithm.name=fomaml", "data.name=glyphs"):
        assert origin("maml-omniglot-5w1s", None, [change]).paper is None, change
    over = tmp_path / "over.yaml"
    over.write_text(PAPER_B)  # replaces the preset's entry whole: no ci95 left over
    assert origin("maml-omniglot-5w1s", over).paper == {"accuracy": 66.6,
                                                        "source": "B et al. 2002, Table 8"}
    assert origin(None, None).paper is None


def test_a_meta_rl_paper_entry_holds_for_its_family_and_options_only(tmp_path):
    bandits = tmp_path / "bandits.yaml"
    bandits.write_text("rl: {family: bandit, options: {arms: 5, episodes: 10}}\n"
                       "algorithm: {name: rl2}\n" + PAPER_B)
    assert origin(None, bandits).paper == {"accuracy": 66.6, "source": "B et al. 2002, Table 8"}
    assert origin(None, bandits, ["train.meta_steps=3"]).paper is not None
    for change in ("rl.options={arms: 10, episodes: 10}", "rl.options={arms: 5, episodes: 100}"):
        assert origin(None, bandits, [change]).paper is None, change


def test_meta_rl_presets_carry_the_curve_read_off_the_paper_figure():
    """MAML-RL's entries name the metrics of its results (`return_after_<steps>`)."""
    nav = origin("maml_rl-navigation", None).paper
    assert [nav[f"return_after_{i}"] for i in range(4)] == [-40, -11.6, -3.3, -3.2]
    assert "Fig. 4" in nav["source"] and "read off" in nav["source"]
    assert origin("maml_rl-navigation", None, ["rl.options={horizon: 50}"]).paper is None


@pytest.mark.parametrize(("entry", "match"), [
    ('paper: {accuracy: high, source: "x"}', "paper.accuracy must be a finite number"),
    ('paper: {accuracy: 9, sauce: "x"}', "unknown key 'paper.sauce'"),
    ("paper: {accuracy: 9}", "paper.source must say where"),
    ('paper: {accuracy: 9, mse: 1, source: "x"}', "one published number"),
    ('paper: {accuracy: 9, return_after_1: 1, source: "x"}', "one published number"),
    ('paper: {return_after_one: 1, source: "x"}', "unknown key 'paper.return_after_one'"),
    ('paper: {return_after_0: [1, 2], source: "x"}', "paper.return_after_0 must be a finite"),
    ('paper: {ci95: 1, source: "x"}', "one published number"),
    ("paper: 98.7", "'paper' must be a mapping"),
])
def test_a_bad_paper_entry_is_a_one_line_error(capsys, tmp_path, entry, match):
    path = tmp_path / "p.yaml"
    path.write_text(entry + "\n")
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_config(config_file=path)
    _one_line_error(capsys, ["config", "--config", str(path)], match)


def test_plot_writes_a_png_atomically(capsys, tmp_path, runs):
    maml, alpaca = _fabricated(tmp_path)
    png = tmp_path / "fig" / "report.png"
    _report(capsys, maml, alpaca, runs / "a", "--plot", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in png.parent.iterdir()) == ["report.png"]  # no temporary left


def test_a_folder_that_is_not_a_run_is_a_one_line_error(capsys, tmp_path, runs):
    _one_line_error(capsys, ["report", str(tmp_path / "none")], "no such folder")
    _one_line_error(capsys, ["report", str(runs / "a"), str(tmp_path)],
                    f"'{tmp_path}' is not a run folder (no config.json)")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((runs / "a" / "config.json").read_text())
    _one_line_error(capsys, ["report", str(unfinished)], "has no results.json")
    (unfinished / "results.json").write_text((runs / "a" / "results.json").read_text())
    _one_line_error(capsys, ["report", str(unfinished)], "has no metrics.csv")
    (unfinished / "metrics.csv").write_text((runs / "a" / "metrics.csv").read_text())
    (unfinished / "results.json").write_text('{"metric": "accuracy"')
    _one_line_error(capsys, ["report", str(unfinished)], "results.json' is damaged")
