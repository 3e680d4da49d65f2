import pytest

from metazoo.config import RunConfig, apply_overrides, from_dict, load_config, preset_names
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


def test_preset_and_config_are_exclusive(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  meta_steps: 7\n")
    assert load_config(config_file=path).train.meta_steps == 7
    with pytest.raises(ConfigError, match="not both"):
        load_config("protonet-glyphs-5w1s", path)
    path.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=path)


def test_apply_overrides_does_not_mutate_input():
    base = {"train": {"meta_steps": 1}}
    apply_overrides(base, ["train.meta_steps=2"])
    assert base == {"train": {"meta_steps": 1}}
