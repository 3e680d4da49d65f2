"""A torch Dataset of labelled images trains, evaluates and resumes like a built-in dataset."""

import json

import pytest
import torch

from metazoo.config_files import load_config
from metazoo.data import DATASETS, get_spec
from metazoo.data.torch_dataset import as_pil, register_torch_dataset, to_class_dataset
from metazoo.engine.evaluate import evaluate_run
from metazoo.engine.train import train
from metazoo.errors import ConfigError, DataError
from tests.conftest import make_dataset


class Pairs(torch.utils.data.Dataset):
    """A user's dataset: float images in [0, 1] `[1, 28, 28]`, labels offset by `first`."""

    def __init__(self, classes: int, first: int, seed: int) -> None:
        ds = make_dataset(classes=classes, per_class=6, name="pairs", seed=seed)
        self.images, self.labels = ds.images.float() / 255, ds.labels + first
        self.classes = [f"c{i}" for i in range(first + classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_images_keep_their_values_and_classes_their_names():
    ds = Pairs(classes=3, first=5, seed=0)
    converted = to_class_dataset(ds, 28, "pairs/train")
    assert converted.class_names == ("c5", "c6", "c7") and converted.images.dtype == torch.uint8
    first = ds.images[ds.labels == 5][0]
    assert torch.equal(converted.images[0].float() / 255, (first * 255).round() / 255)
    with pytest.raises(DataError, match=r"float in \[0, 1\]"):
        as_pil(torch.full((1, 4, 4), 2.0), "x")


def test_a_registered_torch_dataset_gets_the_whole_trainer(tmp_path):
    splits = {"train": Pairs(12, 0, 0), "val": Pairs(5, 12, 1), "test": Pairs(5, 17, 2)}
    register_torch_dataset("user_pairs", splits)
    try:
        run = tmp_path / "run"
        train(load_config(overrides=[
            "data.name=user_pairs", "data.ways=5", "data.queries=3", "eval.queries=3",
            "model.hidden=8", "train.meta_steps=4", "eval.every=2", "eval.val_episodes=4",
            "eval.episodes=6", "train.progress=false", "train.tensorboard=false"]), run)
        trained = json.loads((run / "results.json").read_text())
        result, _ = evaluate_run(run)
        assert result.mean == trained["accuracy"]  # rebuilt from the registry, same episodes
        load = get_spec("user_pairs").load
        with pytest.raises(ConfigError, match="no split 'extra'"):
            load("extra", root=None, download=False, image_size=28, seed=0)
    finally:
        DATASETS._specs.pop("user_pairs", None)


def test_classes_shared_by_two_splits_and_missing_splits_are_refused():
    with pytest.raises(ConfigError, match="needs train, val and test"):
        register_torch_dataset("bad_pairs", {"train": Pairs(3, 0, 0)})
    register_torch_dataset("overlap_pairs", {"train": Pairs(4, 0, 0), "val": Pairs(4, 2, 1),
                                             "test": Pairs(3, 10, 2)})
    try:
        load = get_spec("overlap_pairs").load
        load("train", root=None, download=False, image_size=28, seed=0)
        with pytest.raises(DataError, match="class c2 is in split 'val' and another"):
            load("val", root=None, download=False, image_size=28, seed=0)
    finally:
        DATASETS._specs.pop("overlap_pairs", None)
