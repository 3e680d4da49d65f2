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


class Clusters(torch.utils.data.Dataset):
    """A user's feature vectors: each class a Gaussian cluster in 16 dimensions (lists of
    floats, as a CSV reader gives them), labels offset by `first`."""

    def __init__(self, classes: int, first: int, seed: int, per_class: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        centres = 3 * torch.randn(classes, 16, generator=g)
        x = centres.repeat_interleave(per_class, 0) + torch.randn(classes * per_class, 16,
                                                                 generator=g)
        self.rows = x.tolist()
        self.labels = (torch.arange(classes).repeat_interleave(per_class) + first).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.rows[i], self.labels[i]


def test_feature_vectors_train_with_an_mlp_and_beat_chance(tmp_path):
    splits = {"train": Clusters(40, 0, 0), "val": Clusters(10, 40, 1),
              "test": Clusters(10, 50, 2)}
    spec = register_torch_dataset("user_vectors", splits)
    try:
        assert spec.kind == "features"
        ds = spec.load("train", root=None, download=False, image_size=28, seed=0)
        assert ds.image_shape == (16,) and ds.images.dtype == torch.float32
        assert torch.allclose(ds.as_float(torch.tensor([0])),
                              torch.tensor([splits["train"].rows[0]]))  # stored as given
        run = tmp_path / "run"
        out = train(load_config(overrides=[
            "data.name=user_vectors", "model.name=mlp", "model.widths=[32]",
            "algorithm.name=protonet", "data.ways=5", "data.queries=3", "eval.queries=3",
            "train.meta_steps=30", "eval.every=0", "eval.episodes=50", "train.progress=false",
            "train.tensorboard=false"]), run)
        assert out["accuracy"] > 0.6  # chance is 0.2; the clusters are well apart
        result, _ = evaluate_run(run)
        assert result.mean == out["accuracy"]  # rebuilt from the registry, same episodes
    finally:
        DATASETS._specs.pop("user_vectors", None)


def test_ragged_or_broken_feature_vectors_are_refused():
    from metazoo.data.torch_dataset import feature_rows

    with pytest.raises(DataError, match=r"one length \(3\)"):
        feature_rows([[1.0, 2.0, 3.0], [1.0, 2.0]], "v/train")
    with pytest.raises(DataError, match="NaN or infinity"):
        feature_rows([[1.0, float("nan")]], "v/train")
    with pytest.raises(DataError, match="rotations apply to images"):
        to_class_dataset(Clusters(2, 0, 0), 28, "v/train").with_rotations("r")
