"""CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form solvers", ICLR 2019).

What: CIFAR-100 split by fine class into 64 train, 16 val and 20 test classes, all 600 32x32
images of each class (the release's `train` and `test` files merged), read from the official
`cifar-100-python.tar.gz` by `metazoo.data.cifar100` (layout, download with MD5, cache). Classes
are named by their CIFAR-100 fine label and come in fine-label (alphabetical) order.

Split: `CLASSES`, the fine label names of bertinetto/r2d2 (the paper's code), commit 9ed0090,
`cifar-fs_splits/{train,val,test}.txt` (later removed from that repository; torchmeta's
`datasets/assets/cifar100/cifar-fs/*.json` list the same classes), in those files' order.
"""

from __future__ import annotations

from pathlib import Path

from metazoo.data import cifar100
from metazoo.data.base import DatasetSpec
from metazoo.data.check import DataCheck

NAME = "cifar_fs"
SPLITS = ("train", "val", "test")
CLASSES: dict[str, tuple[str, ...]] = {
    "train": (
        "train", "skyscraper", "turtle", "raccoon", "spider", "orange", "castle", "keyboard",
        "clock", "pear", "girl", "seal", "elephant", "apple", "aquarium_fish", "bus", "mushroom",
        "possum", "squirrel", "chair", "tank", "plate", "wolf", "road", "mouse", "boy", "shrew",
        "couch", "sunflower", "tiger", "caterpillar", "lion", "streetcar", "lawn_mower", "tulip",
        "forest", "dolphin", "cockroach", "bear", "porcupine", "bee", "hamster", "lobster",
        "bowl", "can", "bottle", "trout", "snake", "bridge", "pine_tree", "skunk", "lizard",
        "cup", "kangaroo", "oak_tree", "dinosaur", "rabbit", "orchid", "willow_tree", "ray",
        "palm_tree", "mountain", "house", "cloud",
    ),
    "val": (
        "otter", "motorcycle", "television", "lamp", "crocodile", "shark", "butterfly", "beaver",
        "beetle", "tractor", "flatfish", "maple_tree", "camel", "crab", "sea", "cattle",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
        "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe",
        "whale", "woman", "worm",
    ),
}
NUM_CLASSES = {"train": 64, "val": 16, "test": 20}


def check(root: Path) -> DataCheck:
    """Whether the CIFAR-100 archive (or its extracted folder) is under `root`."""
    return cifar100.check(root, NAME)


load = cifar100.split_loader(NAME, CLASSES)


SPEC = DatasetSpec(NAME, load, "images", SPLITS,
                   "Bertinetto et al. 2019: CIFAR-100 by class, 64/16/20 classes, 32x32 RGB",
                   True, False, image_size=cifar100.IMAGE_SIZE, check=check)
