"""The search space: keys and kinds checked against the typed config, one-line errors."""

from __future__ import annotations

import pytest

from metazoo.errors import ConfigError
from metazoo.tune.space import Param, apply, read_space
from tests.test_cli import _one_line_error

BASE = {"algorithm": {"name": "maml"}, "data": {"name": "glyphs"}}


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_each_kind_reads_as_a_param_of_the_config(tmp_path):
    params = read_space(_space(tmp_path, (
        "algorithm.inner_lr: {log_float: [1e-3, 1]}\n"  # YAML 1.1 reads 1e-3 as a string
        "train.outer_lr: {float: [0.0001, 0.01]}\n"
        "algorithm.inner_steps: {int: [1, 5]}\n"
        "train.optimizer: {categorical: [adam, sgd]}\n"
        "model.pools: {categorical: [null, 2]}\n")), BASE)
    assert params == [Param("algorithm.inner_lr", "log_float", 0.001, 1.0),
                      Param("train.outer_lr", "float", 0.0001, 0.01),
                      Param("algorithm.inner_steps", "int", 1, 5),
                      Param("train.optimizer", "categorical", choices=("adam", "sgd")),
                      Param("model.pools", "categorical", choices=(None, 2))]
    assert apply(BASE, {"algorithm.inner_lr": 0.1, "train.optimizer": "sgd"}) == {
        "algorithm": {"name": "maml", "inner_lr": 0.1}, "data": {"name": "glyphs"},
        "train": {"optimizer": "sgd"}}
    assert BASE == {"algorithm": {"name": "maml"}, "data": {"name": "glyphs"}}  # not changed


@pytest.mark.parametrize(("text", "match"), [
    ("", "is empty"),
    ("algorithm.inner_lrr: {float: [0.1, 1]}", "did you mean 'inner_lr'"),
    ("trian.outer_lr: {float: [0.1, 1]}", "did you mean 'train'"),
    ("algorithm: {inner_lr: {float: [0.1, 1]}}", "must be section.key"),
    ("algorithm.name: {categorical: [maml, anil]}", "one algorithm"),
    ("eval.val_episodes: {int: [10, 20]}", "define the score"),
    ("train.outer_lr: {int: [1, 3]}", "use float or log_float, not int"),
    ("algorithm.inner_steps: {float: [1, 3]}", "use int, not float"),
    ("train.optimizer: {float: [1, 3]}", "use categorical"),
    ("train.outer_lr: {float: [0.1, 0.01]}", "low must be below high"),
    ("train.outer_lr: {log_float: [0, 0.01]}", "log_float needs low > 0"),
    ("train.outer_lr: {uniform: [0.1, 1]}", "needs one of log_float"),
    ("train.outer_lr: {float: [0.1]}", "needs [low, high]"),
    ("train.optimizer: {categorical: [adam, adamw]}", "must be one of adam, sgd"),
    ("train.optimizer: {categorical: []}", "non-empty list"),
    ("train.meta_batch_size: {int: [0, 4]}", "the config refuses 0"),
    ("algorithm.inner_lr: {float: [0.1, 1]}\nalgorithm.inner_lr: {float: [0.1, 2]}",
     "appears twice"),
])
def test_a_bad_space_is_a_one_line_error(capsys, tmp_path, text, match):
    err = _one_line_error(capsys, ["tune", "--space", str(_space(tmp_path, text)), "--trials",
                                   "2", "--out", str(tmp_path / "out"), "--set",
                                   "algorithm.name=maml"], match)
    assert "space" in err or "config file" in err
    assert not (tmp_path / "out" / "study.db").exists()  # refused before any study


def test_algorithm_keys_follow_the_base_configs_algorithm(tmp_path):
    path = _space(tmp_path, "algorithm.inner_lr: {log_float: [0.01, 1]}\n")
    assert read_space(path, BASE)[0].key == "algorithm.inner_lr"
    with pytest.raises(ConfigError, match="algorithm 'protonet' has no option 'inner_lr'"):
        read_space(path, {"algorithm": {"name": "protonet"}})
