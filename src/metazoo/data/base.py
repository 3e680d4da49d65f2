"""`ClassDataset`: every example of one split in one tensor, grouped by class.

Episodes are index arithmetic on this tensor plus one float conversion, so sampling costs
microseconds. Images are `[M, C, H, W]` uint8 with ink/foreground high (255); feature vectors
(dataset kind "features") are `[M, D]` float32, used as they are. Rows are sorted by class.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from torch import Tensor

from metazoo.errors import DataError

if TYPE_CHECKING:
    from metazoo.data.check import DataCheck


@dataclass(frozen=True, eq=False)
class ClassDataset:
    """One split of a labelled dataset of images or feature vectors, held in memory.

    Attributes:
        images: `[M, C, H, W]` uint8 images, or `[M, D]` float32 feature vectors; rows sorted
            by label.
        labels: `[M]` int64 class ids `0..num_classes-1`, non-decreasing.
        class_names: one name per class (e.g. "Latin/character03" or "Latin/character03/rot90").
        name: the split's name, e.g. "omniglot/train"; part of every episode's seed.
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    name: str
    class_counts: Tensor = field(init=False, repr=False)
    class_offsets: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.images.dtype, self.images.dim()) not in ((torch.uint8, 4), (torch.float32, 2)):
            raise DataError(f"dataset '{self.name}': rows must be uint8 images [M, C, H, W] or "
                            f"float32 feature vectors [M, D], got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"dataset '{self.name}': {self.labels.numel()} labels for "
                            f"{self.images.shape[0]} images")
        if self.images.shape[0] == 0:
            raise DataError(f"dataset '{self.name}' has no images")
        if bool((self.labels[1:] < self.labels[:-1]).any()):
            raise DataError(f"dataset '{self.name}': rows must be sorted by label")
        counts = torch.bincount(self.labels, minlength=len(self.class_names))
        if counts.numel() != len(self.class_names) or bool((counts == 0).any()):
            last = len(self.class_names) - 1
            raise DataError(f"dataset '{self.name}': labels must cover 0..{last}"
                            " with at least one image each")
        object.__setattr__(self, "class_counts", counts)
        object.__setattr__(self, "class_offsets", torch.cumsum(counts, 0) - counts)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one input: `(C, H, W)` for images, `(D,)` for feature vectors."""
        return tuple(int(n) for n in self.images.shape[1:])

    @property
    def features(self) -> bool:
        """Whether the rows are feature vectors (float32 `[M, D]`) rather than images."""
        return self.images.dim() == 2

    def __len__(self) -> int:
        return self.images.shape[0]

    def as_float(self, index: Tensor) -> Tensor:
        """Rows `index` (any shape `S`) as float32, shape `[*S, C, H, W]` (images, scaled to
        [0, 1]) or `[*S, D]` (feature vectors, as stored)."""
        rows = self.images[index]  # a copy (advanced indexing): the caller may write to it
        return rows if self.features else rows.to(torch.float32).div_(255.0)

    def select_classes(self, classes: Tensor | list[int], name: str) -> ClassDataset:
        """A new split made of the given classes (relabelled 0..len-1 in the given order)."""
        cls = torch.as_tensor(classes, dtype=torch.long)
        rows = torch.cat([torch.arange(int(self.class_offsets[c]),
                                       int(self.class_offsets[c] + self.class_counts[c]))
                          for c in cls.tolist()])
        labels = torch.repeat_interleave(torch.arange(cls.numel()), self.class_counts[cls])
        return ClassDataset(self.images[rows], labels,
                            tuple(self.class_names[c] for c in cls.tolist()), name)

    def with_rotations(self, name: str) -> ClassDataset:
        """Each class also at 90, 180 and 270 degrees, as new classes (Santoro et al. 2016)."""
        if self.features:
            raise DataError(f"dataset '{self.name}': rotations apply to images, not to feature "
                            "vectors")
        _c, h, w = self.image_shape
        if h != w:
            raise DataError(f"dataset '{self.name}': rotations as classes need square images")
        counts = self.class_counts
        per_class = torch.split(self.images, counts.tolist())
        images, names, labels = [], [], []
        for k in range(4):
            for i, block in enumerate(per_class):
                images.append(torch.rot90(block, k, dims=(2, 3)))
                names.append(self.class_names[i] + ("" if k == 0 else f"/rot{90 * k}"))
        for j in range(len(names)):
            labels.append(torch.full((int(counts[j % self.num_classes]),), j, dtype=torch.long))
        return ClassDataset(torch.cat(images), torch.cat(labels), tuple(names), name)


class Loader(Protocol):
    """`load(split, *, root, download, image_size, seed)`: one split of a dataset."""

    def __call__(self, split: str, *, root: str | os.PathLike[str] | None, download: bool,
                 image_size: int, seed: int) -> ClassDataset: ...


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the library knows: what `metazoo list datasets` shows and how to load a split.

    Each dataset module defines one as `SPEC`; `metazoo/data/__init__.py` registers it.
    """

    name: str
    load: Loader | None  # None: nothing to load; the tasks layer draws the tasks (sinusoid)
    kind: Literal["images", "features", "regression"]
    splits: tuple[str, ...]
    description: str
    needs_files: bool  # False: generated by the library, no download
    ink_high: bool = False  # drawings stored as bright strokes on black (Omniglot, glyphs)
    image_size: int = 28  # the side its protocol resizes images to (84: miniImageNet, CUB)
    check: Callable[[Path], DataCheck] | None = None  # what `metazoo data check` runs
