import dataclasses
import json
import subprocess
import sys

import pytest

import metazoo.config
from metazoo.config import RunConfig
from metazoo.config_files import apply_overrides, from_dict, load_config, preset_names
from metazoo.errors import ConfigError


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert from_dict(cfg.to_dict()) == cfg


def test_default_run_is_the_glyphs_preset():
    assert load_config("protonet-glyphs-5w1s") == RunConfig() == load_config()


def test_overrides_are_typed():
    cfg = load_config(overrides=["train.outer_lr=5e-4", "model.widths=[20, 30]", "seed=3",
                                 "train.grad_clip=null", "data.download=true"])
    assert cfg.train.outer_lr == 5e-4 and cfg.model.widths == (20, 30) and cfg.seed == 3
    assert cfg.train.grad_clip is None and cfg.data.download is True


@pytest.mark.parametrize(("override", "message"), [
    ("train.meta_stpes=3", "did you mean 'meta_steps'"),
    ("trian.meta_steps=3", "did you mean 'train'"),
    ("train.meta_steps=3.5", "must be an integer"),
    ("train.schedule=exponential", "must be one of constant, cosine, step, linear"),
    ("train.optimizer=rmsprop", "must be one of adam, sgd"),
    ("data.download=maybe", "true or false"),
    ("train.outer_lr=-1", "must be > 0"),
    ("eval.episodes=0", "must be >= 1"),
    ("algorithm.temperature=0", "temperature must be > 0"),
    ("a.b.c=1", "at most two parts"),
    ("novalue", "key=value"),
])
def test_bad_overrides_raise_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_a_config_file_is_layered_over_the_preset_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  meta_steps: 7\n")
    assert load_config(config_file=path).train.meta_steps == 7
    path.write_text("train:\n  meta_steps: 7\nalgorithm:\n  inner_steps: 2\n")
    preset = load_config("maml-omniglot-5w1s")
    both = load_config("maml-omniglot-5w1s", path, ["train.outer_lr=0.01"])
    assert both.train.meta_steps == 7 and both.train.outer_lr == 0.01  # file, then --set
    assert both.algorithm.name == "maml" and both.algorithm.config.inner_steps == 2
    assert both.train.meta_batch_size == preset.train.meta_batch_size  # the rest: the preset's
    assert both.algorithm.config.inner_lr == preset.algorithm.config.inner_lr
    path.write_text("algorithm:\n  name: protonet\n")  # another algorithm: its own defaults
    assert load_config("maml-omniglot-5w1s", path).algorithm.name == "protonet"
    path.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=path)


def test_apply_overrides_does_not_mutate_input():
    base = {"train": {"meta_steps": 1}}
    apply_overrides(base, ["train.meta_steps=2"])
    assert base == {"train": {"meta_steps": 1}}


def test_algorithm_section_holds_the_algorithms_own_config():
    from metazoo import algorithms

    cfg = load_config(overrides=["algorithm.name=maml", "algorithm.inner_lr=0.25"])
    spec = algorithms.get("maml")
    assert type(cfg.algorithm.config) is spec.config
    assert cfg.algorithm.config == spec.make_config(inner_lr=0.25)
    assert isinstance(cfg.algorithm.config.inner_lr, float)  # type: ignore[attr-defined]


def test_to_dict_writes_every_option_and_reads_back():
    cfg = load_config("maml-sinusoid")
    d = cfg.to_dict()
    fields = {f.name for f in dataclasses.fields(cfg.algorithm.config)}
    assert set(d["algorithm"]) == {"name", *fields}
    assert list(d) == ["seed", "plugins", "data", "model", "train", "eval", "augment", "pretrain",
                       "rl", "algorithm"]
    assert d["model"]["widths"] == [40, 40]  # tuples as lists: plain JSON
    assert json.loads(json.dumps(d)) == d
    assert from_dict(json.loads(json.dumps(d))) == cfg


def test_tuple_options_come_back_as_tuples():
    cfg = load_config(overrides=["algorithm.name=meta_sgd"])
    d = cfg.to_dict()
    tuples = [k for k, v in vars(cfg.algorithm.config).items() if isinstance(v, tuple)]
    assert tuples, "meta_sgd has a tuple option"
    assert all(isinstance(d["algorithm"][k], list) for k in tuples)
    back = from_dict(json.loads(json.dumps(d))).algorithm.config
    assert all(isinstance(getattr(back, k), tuple) for k in tuples) and back == cfg.algorithm.config


def test_an_older_config_json_with_some_options_reads_with_defaults():
    from metazoo import algorithms

    old = {"seed": 1, "algorithm": {"name": "fomaml", "inner_steps": 3}}
    cfg = from_dict(old)
    assert cfg.algorithm.config == algorithms.get("fomaml").make_config(inner_steps=3)
    assert cfg.algorithm.config.first_order is True  # type: ignore[attr-defined]
    assert from_dict({}).algorithm == RunConfig().algorithm


def test_unknown_algorithm_option_is_one_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"inner_lrr.*did you mean 'inner_lr'"):
        load_config(overrides=["algorithm.name=maml", "algorithm.inner_lrr=0.1"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(overrides=["algorithm.name=maml", "algorithm.inner_lr=fast"])


def test_the_engine_side_config_module_reads_no_files():
    """`metazoo.config` is the dataclasses only: YAML and presets are `metazoo.config_files`."""
    code = "import sys, metazoo.config; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
    assert not hasattr(metazoo.config, "load_config")


def test_sgd_momentum_and_nesterov_reach_the_optimiser_and_are_checked():
    from metazoo import algorithms, models
    from metazoo.config_files import load_config
    from metazoo.engine.train import make_optimizer

    cfg = load_config("metaoptnet_svm-omniglot-5w1s")
    assert (cfg.train.optimizer, cfg.train.momentum, cfg.train.nesterov) == ("sgd", 0.9, True)
    alg = algorithms.build("protonet", models.build("conv4", hidden=4), ways=5)
    group = make_optimizer(alg, cfg.train).param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 0.0005)
    for bad in (["train.momentum=1.0"], ["train.nesterov=true"],
                ["train.optimizer=adam", "train.momentum=0.9", "train.nesterov=true"]):
        with pytest.raises(ConfigError, match=r"momentum|nesterov"):
            load_config(overrides=bad)


def test_image_size_left_open_is_the_datasets_protocol_size_in_config_json(tmp_path):
    from metazoo.engine.run import image_size, resolved

    cfg = load_config(None, overrides=["data.name=omniglot"])
    assert cfg.data.image_size is None and image_size(cfg) == 28
    assert resolved(cfg).data.image_size == 28
    assert resolved(load_config(None, overrides=["data.image_size=40"])).data.image_size == 40
    with pytest.raises(ConfigError, match=r"data\.image_size must be >= 1"):
        load_config(None, overrides=["data.image_size=0"]).validate()


@pytest.mark.parametrize("override, message", [
    ("train.outer_lr=nan", "train.outer_lr must be a finite number"),
    ("train.outer_lr=.inf", "train.outer_lr must be a finite number"),
    ("train.grad_clip=nan", "train.grad_clip must be a finite number"),
    ("train.weight_decay=-1", "train.weight_decay must be >= 0"),
    ("train.grad_clip=0", "train.grad_clip must be > 0"),
    ("train.time_limit_min=-1", "train.time_limit_min must be > 0"),
    ("seed=99999999999999999999999", "seed must fit in 64 bits"),
    ("seed=-1", r"seed must be in \[0, 2\^63\)"),
    ("eval.queries=0", "eval.queries must be >= 1"),
    ("data.queries=0", "data.queries must be >= 1"),
    ("model.hidden=0", "model.hidden, model.blocks"),
    ("model.blocks=0", "model.hidden, model.blocks"),
    ("model.widths=[40,0]", "model.hidden, model.blocks"),
    ("eval.episodes=" + "9" * 300, r"fit in 64 bits.*; got 9{30}.*\(300 characters\)"),
])
def test_values_that_mean_nothing_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, overrides=[override]).validate()
    assert "\n" not in str(err.value) and len(str(err.value)) < 200
