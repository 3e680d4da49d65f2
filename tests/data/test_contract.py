"""Every registered dataset keeps the contract that the tasks layer and the engine rely on.

Runs over `metazoo.data.DATASETS`. A dataset that needs files is tested on small files made by
a function in `FIXTURES` (its name -> a function that writes them and returns the data root), or
skipped with the reason; generated datasets are tested as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from metazoo import tasks
from metazoo.data import DATASETS, ClassDataset, DatasetSpec, get_spec, list_datasets, load_split
from metazoo.errors import ConfigError
from tests.data.test_cifar import make_cifar100
from tests.data.test_cub import make_cub
from tests.data.test_folder import make_folder
from tests.data.test_fungi import make_fungi
from tests.data.test_miniimagenet import make_miniimagenet_csv
from tests.data.test_omniglot import BACKGROUND, EVALUATION, counts, make_archive

SIZE = 20  # not the default 28: every loader must resize


def _omniglot(root: Path, mp: pytest.MonkeyPatch) -> Path:
    from metazoo.data import omniglot

    mp.setitem(omniglot.EXPECTED, "background", counts(BACKGROUND))
    mp.setitem(omniglot.EXPECTED, "evaluation", counts(EVALUATION))
    make_archive(root / "images_background.zip", BACKGROUND)
    make_archive(root / "images_evaluation.zip", EVALUATION, start_id=9)
    return root


def _folder(root: Path, mp: pytest.MonkeyPatch) -> Path:
    return make_folder(root / "images", classes=12, per_class=3)


def _cub(root: Path, mp: pytest.MonkeyPatch) -> Path:
    from metazoo.data import cub

    mp.setattr(cub, "EXPECTED", (8, 24))
    return make_cub(root)


def _fungi(root: Path, mp: pytest.MonkeyPatch) -> Path:
    from metazoo.data import fungi

    mp.setattr(fungi, "EXPECTED", (20, 60))
    return make_fungi(root, categories=20)


FIXTURES: dict[str, Callable[[Path, pytest.MonkeyPatch], Path]] = {
    "omniglot": _omniglot, "folder": _folder,
    "miniimagenet": lambda root, mp: make_miniimagenet_csv(root),
    "cifar_fs": lambda root, mp: make_cifar100(root), "fc100": lambda root, mp: make_cifar100(root),
    "cub": _cub, "fungi": _fungi}
IMAGES = [s.name for s in DATASETS if s.load is not None]
GENERATED = [s.name for s in DATASETS if s.load is None]


ROOTS: dict[str, Path] = {}  # data root of each dataset loaded by `splits`


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> Iterator[dict[str, dict[str, ClassDataset]]]:
    """Every split of every image dataset, loaded once (files from `FIXTURES`)."""
    out: dict[str, dict[str, ClassDataset]] = {}
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("home")
        mp.setenv("HOME", str(home))
        mp.setenv("METAZOO_DATA", str(home / "metazoo"))
        for name in IMAGES:
            spec = get_spec(name)
            root = home / name
            if spec.needs_files:
                if name not in FIXTURES:
                    continue
                root = FIXTURES[name](tmp_path_factory.mktemp(name), mp)
            ROOTS[name] = root
            out[name] = {s: load_split(name, s, root=root, image_size=SIZE, seed=0)
                         for s in spec.splits}
        yield out


def _loaded(splits: dict[str, dict[str, ClassDataset]], name: str) -> dict[str, ClassDataset]:
    if name not in splits:
        pytest.skip(f"dataset '{name}' needs files and has no entry in FIXTURES "
                    "(tests/data/test_contract.py)")
    return splits[name]


def test_registry_lists_each_dataset_once_with_what_list_shows():
    assert [s.name for s in list_datasets()] == [s.name for s in DATASETS]
    assert len(set(DATASETS.names())) == len(DATASETS) >= 4
    for spec in DATASETS:
        assert spec.description and spec.splits and spec.kind in ("images", "regression")
        assert (spec.load is None) == (spec.kind == "regression"), spec.name
        assert not (spec.load is None and spec.needs_files), spec.name


def test_every_file_needing_dataset_has_a_fixture():
    assert {s.name for s in DATASETS if s.needs_files} <= set(FIXTURES)


def test_unknown_names_and_splits_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown dataset 'glyph'; did you mean 'glyphs'.*"
                                          "choose one of glyphs, sinusoid, "):
        get_spec("glyph")
    for name in IMAGES:
        with pytest.raises(ConfigError, match=f"dataset '{name}' has no split 'nope'"):
            load_split(name, "nope")
    for name in GENERATED:
        with pytest.raises(ConfigError, match="draws regression tasks; it has no examples"):
            load_split(name, "train")


@pytest.mark.parametrize("name", IMAGES)
def test_every_split_is_a_class_dataset_of_the_asked_size(splits, name):
    spec, loaded = get_spec(name), _loaded(splits, name)
    assert set(loaded) == set(spec.splits)
    for split, ds in loaded.items():
        assert isinstance(ds, ClassDataset), split
        c, h, w = ds.image_shape
        assert (h, w) == (SIZE, SIZE) and c in (1, 3) and ds.images.dtype == torch.uint8, split
        assert ds.num_classes >= 1 and len(ds) >= ds.num_classes, split
        if spec.ink_high:  # bright strokes on a black background
            assert float(ds.images.float().mean()) < 128, split
    # the split name seeds every episode: two splits never share one
    assert len({ds.name for ds in loaded.values()}) == len(loaded)


@pytest.mark.parametrize("name", IMAGES)
def test_train_val_test_classes_are_disjoint(splits, name):
    loaded = _loaded(splits, name)
    if not {"train", "val", "test"} <= set(loaded):
        pytest.skip(f"{name} has no train/val/test splits")
    names = {s: set(loaded[s].class_names) for s in ("train", "val", "test")}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]


@pytest.mark.parametrize("name", IMAGES)
def test_episodes_of_every_split_have_the_promised_shape(splits, name):
    loaded = _loaded(splits, name)
    for split, ds in loaded.items():
        ways = min(3, ds.num_classes)
        shots = 1
        queries = min(2, int(ds.class_counts.min()) - shots)
        src = tasks.make_task_source(name, split, ways=ways, shots=shots, queries=queries,
                                     seed=0, root=ROOTS[name], image_size=SIZE)
        assert src.input_shape == ds.image_shape
        b = src.batch(0, 2)
        assert b.support_x.shape == (2, ways * shots, *ds.image_shape)
        assert b.query_x.shape == (2, ways * queries, *ds.image_shape)
        assert b.kind == "classification" and b.support_x.dtype == torch.float32
        assert float(b.support_x.min()) >= 0.0 and float(b.support_x.max()) <= 1.0
        assert torch.equal(src.batch(0, 2).support_x, b.support_x)  # a pure function


@pytest.mark.parametrize("name", GENERATED)
def test_generated_task_families_make_tasks_of_the_promised_shape(name):
    spec = get_spec(name)
    assert name in tasks.FAMILIES, "a dataset without a loader needs a task family"
    batches = {}
    for split in spec.splits:
        src = tasks.make_task_source(name, split, ways=1, shots=4, queries=3, seed=0)
        b = src.batch(0, 2)
        assert src.input_shape == tuple(b.support_x.shape[2:]) and src.ways == 1
        assert b.support_x.shape[:2] == (2, 4) and b.query_x.shape[:2] == (2, 3)
        assert b.kind == spec.kind == "regression" and bool(torch.isfinite(b.query_y).all())
        again = tasks.make_task_source(name, split, ways=1, shots=4, queries=3, seed=0)
        assert torch.equal(again.batch(0, 2).query_y, b.query_y)
        batches[split] = b
    firsts = [b.support_x[0] for b in batches.values()]
    assert all(not torch.equal(firsts[0], f) for f in firsts[1:])  # splits differ


def test_a_dataset_added_for_a_test_is_found_then_gone():
    def load(split, *, root, download, image_size, seed):
        raise AssertionError("not loaded here")

    spec = DatasetSpec("probe", load, "images", ("train",), "probe", False)
    with DATASETS.temporarily(spec):
        assert get_spec("probe") is spec and spec in list_datasets()
    with pytest.raises(ConfigError, match="unknown dataset 'probe'"):
        get_spec("probe")
