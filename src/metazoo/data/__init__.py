"""Datasets by name: where classes and examples come from.

Each dataset is one module here that defines `SPEC`, a `DatasetSpec` with its loader
(`load(split, *, root, download, image_size, seed) -> ClassDataset`); the import list below is
the registration list, in the order `metazoo list datasets` shows. `load_split(name, split, ...)`
returns a split's `ClassDataset`. Episodes and other task distributions are the layer above
(`metazoo.tasks`, `make_task_source`): nothing here imports it.
"""

from __future__ import annotations

from pathlib import Path

from metazoo.data import (
    cifar_fs,
    cub,
    fc100,
    folder,
    fungi,
    glyphs,
    miniimagenet,
    omniglot,
    sinusoid,
    sinusoid_line,
)
from metazoo.data.base import ClassDataset, DatasetSpec, Loader
from metazoo.errors import ConfigError
from metazoo.fields import did_you_mean
from metazoo.registry import Registry

DATASETS: Registry[DatasetSpec] = Registry("dataset", "metazoo list datasets")
for _module in (glyphs, sinusoid, sinusoid_line, omniglot, miniimagenet, cifar_fs, fc100, cub,
                fungi, folder):
    DATASETS.add(_module.SPEC)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset `name`; unknown names raise `ConfigError` with a suggestion."""
    if name not in DATASETS:
        known = [s.name for s in DATASETS]
        raise ConfigError(f"unknown dataset '{name}'{did_you_mean(name, known)}; choose one of "
                          f"{', '.join(known)}")
    return DATASETS.get(name)


def list_datasets() -> list[DatasetSpec]:
    """Every known dataset, in registration order."""
    return list(DATASETS)


def load_split(name: str, split: str, *, root: str | Path | None = None, download: bool = False,
               image_size: int = 28, seed: int = 0) -> ClassDataset:
    """The examples of `split` of dataset `name` (images or feature vectors) as a
    `ClassDataset`."""
    spec = get_spec(name)
    if spec.kind == "regression" or spec.load is None:
        raise ConfigError(f"dataset '{name}' draws regression tasks; it has no examples to load")
    if split not in spec.splits:
        raise ConfigError(f"dataset '{name}' has no split '{split}'; choose one of "
                          f"{', '.join(spec.splits)}")
    return spec.load(split, root=root, download=download, image_size=image_size, seed=seed)


__all__ = ["DATASETS", "ClassDataset", "DatasetSpec", "Loader", "get_spec", "list_datasets",
           "load_split"]
