"""A `torch.utils.data.Dataset` of labelled images as a metazoo dataset, with the whole trainer.

`register_torch_dataset("my_data", {"train": ds_a, "val": ds_b, "test": ds_c})` adds a dataset
named `my_data` whose splits are the given datasets (any object with `__len__` and
`__getitem__` returning `(image, label)`): `metazoo train --set data.name=my_data` then has
validation, checkpoints, logs, resume and evaluation as for a built-in dataset. Put the call in
a module of yours and name it as a plugin (`--plugin my_module`), so that `metazoo eval` can
rebuild the run (`metazoo.plugins`).

Feature vectors (1-D tensors, arrays or lists of numbers, one length for all) make a dataset of
kind "features": stored as float32 `[M, D]` and fed to the backbone as they are (use `model.name:
mlp`). Otherwise an item is an image: a PIL image, or a tensor / array `[C, H, W]` or `[H, W]`,
uint8 (0-255) or float (0-1); every image is resized to the run's `data.image_size`
(antialiased, as the folder dataset) and stored as uint8, grey when all images are, else RGB.
Class names are `dataset.classes[label]` where the dataset has them, else the label. Splits hold
disjoint classes (few-shot learning tests on classes it never trained on); a class in two splits is
refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image

from metazoo.data.base import ClassDataset, DatasetSpec
from metazoo.data.images import is_grayscale, to_gray, to_rgb
from metazoo.errors import ConfigError, DataError


class LabelledImages(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[Any, Any]: ...


def as_pil(image: Any, where: str) -> Image.Image:
    """A PIL image of `image` (PIL, or `[C, H, W]` / `[H, W]` uint8 0-255 or float 0-1)."""
    if isinstance(image, Image.Image):
        return image
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    if array.ndim not in (2, 3):
        raise DataError(f"{where}: an image must be [C, H, W] or [H, W], got shape "
                        f"{tuple(array.shape)}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
            raise DataError(f"{where}: a non-uint8 image must be float in [0, 1]")
        array = np.rint(array * 255).astype(np.uint8)
    return Image.fromarray(array)


def is_feature_vector(x: Any) -> bool:
    """Whether an item's input is a feature vector (1-D) rather than an image."""
    if isinstance(x, Image.Image):
        return False
    return (x.dim() if isinstance(x, torch.Tensor) else np.asarray(x).ndim) == 1


def feature_rows(xs: Sequence[Any], name: str) -> list[np.ndarray]:
    """Each 1-D input as a float32 vector; a one-line error for unequal lengths or non-numbers."""
    rows: list[np.ndarray] = []
    for i, x in enumerate(xs):
        v = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.number) or (rows and v.shape !=
                                                                   rows[0].shape):
            raise DataError(f"{name}[{i}]: feature vectors must be 1-D numbers of one length "
                            f"({rows[0].shape[0] if rows else '?'}), got {v.dtype} "
                            f"{tuple(v.shape)}")
        if not np.isfinite(v).all():
            raise DataError(f"{name}[{i}]: a feature vector holds NaN or infinity")
        rows.append(v.astype(np.float32))
    return rows


def to_class_dataset(dataset: LabelledImages, image_size: int, name: str) -> ClassDataset:
    """Every `(input, label)` of `dataset` as a `ClassDataset` sorted by class: images resized
    to `image_size`, feature vectors as they are."""
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise DataError(f"{name} is empty")
    labels = [int(label) for _, label in items]
    rows: Sequence[np.ndarray]
    if is_feature_vector(items[0][0]):
        rows = feature_rows([x for x, _ in items], name)
    else:
        images = [as_pil(img, f"{name}[{i}]") for i, (img, _) in enumerate(items)]
        grey = all(is_grayscale(img) for img in images)
        rows = [to_gray(img, image_size)[None] if grey else to_rgb(img, image_size)
                for img in images]
    classes = sorted(set(labels))
    names = getattr(dataset, "classes", None)
    class_names = tuple(str(names[c]) if isinstance(names, Sequence) and c < len(names)
                        else str(c) for c in classes)
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    index = {c: k for k, c in enumerate(classes)}
    return ClassDataset(torch.from_numpy(np.stack([rows[i] for i in order])),
                        torch.tensor([index[labels[i]] for i in order]), class_names, name)


def register_torch_dataset(name: str, splits: Mapping[str, LabelledImages],
                           description: str = "") -> DatasetSpec:
    """Register `splits` (split name -> dataset) as metazoo dataset `name`; returns its spec."""
    from metazoo.data import DATASETS

    return DATASETS.add(torch_dataset_spec(name, splits, description))


def torch_dataset_spec(name: str, splits: Mapping[str, LabelledImages],
                       description: str = "") -> DatasetSpec:
    """The spec `register_torch_dataset` registers, unregistered (`metazoo.parts`)."""
    if not {"train", "val", "test"} <= set(splits):
        raise ConfigError(f"dataset '{name}' needs train, val and test splits, got "
                          f"{', '.join(splits) or 'none'}")
    loaded: dict[tuple[str, int], ClassDataset] = {}

    def load(split: str, *, root: str | os.PathLike[str] | None, download: bool,
             image_size: int, seed: int) -> ClassDataset:
        del root, download, seed
        if split not in splits:
            raise ConfigError(f"dataset '{name}' has no split '{split}'; it has "
                              f"{', '.join(splits)}")
        if (split, image_size) not in loaded:
            loaded[split, image_size] = to_class_dataset(splits[split], image_size,
                                                         f"{name}/{split}")
        shared = set(loaded[split, image_size].class_names) & {
            c for (s, size), ds in loaded.items() if s != split and size == image_size
            for c in ds.class_names}
        if shared:
            raise DataError(f"dataset '{name}': class {sorted(shared)[0]} is in split '{split}' "
                            "and another split; few-shot splits hold disjoint classes")
        return loaded[split, image_size]

    train = splits["train"]
    kind: Literal["images", "features"] = (
        "features" if len(train) and is_feature_vector(train[0][0]) else "images")
    return DatasetSpec(name, load, kind, tuple(splits),
                       description or f"a torch Dataset of {kind} registered in code", False)
