"""FC100 (Oreshkin et al., "TADAM: Task dependent adaptive metric", NeurIPS 2018).

What: Fewshot-CIFAR100, CIFAR-100 split by super-class so that train, val and test share as
little as possible: 12 / 4 / 4 super-classes, i.e. 60 / 20 / 20 fine classes, all 600 32x32
images of each (the release's `train` and `test` files merged), read from the official
`cifar-100-python.tar.gz` by `metazoo.data.cifar100` (layout, download with MD5, cache). Classes
are named by their fine label and come in fine-label (alphabetical) order.

Split: `SUPERCLASS_INDICES`, the coarse labels of ElementAI/TADAM (the paper's code),
`datasets/create_dataset_cifar100.py` (`class_split`), also listed with names in the paper's
appendix (`paper/main.tex`, "Few-shot CIFAR100 details"); `SUPERCLASSES` are their names in the
release's coarse-label order (`cifar100.COARSE_LABEL_NAMES`).
"""

from __future__ import annotations

from pathlib import Path

from metazoo.data import cifar100
from metazoo.data.base import DatasetSpec
from metazoo.data.check import DataCheck

NAME = "fc100"
SPLITS = ("train", "val", "test")
SUPERCLASS_INDICES: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    "val": (8, 11, 13, 16),
    "test": (0, 7, 12, 14),
}
SUPERCLASSES: dict[str, tuple[str, ...]] = {
    split: tuple(cifar100.COARSE_LABEL_NAMES[i] for i in idx)
    for split, idx in SUPERCLASS_INDICES.items()}
CLASSES: dict[str, tuple[str, ...]] = {
    split: tuple(f for coarse, fine in cifar100.TAXONOMY if coarse in names for f in fine)
    for split, names in SUPERCLASSES.items()}
NUM_CLASSES = {"train": 60, "val": 20, "test": 20}


def check(root: Path) -> DataCheck:
    """Whether the CIFAR-100 archive (or its extracted folder) is under `root`."""
    return cifar100.check(root, NAME)


load = cifar100.split_loader(NAME, CLASSES)


SPEC = DatasetSpec(NAME, load, "images", SPLITS,
                   "Oreshkin et al. 2018: CIFAR-100 by super-class, 60/20/20 classes, 32x32 RGB",
                   True, False, image_size=cifar100.IMAGE_SIZE, check=check)
