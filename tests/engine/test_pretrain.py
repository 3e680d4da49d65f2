"""`metazoo pretrain`: the pre-training stage, its weights file and `model.pretrained`."""

import dataclasses
import json
import re

import pytest
import torch

from metazoo import algorithms, models
from metazoo.cli import main
from metazoo.config import ModelConfig, PretrainConfig
from metazoo.config_files import load_config
from metazoo.engine.log import read
from metazoo.engine.pretrain import Batches, Classifier, pretrain, train_split_pass
from metazoo.errors import CheckpointError, ConfigError
from metazoo.models import pretrained
from tests.conftest import make_dataset

FAST = ["data.name=synthetic", "model.hidden=16", "pretrain.batch_size=16", "pretrain.lr=0.01",
        "train.progress=false", "train.tensorboard=false", "train.log_every=20",
        "eval.val_episodes=20", "eval.queries=3"]


def _cfg(*extra):
    return load_config(overrides=FAST + list(extra))


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_pretraining_reaches_high_accuracy_on_its_training_classes(tmp_path, synthetic_data,
                                                                    head):
    out = pretrain(_cfg("pretrain.steps=60", f"pretrain.head={head}"), tmp_path)
    for name in ("config.json", "backbone.safetensors", "metrics.csv", "results.json"):
        assert (tmp_path / name).exists(), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(out))
    # 24 classes, 192 images, 5 epochs: a head trained on them classifies them (chance 1/24)
    assert results["train_acc"] >= 0.95, results["train_acc"]
    assert results["steps"] == 60 and results["classes"] == 24 and results["epochs"] == 5.0
    assert results["val"]["accuracy"] > 0.5  # 5-way nearest centroid on unseen classes
    rows = read(tmp_path / "metrics.csv")
    assert [(int(r["step"]), r["split"]) for r in rows] == [(20, "train"), (40, "train"),
                                                             (60, "train"), (60, "val")]
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])


def test_weights_round_trip_into_model_pretrained(tmp_path, synthetic_data):
    pretrain(_cfg("pretrain.steps=12", "eval.val_episodes=0"), tmp_path)
    weights = pretrained.load(tmp_path)  # the folder, or the file itself
    assert weights.path == pretrained.load(tmp_path / "backbone.safetensors").path
    assert weights.meta["model"]["hidden"] == 16 and weights.meta["input_shape"] == [1, 28, 28]
    backbone = models.build_from_config(ModelConfig(hidden=16, pretrained=str(tmp_path)),
                                        (1, 28, 28))
    state = backbone.state_dict()
    assert state.keys() == weights.state.keys()
    assert all(torch.equal(state[k], weights.state[k]) for k in state)
    assert weights.base_mean is not None and weights.base_mean.shape == (backbone.feature_dim,)
    assert torch.equal(backbone.pretrained_mean, weights.base_mean)
    alg = algorithms.build("simpleshot", backbone, ways=5)  # CL2N's centre comes with it
    assert torch.equal(alg.base_mean, weights.base_mean)
    fresh = models.build_from_config(ModelConfig(hidden=16), (1, 28, 28))
    assert not torch.equal(fresh.state_dict()["features.0.0.weight"],
                           state["features.0.0.weight"])


def test_train_split_pass_is_the_mean_feature_and_the_head_accuracy():
    """With a backbone without batch norm (features independent of the batching) the pass
    equals one big hand computation over every image."""
    ds = make_dataset(classes=6, per_class=5)
    cfg = dataclasses.replace(load_config(), pretrain=PretrainConfig(batch_size=4))
    torch.manual_seed(0)
    net = Classifier(models.build("mlp", input_shape=(1, 28, 28), hidden=(8,)), 6,
                     cfg.pretrain, seed=0)
    mean, acc = train_split_pass(net, Batches(ds, cfg), torch.device("cpu"))
    with torch.no_grad():
        z = net.backbone(ds.as_float(torch.arange(len(ds))))
        expected_acc = (net.logits(z).argmax(-1) == ds.labels).float().mean().item()
    torch.testing.assert_close(mean, z.mean(0))
    assert acc == pytest.approx(expected_acc)


def test_two_command_flow_then_eval_without_the_pretraining(tmp_path, synthetic_data, capsys):
    pre, run = tmp_path / "pre", tmp_path / "run"
    assert main(["pretrain", "--set", *FAST, "pretrain.steps=36", "--out", str(pre)]) == 0
    assert f"model.pretrained={pre}" in capsys.readouterr().out
    assert main(["train", "--set", "data.name=synthetic", "data.ways=5", "data.queries=3",
                 "model.hidden=16", f"model.pretrained={pre}", "algorithm.name=simpleshot",
                 "train.meta_steps=0",
                 "eval.episodes=20", "eval.queries=3", "eval.every=0", "train.progress=false",
                 "--out", str(run)]) == 0
    accuracy = json.loads((run / "results.json").read_text())["accuracy"]
    assert accuracy > 0.5
    for f in pre.iterdir():  # the run's checkpoint holds every weight: eval needs no pre-training
        f.unlink()
    pre.rmdir()
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "results.json").read_text())["accuracy"] == accuracy


def test_a_pretraining_folder_is_not_overwritten(tmp_path, synthetic_data, capsys):
    pretrain(_cfg("pretrain.steps=2", "eval.val_episodes=0"), tmp_path)
    with pytest.raises(CheckpointError, match="already holds a run"):
        pretrain(_cfg("pretrain.steps=2"), tmp_path)
    before = (tmp_path / "backbone.safetensors").read_bytes()
    assert main(["train", "--set", "data.name=synthetic", "--out", str(tmp_path)]) == 2
    assert "holds a pre-training" in capsys.readouterr().err
    assert (tmp_path / "backbone.safetensors").read_bytes() == before


def test_a_failed_start_leaves_nothing(tmp_path, synthetic_data):
    with pytest.raises(ConfigError, match=r"pretrain\.batch_size=500 is more than the 192 images"):
        pretrain(_cfg("pretrain.batch_size=500"), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_time_limit_stops_after_a_step_and_saves(tmp_path, synthetic_data):
    out = pretrain(_cfg("pretrain.steps=50", "train.time_limit_min=1e-9",
                        "eval.val_episodes=0"), tmp_path)
    assert out["steps"] == 1 and "time_limit_min" in out["stopped"]
    assert pretrained.load(tmp_path).meta["steps"] == 1


def test_schedule_and_cosine_scale_follow_the_papers():
    from metazoo.engine.pretrain import lr_factor

    rfs = PretrainConfig(lr_milestones=(60, 80), lr_gamma=0.1)
    assert [lr_factor(rfs, e * 10, 10) for e in (0, 59, 60, 79, 80)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01])
    backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=8)
    cos = PretrainConfig(head="cosine")
    assert float(Classifier(backbone, 200, cos, 0).scale) == 2.0  # Chen et al.'s distLinear
    assert float(Classifier(backbone, 201, cos, 0).scale) == 10.0
    assert float(Classifier(backbone, 5, PretrainConfig(head="cosine", scale=3.0), 0).scale) == 3


def _write_pretraining(tmp_path, hidden=16):
    folder = tmp_path / f"pre{hidden}"
    backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=hidden)
    pretrained.save(folder / pretrained.FILE, backbone.state_dict(), torch.zeros(hidden),
                    {"model": {"name": "conv4", "hidden": hidden}, "input_shape": [1, 28, 28]})
    return folder


@pytest.mark.parametrize(("setting", "shape", "message"), [
    ({"pretrained": "missing"}, (1, 28, 28), "does not exist; pre-train first"),
    ({"pretrained": "empty"}, (1, 28, 28), "holds no backbone.safetensors"),
    ({"pretrained": "damaged"}, (1, 28, 28), "is not a readable weights file"),
    ({"name": "mlp"}, (1, 28, 28), "holds conv4 weights but model.name is mlp"),
    ({"hidden": 8}, (1, 28, 28),
     "of another shape (first: features.0.0.weight [16, 1, 3, 3] vs [8, 1, 3, 3])"),
    ({}, (1, 32, 32), "trained on inputs of shape (1, 28, 28) but this run's are (1, 32, 32)"),
])
def test_bad_pretrained_weights_are_one_line_errors(tmp_path, setting, shape, message):
    folder = _write_pretraining(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").write_bytes(b"not safetensors")
    where = str(tmp_path / setting.pop("pretrained")) if "pretrained" in setting else str(folder)
    model = ModelConfig(pretrained=where, **{"hidden": 16, **setting})
    with pytest.raises(ConfigError) as info:
        models.build_from_config(model, shape)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_bad_pretrained_path_is_one_line_on_the_command_line(tmp_path, synthetic_data, capsys):
    assert main(["train", "--set", "data.name=synthetic", "data.queries=3",
                 "model.pretrained=nowhere", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metazoo: error: model.pretrained 'nowhere' does not exist")
    assert "\n" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("pretrain.lr=0", "pretrain.lr must be > 0"),
    ("pretrain.batch_size=0", "pretrain.batch_size must be > 0"),
    ("pretrain.steps=0", "pretrain.steps must be > 0"),
    ("pretrain.momentum=1", "pretrain.momentum must be in [0, 1)"),
    ("pretrain.lr_milestones=[-1]", "pretrain.lr_milestones must be >= 0"),
    ("pretrain.head=mlp", "must be one of linear, cosine"),
])
def test_bad_pretrain_settings_raise(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=[override])
