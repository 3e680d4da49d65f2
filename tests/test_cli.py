"""The command line: user errors are one line on stderr with exit status 2."""

import json

import pytest

from metazoo.cli import main

FAST = ["data.name=synthetic", "model.hidden=8", "train.progress=false", "train.meta_steps=4",
        "train.tensorboard=false", "eval.every=2", "eval.val_episodes=4", "eval.episodes=10",
        "eval.queries=3", "data.queries=3"]


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("metazoo: error:"), err
    assert match in err, err
    return err


@pytest.mark.parametrize(("argv", "match"), [
    (["train", "--preset", "protonet-omniglot-5w11s"], "unknown preset"),
    (["train", "--set", "train.meta_stpes=3"], "did you mean 'meta_steps'"),
    (["train", "--set", "train.outer_lr=fast"], "must be a number"),
    (["train", "--set", "algorithm.name=protonett"], "did you mean 'protonet'"),
    (["train", "--set", "data.name=omniglott"], "unknown dataset"),
    (["train", "--config", "/nonexistent.yaml"], "does not exist"),
    (["eval", "/nonexistent-run"], "not a run folder"),
])
def test_user_errors_are_one_line(capsys, tmp_path, argv, match):
    _one_line_error(capsys, [*argv, "--out", str(tmp_path)] if argv[0] == "train" else argv,
                    match)


def test_too_many_ways_and_examples(capsys, tmp_path, synthetic_data):
    _one_line_error(capsys, ["train", "--out", str(tmp_path / "a"), "--set", *FAST,
                             "data.ways=30"], "30-way episodes need 30 classes")
    _one_line_error(capsys, ["train", "--out", str(tmp_path / "b"), "--set", *FAST,
                             "data.shots=5", "data.queries=5"], "lower shots or queries")


def test_train_eval_plot_and_no_overwrite(capsys, tmp_path, synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert "step 2: val accuracy" in out and "(best " in out  # each validation is printed
    _one_line_error(capsys, ["train", "--out", str(run), "--set", *FAST], "--resume")
    assert main(["eval", str(run), "--episodes", "12", "--ways", "3"]) == 0
    assert "12 episodes, 3-way" in capsys.readouterr().out
    result = json.loads((run / "results.ways=3,episodes=12.json").read_text())
    assert result["episodes"] == 12 and result["ways"] == 3
    assert json.loads((run / "results.json").read_text())["weights"]  # training's, kept
    assert main(["plot", str(run)]) == 0
    assert (run / "learning_curves.png").stat().st_size > 1000
    assert (run / "reliability.png").stat().st_size > 1000  # a classifier's calibration


def test_eval_set_changes_test_time_options_into_its_own_file(capsys, tmp_path):
    run = tmp_path / "rep"
    assert main(["train", "--preset", "reptile-sinusoid", "--out", str(run), "--set",
                 "train.meta_steps=3", "eval.episodes=4", "train.progress=false",
                 "train.tensorboard=false"]) == 0
    trained = (run / "results.json").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "4", "--set",
                 "algorithm.eval_inner_steps=1"]) == 0
    assert (run / "results.json").read_text() == trained  # the run's own result is kept
    one = json.loads((run / "results.eval_inner_steps=1.json").read_text())
    assert one["options"] == ["algorithm.eval_inner_steps=1"] and one["episodes"] == 4
    assert one["mse"] != json.loads(trained)["mse"]  # one inner step, not 32: other numbers
    _one_line_error(capsys, ["eval", str(run), "--set", "train.meta_steps=9"], "test-time")
    _one_line_error(capsys, ["eval", str(run), "--set", "algorithm.bogus=1"], "bogus")


def test_list_shows_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "protonet" in out and "glyphs" in out and "presets:" in out


def test_plot_draws_the_adaptation_figure_for_sinusoid_runs(tmp_path):
    run = tmp_path / "sin"
    assert main(["train", "--preset", "maml-sinusoid", "--out", str(run), "--set",
                 "train.meta_steps=5", "eval.every=0", "eval.episodes=4", "train.progress=false",
                 "train.tensorboard=false"]) == 0
    assert main(["plot", str(run)]) == 0
    assert (run / "adaptation.png").stat().st_size > 1000
    assert not (run / "reliability.png").exists()  # no classes, no reliability diagram
    assert json.loads((run / "results.json").read_text())["metric"] == "mse"


@pytest.mark.parametrize("preset", ["alpaca-sinusoid", "alpaca-sinusoid_line"])
def test_plot_draws_alpacas_predictive_band_for_regression_runs(tmp_path, preset):
    run = tmp_path / "alpaca"
    assert main(["train", "--preset", preset, "--out", str(run), "--set",
                 "train.meta_steps=5", "eval.every=0", "eval.episodes=4", "train.progress=false",
                 "train.tensorboard=false"]) == 0
    assert main(["plot", str(run)]) == 0
    assert (run / "predictive.png").stat().st_size > 1000
    assert not (run / "adaptation.png").exists()  # no inner steps to show


def test_list_datasets_shows_the_registry_in_order(capsys):
    assert main(["list", "datasets"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "datasets:",
        "  glyphs        procedurally drawn characters, 28x28; the embedded default",
        "  sinusoid      sine regression, amplitude U[0.1, 5], phase U[0, pi] (MAML Sec. 5.1)",
        "  sinusoid_line ambiguous regression: noisy sine or line, p=1/2 each (PLATIPUS Sec. 5.1)",
        "  omniglot      Lake et al. 2015; Vinyals split, rotations as classes for training",
        "  miniimagenet  Vinyals et al. 2016; Ravi & Larochelle split, 64/16/20 classes, 84x84 RGB",
        "  cifar_fs      Bertinetto et al. 2019: CIFAR-100 by class, 64/16/20 classes, 32x32 RGB",
        "  fc100         Oreshkin et al. 2018: CIFAR-100 by super-class, 60/20/20 classes, "
        "32x32 RGB",
        "  cub           CUB-200-2011 birds (Wah et al. 2011); Chen et al. 2019's 100/50/50 "
        "class split",
        "  fungi         FGVCx Fungi 2018 train+val; Meta-Dataset's 994/200/200 class split",
        "  folder        your images: data.root/<class>/<image>, classes split by seed",
    ]


def test_eval_prints_what_evaluate_run_returns(capsys, tmp_path, monkeypatch):
    """The CLI only parses and prints: its arguments reach `evaluate_run` unchanged."""
    import metazoo.engine.evaluate as ev

    seen = {}

    def fake(run_dir, **kwargs):
        seen.update(kwargs, run_dir=run_dir)
        result = ev.EvalResult("accuracy", 0.5, 0.01, 3, 2, 1, 4, "val", 0.1)
        return result, tmp_path / "results.json"

    monkeypatch.setattr(ev, "evaluate_run", fake)
    assert main(["eval", str(tmp_path), "--episodes", "3", "--split", "val", "--ways", "2",
                 "--data-root", "/d", "--set", "algorithm.x=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["val accuracy 0.5000 ± 0.0100 (3 episodes, 2-way 1-shot 4-query, 0.1 s)",
                   f"written: {tmp_path / 'results.json'}"]
    assert seen == {"run_dir": str(tmp_path), "episodes": 3, "split": "val", "ways": 2,
                    "shots": None, "queries": None, "data_root": "/d",
                    "options": ["algorithm.x=1"], "device": None}


def test_data_check_reports_found_and_missing_files_with_the_layout(tmp_path, capsys):
    (tmp_path / "images_background.zip").write_bytes(b"PK")
    assert main(["data", "check", "omniglot", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out and "found    " + str(tmp_path / "images_background.zip") in out
    assert "missing  images_evaluation.zip" in out and "md5 6b91aef0f799c5bb55b94e3f2daec811" in out
    (tmp_path / "images_evaluation.zip").write_bytes(b"PK")
    assert main(["data", "check", "omniglot", "--root", str(tmp_path)]) == 0
    assert "complete" in capsys.readouterr().out
    assert main(["data", "check", "glyphs"]) == 0
    assert "no files to check" in capsys.readouterr().out
    assert main(["data", "check", "omniglott"]) == 2
    assert "did you mean 'omniglot'" in capsys.readouterr().err


def test_training_without_the_files_says_what_data_check_says(tmp_path, capsys):
    assert main(["train", "--preset", "protonet-omniglot-5w1s", "--out", str(tmp_path / "r"),
                 "--set", f"data.root={tmp_path}", "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing images_background.zip; images_evaluation.zip" in err
    assert "metazoo data check omniglot" in err


def test_repeated_set_flags_add_up():
    """`--set a=1 --set b=2` keeps both (argparse's default would keep only the last)."""
    from metazoo.cli import build_parser

    for command in (["train"], ["eval", "run"], ["pretrain"]):
        args = build_parser().parse_args([*command, "--set", "a=1", "b=2", "--set", "c=3"])
        assert args.set == ["a=1", "b=2", "c=3"]
    assert build_parser().parse_args(["train"]).set == []


def test_piped_training_prints_a_line_per_logged_window_and_no_bar(capsys, synthetic_data):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = [s for s in FAST if not s.startswith("train.progress")]
        assert main(["train", "--out", f"{tmp}/run", "--set", *settings,
                     "train.log_every=2"]) == 0  # progress on, but stderr is not a terminal
    captured = capsys.readouterr()
    assert "step 2/4: loss" in captured.out and "episodes/s" in captured.out
    assert "\r" not in captured.err and "meta-train" not in captured.err


def test_quiet_prints_only_the_result_and_verbose_adds_details(capsys, tmp_path, synthetic_data):
    settings = [s for s in FAST if not s.startswith("train.progress")] + ["train.log_every=2"]
    assert main(["train", "--quiet", "--out", str(tmp_path / "q"), "--set", *settings]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 2 and quiet[0].startswith("test accuracy ")
    assert quiet[1] == f"run folder: {tmp_path / 'q'}"
    assert main(["train", "-v", "--out", str(tmp_path / "v"), "--set", *settings]) == 0
    verbose = capsys.readouterr().out
    assert "step 2/4: loss" in verbose and "tasks run as" in verbose
    assert "checkpoint at step 4" in verbose
    assert verbose.splitlines()[-2].split(" (")[0] == quiet[0].split(" (")[0]  # the same test
    assert main(["train", "--out", str(tmp_path / "n"), "--set", *settings]) == 0
    normal = capsys.readouterr().out  # the level resets with each command
    assert "step 2/4: loss" in normal and "tasks run as" not in normal
    with pytest.raises(SystemExit):
        main(["train", "-q", "-v"])  # one or the other
    assert "not allowed with argument" in capsys.readouterr().err
