"""Discovery from the command line: options with defaults and comments, backbones, the resolved
config, the version."""

import pytest
import yaml

from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.errors import ConfigError
from metazoo.options import section_options


def test_an_algorithms_options_carry_registered_defaults_and_source_comments():
    options = {o.key: o for o in section_options("maml")}
    assert options["algorithm.inner_lr"].default == 0.4
    assert "Eq. 1" in options["algorithm.inner_lr"].comment
    assert options["algorithm.first_order"].type == "bool"
    train = {o.key: o for o in section_options("train")}
    assert train["train.meta_steps"].comment == "outer-loop updates"


def test_an_unknown_name_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'maml'"):
        section_options("mam")


def test_cli_lists_options_backbones_and_the_version(capsys):
    assert main(["list", "options", "reptile"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reptile options") and "algorithm.inner_steps" in out
    assert main(["list", "backbones"]) == 0
    assert "resnet12" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("metazoo ")
    assert main(["list", "options"]) == 2
    assert "name an algorithm" in capsys.readouterr().err


def test_cli_config_prints_what_train_would_run(capsys):
    args = ["--preset", "maml-omniglot-5w1s", "--set", "train.meta_steps=3", "--set", "seed=4"]
    assert main(["config", *args]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == load_config("maml-omniglot-5w1s", None,
                                  ["train.meta_steps=3", "seed=4"]).to_dict()
    assert printed["train"]["meta_steps"] == 3 and printed["seed"] == 4


def test_data_root_is_a_flag_of_every_command_that_reads_data(capsys):
    assert main(["config", "--preset", "maml-omniglot-5w1s", "--data-root", "/some/dir"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["root"] == "/some/dir"
    assert main(["train", "--preset", "maml-omniglot-5w1s", "--data-root", "/nonexistent",
                 "--out", "/nonexistent/run"]) == 2  # the data's own message, in one line
    err = capsys.readouterr().err
    assert "/nonexistent" in err and "--data-root" in err and len(err.splitlines()) == 1
