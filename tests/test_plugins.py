"""Your own registered parts: named as plugins, recorded by the run, rebuilt by eval."""

import json
import sys

import pytest

from metazoo import models
from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.engine.evaluate import evaluate_run
from metazoo.engine.train import train
from metazoo.errors import ConfigError

MODULE = '''
import math
from torch import nn
from metazoo import models

class Tiny(nn.Module):
    def __init__(self, input_shape):
        super().__init__()
        self.input_shape, self.feature_dim = tuple(input_shape), 8
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8))

    def forward(self, x):
        return self.net(x)

models.BACKBONES.add(models.BackboneSpec("{name}", Tiny, lambda m, shape: Tiny(shape),
                                         "a user's backbone", ("image",)))
'''
FAST = ["train.meta_steps=3", "eval.every=0", "eval.episodes=4", "train.progress=false",
        "train.tensorboard=false"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """An importable module `user_nets_<id>` registering backbone `tiny_<id>`; unregistered and
    forgotten afterwards."""
    ident = tmp_path.name.replace("-", "_")[-12:]
    name, backbone = f"user_nets_{ident}", f"tiny_{ident}"
    (tmp_path / f"{name}.py").write_text(MODULE.format(name=backbone))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, backbone
    sys.modules.pop(name, None)
    models.BACKBONES._specs.pop(backbone, None)


def test_a_run_records_the_module_of_a_registered_backbone(tmp_path, user_module):
    name, backbone = user_module
    __import__(name)  # registered from Python, not named as a plugin
    run = tmp_path / "run"
    train(load_config(overrides=[f"model.name={backbone}", *FAST]), run)
    assert json.loads((run / "config.json").read_text())["plugins"] == [name]
    sys.modules.pop(name)
    models.BACKBONES._specs.pop(backbone)  # a fresh process: nothing registered
    result, _ = evaluate_run(run, episodes=4)  # the run imports the module again
    assert backbone in models.names() and 0.0 <= result.mean <= 1.0


def test_the_cli_imports_plugin_modules_first(tmp_path, user_module, capsys):
    name, backbone = user_module
    assert main(["config", "--plugin", name, "--set", f"model.name={backbone}"]) == 0
    assert f"- {name}" in capsys.readouterr().out


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="plugin module 'no_such_mod' cannot be imported"):
        load_config(overrides=["plugins=[no_such_mod]"])
    with pytest.raises(ConfigError, match=r"script \(__main__\)"):
        load_config(overrides=["plugins=[__main__]"])


def test_a_plugin_in_the_current_directory_is_found_as_python_m_would(tmp_path, monkeypatch):
    from metazoo.plugins import import_plugins

    (tmp_path / "here_plugin_mod.py").write_text("FOUND = True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    import_plugins(["here_plugin_mod"])
    assert sys.modules.pop("here_plugin_mod").FOUND
