"""`metazoo.Trainer`: objects of a user's program get the whole run folder, and the folder
records how to rebuild them (or refuses in one line where nothing can)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from metazoo import ConfigError, Trainer, algorithms
from metazoo.cli import main
from metazoo.data.torch_dataset import to_class_dataset
from metazoo.engine import checkpoint
from metazoo.tasks import EpisodeSampler
from tests.conftest import REPO
from tests.trainer_parts import Clusters, Net, make_net, make_splits

FAST = {"data.ways": 5, "data.queries": 3, "eval.queries": 3, "train.meta_steps": 60,
        "train.outer_lr": 0.02, "eval.every": 20, "eval.val_episodes": 10, "eval.episodes": 50,
        "train.progress": False, "train.tensorboard": False}


def weights(path):
    return checkpoint.model_state(checkpoint.load(path)[0])


def test_a_module_and_torch_datasets_train_protonet_into_a_run_folder(tmp_path):
    torch.manual_seed(1)
    net = Net((16,))
    first = net.net[1].weight.detach().clone()
    run = tmp_path / "run"
    out = Trainer(run, backbone=net, dataset=make_splits(), algorithm="protonet",
                  config=FAST).fit()
    assert out["accuracy"] > 0.7 and out["weights"] == "best"  # chance 0.2, untrained ~0.36
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows if r["split"] == "val"] == [20, 40, 60]
    assert (run / "checkpoint.safetensors").exists()
    assert json.loads((run / "results.json").read_text())["accuracy"] == out["accuracy"]
    # the module itself was trained (from its own weights) and holds the best ones now
    best = weights(run / "best.safetensors")
    assert not torch.equal(first, net.net[1].weight)
    assert torch.equal(net.net[1].weight, best["backbone.net.1.weight"])
    assert json.loads((run / "config.json").read_text())["plugins"][:2] == [
        "backbone=Net object@tests.trainer_parts",
        "dataset=mapping of Clusters@tests.trainer_parts"]


def test_a_stopped_run_resumed_equals_one_never_stopped(tmp_path):
    def trainer(run, steps):
        torch.manual_seed(3)
        return Trainer(run, backbone=Net((16,)), dataset=make_splits(),
                       config={**FAST, "train.meta_steps": steps, "eval.every": 4,
                               "eval.episodes": 8, "train.log_every": 2})

    trainer(tmp_path / "whole", 8).fit()
    trainer(tmp_path / "parts", 4).fit()
    resumed = trainer(tmp_path / "parts", 8).fit(resume=True)
    a, b = weights(tmp_path / "whole/checkpoint.safetensors"), \
        weights(tmp_path / "parts/checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole = json.loads((tmp_path / "whole/results.json").read_text())
    assert resumed["accuracy"] == whole["accuracy"]
    assert json.loads((tmp_path / "parts/resumes.json").read_text())[0]["from_step"] == 4


def test_importable_factories_are_rebuilt_by_metazoo_eval_in_another_process(tmp_path):
    run = tmp_path / "run"
    out = Trainer(run, backbone=make_net, dataset=make_splits,
                  config={**FAST, "eval.every": 0}).fit()
    plugins = json.loads((run / "config.json").read_text())["plugins"]
    assert plugins[:2] == ["backbone=tests.trainer_parts:make_net",
                           "dataset=tests.trainer_parts:make_splits"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "metazoo.cli", "eval", str(run)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "results.eval.json").read_text())["accuracy"] == out["accuracy"]


def test_a_lambda_backbone_trains_but_metazoo_eval_refuses_it_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    trainer = Trainer(run, backbone=lambda shape: Net(shape), dataset=make_splits,
                      config={**FAST, "train.meta_steps": 2, "eval.every": 0,
                              "eval.episodes": 6})
    out = trainer.fit()
    assert trainer.evaluate().mean == out["accuracy"]  # the program that holds it can
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "<locals>.<lambda>@tests.test_trainer'" in err and "module level" in err \
        and "Trainer.evaluate" in err


def test_a_built_maml_object_is_trained_as_given(tmp_path):
    torch.manual_seed(0)
    maml = algorithms.build("maml", Net((16,)), ways=5, inner_steps=1, inner_lr=0.5)
    run = tmp_path / "run"
    out = Trainer(run, algorithm=maml, dataset=make_splits(),
                  config={**FAST, "train.meta_steps": 40, "eval.every": 0}).fit()
    saved = json.loads((run / "config.json").read_text())
    assert saved["algorithm"]["name"] == "maml" and saved["algorithm"]["inner_lr"] == 0.5
    assert saved["data"]["ways"] == saved["eval"]["ways"] == 5
    last = weights(run / "checkpoint.safetensors")  # the object itself trained, head included
    assert all(torch.equal(v, last[k]) for k, v in maml.state_dict().items())
    assert out["accuracy"] > 0.35  # chance 0.2; ~0.46 after these 40 steps


def test_a_task_source_of_the_users_trains(tmp_path):
    def sampler(split, classes, first, seed):
        ds = to_class_dataset(Clusters(classes, first, seed), 28, f"user/{split}")
        return EpisodeSampler(ds, 5, 1, 3, seed=0)

    tasks = {"train": sampler("train", 40, 0, 0), "val": sampler("val", 10, 40, 1),
             "test": sampler("test", 10, 50, 2)}
    run = tmp_path / "run"
    out = Trainer(run, backbone=make_net, tasks=tasks, config={
        k: v for k, v in FAST.items() if "queries" not in k and "ways" not in k}).fit()
    assert out["accuracy"] > 0.6 and (out["ways"], out["shots"], out["queries"]) == (5, 1, 3)


class NoWidth(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backbone": NoWidth(), "dataset": "glyphs"}, "needs a positive int `feature_dim`"),
    ({"backbone": 3}, "backbone must be an nn.Module or a factory"),
    ({"dataset": [1, 2]}, "dataset must be a mapping of split name"),
    ({"dataset": {"train": 1, "val": 2, "test": 3}}, r"split 'train' \(int\) is not a Dataset"),
    ({"dataset": {"train": Clusters(5, 0, 0)}}, "needs train, val and test splits"),
    ({"dataset": "glyphs", "tasks": {}}, "not both"),
    ({"algorithm": 1.5}, "algorithm must be a name"),
    ({"config": {"train.meta_stepz": 3}}, "unknown config key 'train.meta_stepz'"),
])
def test_bad_objects_are_one_line_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message) as e:
        Trainer(tmp_path / "run", **kwargs)
    assert "\n" not in str(e.value)


def test_a_factory_that_gives_no_feature_width_is_refused_before_training(tmp_path):
    trainer = Trainer(tmp_path / "run", backbone=lambda shape: NoWidth(), dataset=make_splits,
                      config=FAST)
    with pytest.raises(ConfigError, match=r"NoWidth.*feature_dim"):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
