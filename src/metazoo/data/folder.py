"""Your own images: a folder with one sub-folder per class.

What: `root/<class>/<image>` with png/jpg/jpeg/bmp/gif/webp files of any size and mode. Every image
is resized to `image_size` x `image_size` (antialiased, aspect ratio not kept) and stored as is (no
inversion: unlike Omniglot we cannot know which side is the ink). The dataset is grayscale (1
channel) when every image carries no colour (1-bit, grayscale, or RGB with R = G = B), else RGB
(3 channels); transparent pixels become white. A GIF contributes its first frame.

Splits: `all` (every class), or `train`/`val`/`test`: the class names listed one per line in
`train.txt`, `val.txt` and `test.txt` beside the class folders when the folder has them (a fixed,
published split), else a seeded 70/10/20 split of the classes (the run's `seed` chooses it, so
two runs with one seed see the same classes). Decoded images are cached
under `<data root>/cache` (never inside your folder, where a new sub-folder would become a class),
keyed by every file's path, size and mtime, so editing the folder invalidates the cache.

`load_class_folder` and `load_images` read a support folder and a flat query folder for the
`predict` command.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metazoo.data.base import ClassDataset, DatasetSpec
from metazoo.data.cache import cache_key, cached_dataset, resolve_root, writable_cache_dir
from metazoo.data.check import DataCheck
from metazoo.data.images import (
    IMAGE_EXTENSIONS,
    is_grayscale,
    list_images,
    open_image,
    to_gray,
    to_rgb,
)
from metazoo.errors import ConfigError, DataError

VERSION = 1  # bump when decoding changes, so stale caches are not reused
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLITS = ("train", "val", "test", "all")


def _folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; give a folder with one "
                        "sub-folder of images per class")
    return folder


def scan_classes(root: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sub-folder names, sorted) and each class's image files.

    Raises:
        DataError: no class folders, or a class folder without images.
    """
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image>")
    files = [list_images(f) for f in folders]
    empty = [f.name for f, fs in zip(folders, files, strict=True) if not fs]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty[:5])} hold no images "
                        "(png/jpg/jpeg/bmp/gif/webp); add images or remove the folder(s)")
    return [f.name for f in folders], files


def decode_files(paths: list[Path], image_size: int, channels: int | None = None) -> Tensor:
    """Decode images into `[M, C, S, S]` uint8; `channels=None` picks 1 if all are gray, else 3.

    Raises:
        DataError: a file cannot be decoded (named in the message), or `channels` is not 1/3/None.
    """
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    if not paths:
        raise DataError("no images to decode")
    images = [open_image(p) for p in paths]
    if channels is None:
        channels = 1 if all(is_grayscale(im) for im in images) else 3
    if channels == 1:
        arrays = [to_gray(im, image_size)[None] for im in images]
    else:
        arrays = [to_rgb(im, image_size) for im in images]
    return torch.from_numpy(np.stack(arrays))


def load_class_folder(path: str | os.PathLike[str], image_size: int,
                      channels: int | None = None
                      ) -> tuple[Tensor, Tensor, list[str], list[Path]]:
    """Every image of a folder of class sub-folders (e.g. the support set given to `predict`).

    Args:
        path: folder holding `<class>/<image>` files.
        image_size: side of the square output, pixels.
        channels: 1 or 3 to force grayscale/RGB; None decides from the images.

    Returns:
        images `[M, C, S, S]` uint8, labels `[M]` int64 (index into class_names), class names
        (sorted), and the file of each row.
    """
    names, files = scan_classes(_folder(path))
    flat = [f for fs in files for f in fs]
    labels = torch.repeat_interleave(torch.arange(len(names)),
                                     torch.tensor([len(fs) for fs in files]))
    return decode_files(flat, image_size, channels), labels, names, flat


def load_images(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                image_size: int, channels: int | None = None) -> tuple[Tensor, list[Path]]:
    """Query images (what `predict --query` takes): image files, and folders whose images
    (directly inside, sorted by name) are all taken, in the order given.

    Returns:
        images `[M, C, S, S]` uint8 and the file of each row.

    Raises:
        DataError: a path does not exist or is not an image, a folder holds no images, or an
            image is corrupt.
    """
    given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[Path] = []
    for item in given:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise DataError(f"{path} holds no images (png/jpg/jpeg/bmp/gif/webp)")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{path} is not an image file (png/jpg/jpeg/bmp/gif/webp)")
            files.append(path)
        else:
            raise DataError(f"query {path} does not exist; give image files or folders of "
                            "images")
    if not files:
        raise DataError("no query images given")
    return decode_files(files, image_size, channels), files


def split_classes(num_classes: int, seed: int) -> dict[str, list[int]]:
    """Class indices of train/val/test: a seeded permutation cut 70/10/20, each split non-empty."""
    if num_classes < 3:
        raise DataError(f"a train/val/test split needs at least 3 class folders, found "
                        f"{num_classes}; add classes or use split 'all'")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_classes, generator=g).tolist()
    n_val = max(1, round(num_classes * FRACTIONS["val"]))
    n_test = max(1, round(num_classes * FRACTIONS["test"]))
    n_train = num_classes - n_val - n_test
    if n_train < 1:  # 3 or 4 classes: take one back from test
        n_test, n_train = n_test - 1, n_train + 1
    return {"train": sorted(perm[:n_train]), "val": sorted(perm[n_train:n_train + n_val]),
            "test": sorted(perm[n_train + n_val:])}


def listed_splits(folder: Path, names: Sequence[str]) -> dict[str, list[int]] | None:
    """Class indices of train/val/test from `train.txt`, `val.txt`, `test.txt` in `folder` (class
    names, one per line; blank lines and `#` comments skipped); None when none of them exists.

    Raises:
        DataError: one of the three missing, a name without its folder, a class in two lists,
            or an empty list.
    """
    paths = {split: folder / f"{split}.txt" for split in ("train", "val", "test")}
    if not any(p.is_file() for p in paths.values()):
        return None
    index = {name: i for i, name in enumerate(names)}
    chosen: dict[str, list[int]] = {}
    seen: dict[str, str] = {}
    for split, path in paths.items():
        if not path.is_file():
            raise DataError(f"{folder} lists its classes by split but has no {path.name}; add it "
                            "(class names, one per line) or remove the other lists")
        listed = [line.strip() for line in path.read_text().splitlines()
                  if line.strip() and not line.strip().startswith("#")]
        if not listed:
            raise DataError(f"{path} lists no classes")
        for name in listed:
            if name not in index:
                raise DataError(f"{path} names class '{name}', which has no folder in {folder}")
            if name in seen:
                raise DataError(f"class '{name}' is in both {seen[name]}.txt and {split}.txt; "
                                "a class belongs to one split")
            seen[name] = split
        chosen[split] = sorted(index[name] for name in listed)
    return chosen


def check(root: Path) -> DataCheck:
    """The class sub-folders of the user's folder `root` and their image counts."""
    layout = (f"{root}/<class name>/<image>.png|jpg|... : one sub-folder per class, at least "
              "one image each; train.txt/val.txt/test.txt beside them (class names) fix the split, "
              "else the classes are split 70/10/20 by the run's seed")
    if not root.is_dir():
        return DataCheck("folder", root, (), (f"{root} (no such folder)",), layout,
                         "pass --data-root DIR, the folder of class sub-folders")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    counts = {f.name: len(list_images(f)) for f in folders}
    found = [f"{len(folders)} class folders, {sum(counts.values())} images"] if folders else []
    missing = [f"images in {name}/" for name, n in counts.items() if n == 0]
    if not folders:
        missing.append(f"class sub-folders in {root}")
    return DataCheck("folder", root, tuple(found), tuple(missing), layout,
                     "add images or pass --data-root DIR, the folder of class sub-folders")


def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
         image_size: int = 28, seed: int = 0) -> ClassDataset:
    """One split of the user's image folder as a `ClassDataset`.

    Args:
        split: "all", or "train" / "val" / "test" (the folder's lists, else 70/10/20 of the
            classes, chosen by `seed`).
        root: the folder of class sub-folders (`data.root`); `resolve_root` applies.
        download: ignored; the images are yours.
        image_size: side of the square images, pixels.
        seed: chooses the class split (unless the folder lists it: `listed_splits`).

    Raises:
        ConfigError: unknown split or image size below 4.
        DataError: missing/empty folder, a class without images, or a corrupt image.
    """
    del download
    if split not in SPLITS:
        raise ConfigError(f"folder dataset has no split '{split}'; choose one of "
                          f"{', '.join(SPLITS)}")
    if image_size < 4:
        raise ConfigError(f"folder image_size must be >= 4, got {image_size}")
    if not root and not os.environ.get("METAZOO_DATA"):
        raise DataError("the folder dataset reads your own images: pass --set data.root=DIR "
                        "(or --data-root DIR), a folder with one sub-folder per class")
    folder = _folder(resolve_root(root)).resolve()
    names, files = scan_classes(folder)
    listing = [(str(p.relative_to(folder)), st.st_size, st.st_mtime_ns)
               for fs in files for p in fs for st in (p.stat(),)]
    key = cache_key(dataset="folder", root=str(folder), files=listing, image_size=image_size,
                    version=VERSION)

    def build() -> ClassDataset:
        images, labels, class_names, _ = load_class_folder(folder, image_size)
        return ClassDataset(images, labels, tuple(class_names), f"folder/{folder.name}")

    # never inside the user's folder, where a cache/ sub-folder would become a class
    cache_dir = writable_cache_dir(resolve_root(None), avoid=folder)
    everything = cached_dataset(cache_dir, key, f"folder/{folder.name}", build)
    if split == "all":
        return everything
    chosen = (listed_splits(folder, names) or split_classes(len(names), seed))[split]
    return everything.select_classes(chosen, f"folder/{split}")


SPEC = DatasetSpec("folder", load, "images", SPLITS,
                   "your images: data.root/<class>/<image>, classes split by seed", True,
                   check=check)
