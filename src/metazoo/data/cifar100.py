"""CIFAR-100 (Krizhevsky 2009), the python release: the reader CIFAR-FS and FC100 share.

What: 60000 32x32 colour images of 100 fine classes (600 each: 500 in `train`, 100 in `test`),
grouped into 20 super-classes of 5. The official archive `cifar-100-python.tar.gz` (URL and MD5
below) holds `cifar-100-python/{meta,train,test}`: Python 2 pickles of dicts (`meta`:
`fine_label_names`, `coarse_label_names`; `train`/`test`: `data` uint8 `[N, 3072]` (R, G, B planes
of 32x32, row-major), `fine_labels`, `coarse_labels`, `filenames`). They are read straight from
the archive (no extraction) or from the extracted `cifar-100-python/` folder, under the root or
`<root>/cifar100/`, with the restricted unpickler (`metazoo.data.safe_pickle`).

The few-shot splits use all 600 images of a class, so `train` and `test` are merged. The label
names must be the release's (`TAXONOMY`, from the release's `meta` and Bertinetto et al.'s
`cifar-fs_splits/all.txt`), and every image's coarse label must be its fine class's super-class.
The merged set (classes in fine-label order, each class's `train` images before its `test` ones)
is decoded once per image size and cached (`cached_dataset`, key: archive or folder files' names,
sizes and mtimes, image size, `VERSION`); `cifar_fs` and `fc100` both select classes from it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from metazoo.data.archives import iter_tar_files
from metazoo.data.base import ClassDataset, Loader
from metazoo.data.cache import cache_key, cached_dataset, resolve_root, writable_cache_dir
from metazoo.data.check import DataCheck
from metazoo.data.download import download as fetch
from metazoo.data.images import check_image_size, to_rgb
from metazoo.data.safe_pickle import load_pickle
from metazoo.errors import ConfigError, DataError

VERSION = 1  # bump when decoding changes, so stale caches are not reused
ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"  # the archive's top folder
MEMBERS = ("meta", "train", "test")
SUBFOLDER = "cifar100"  # `<root>/cifar100/`: where downloads go
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
IMAGE_SIZE = 32
PER_CLASS = {"train": 500, "test": 100}  # images of each class in each file of the release

# The 20 super-classes in coarse-label order, each with its 5 fine classes (the release's `meta`
# and bertinetto/r2d2 commit 9ed0090, cifar-fs_splits/all.txt, which lists them in this order).
TAXONOMY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)
COARSE_LABEL_NAMES: tuple[str, ...] = tuple(coarse for coarse, _ in TAXONOMY)
FINE_LABEL_NAMES: tuple[str, ...] = tuple(sorted(f for _, fine in TAXONOMY for f in fine))
COARSE_OF: dict[str, str] = {f: coarse for coarse, fine in TAXONOMY for f in fine}

LAYOUT = f"""\
<root>/ or <root>/{SUBFOLDER}/ holding either
  {ARCHIVE}   the official archive, md5 {MD5}
  {FOLDER}/meta, {FOLDER}/train, {FOLDER}/test   (the archive extracted)
from {URL}"""


def hint(root: Path) -> str:
    return (f"pass --data-root DIR (a folder holding {ARCHIVE}) or --set data.download=true to "
            f"fetch it (MD5-checked) into {root / SUBFOLDER}")


def find_source(root: Path) -> Path | None:
    """The extracted `cifar-100-python/` folder (all three members) or the archive, else None."""
    for folder in (root, root / SUBFOLDER):
        extracted = folder / FOLDER
        if all((extracted / m).is_file() for m in MEMBERS):
            return extracted
        if (folder / ARCHIVE).is_file():
            return folder / ARCHIVE
    return None


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def check(root: Path, dataset: str) -> DataCheck:
    """Whether the archive (or its extracted folder) is under `root`; `dataset` names the report.

    Paths in the report are relative to `root` (e.g. "cifar100/cifar-100-python/meta").
    """
    root = Path(root)
    found: list[str] = []
    partial: list[str] = []
    for folder in (root, root / SUBFOLDER):
        rel = folder.relative_to(root)
        if (folder / ARCHIVE).is_file():
            found.append(f"{rel / ARCHIVE} ({_size(folder / ARCHIVE)})")
        have = [m for m in MEMBERS if (folder / FOLDER / m).is_file()]
        found += [f"{rel / FOLDER / m} ({_size(folder / FOLDER / m)})" for m in have]
        if have and len(have) < len(MEMBERS) and not partial:
            partial = [f"{rel / FOLDER / m} (from the extracted archive)" for m in MEMBERS
                       if m not in have]
    if find_source(root) is not None:
        missing: tuple[str, ...] = ()
    elif partial:
        missing = tuple(partial)
    else:
        missing = (f"{ARCHIVE} (or its extracted {FOLDER}/ folder)",)
    return DataCheck(dataset, root, tuple(found), missing, LAYOUT, hint(root))


def locate(root: Path, dataset: str, download: bool) -> Path:
    """The archive or extracted folder, downloading the archive when allowed."""
    source = find_source(root)
    if source is not None:
        return source
    if not download:
        raise DataError(check(root, dataset).message())
    dest = root / SUBFOLDER / ARCHIVE
    try:
        return fetch(URL, dest, md5=MD5)
    except OSError as e:
        raise DataError(f"cannot write {dest} ({e}); pass a writable --data-root DIR") from None


def read_members(source: Path) -> dict[str, Any]:
    """`meta`, `train` and `test` unpickled (restricted) from the archive or extracted folder.

    Raises:
        DataError: an unreadable archive, a missing member, or a pickle that is refused/damaged.
    """
    if source.is_dir():
        return {m: load_pickle(source / m, str(source / m)) for m in MEMBERS}
    wanted = {f"{FOLDER}/{m}": m for m in MEMBERS}
    out: dict[str, Any] = {}
    for name, data in iter_tar_files(source, lambda n: n in wanted):
        out[wanted[name]] = load_pickle(io.BytesIO(data), f"{source}:{name}")
        if len(out) == len(MEMBERS):
            break
    absent = [f"{FOLDER}/{m}" for m in MEMBERS if m not in out]
    if absent:
        raise DataError(f"{source} lacks {', '.join(absent)}; it is not the official CIFAR-100 "
                        "python archive: delete it and download it again")
    return out


def _field(part: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(part, dict) or key not in part:
        raise DataError(f"{where} has no '{key}' entry; it is not the official CIFAR-100 file: "
                        "delete the archive and download it again")
    return part[key]


def _check_names(meta: dict[str, Any], where: str) -> None:
    for key, expected in (("fine_label_names", FINE_LABEL_NAMES),
                          ("coarse_label_names", COARSE_LABEL_NAMES)):
        got = tuple(str(n) for n in _field(meta, key, where))
        if got != expected:
            at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                      min(len(got), len(expected)))
            seen = got[at] if at < len(got) else "nothing"
            want = expected[at] if at < len(expected) else "nothing"
            raise DataError(f"{where}: {key} differ from CIFAR-100's ({len(got)} names; at {at} "
                            f"'{seen}' where the release has '{want}'); it is not the official "
                            "archive: delete it and download it again")


def _images_and_labels(part: dict[str, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """`data` as `[N, 3, 32, 32]` uint8 and `fine_labels`, checked against `coarse_labels`."""
    data = _field(part, "data", where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be uint8 [N, 3072], got {got}; delete the archive "
                        "and download it again")
    try:
        fine = np.asarray(_field(part, "fine_labels", where), dtype=np.int64).reshape(-1)
        coarse = np.asarray(_field(part, "coarse_labels", where), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{where}: fine_labels/coarse_labels must be lists of integers; delete "
                        "the archive and download it again") from None
    n = len(data)
    if len(fine) != n or len(coarse) != n or (n and (fine.min() < 0 or fine.max() >= 100
                                                      or coarse.min() < 0 or coarse.max() >= 20)):
        raise DataError(f"{where}: {n} images but {len(fine)} fine / {len(coarse)} coarse labels "
                        "(fine 0..99, coarse 0..19); delete the archive and download it again")
    parent = np.array([COARSE_LABEL_NAMES.index(COARSE_OF[f]) for f in FINE_LABEL_NAMES])
    wrong = np.flatnonzero(parent[fine] != coarse)
    if wrong.size:
        i = int(wrong[0])
        raise DataError(f"{where}: image {i} has fine label {FINE_LABEL_NAMES[fine[i]]} but coarse "
                        f"label {COARSE_LABEL_NAMES[coarse[i]]}; delete the archive and download "
                        "it again")
    return data.reshape(n, 3, 32, 32), fine


def read_cifar100(source: Path, image_size: int) -> ClassDataset:
    """All 100 classes (train and test files merged) as one `ClassDataset`, fine-label order.

    Raises:
        DataError: see `read_members`; names or labels other than the release's; a class without
            images; a full-size file whose classes do not hold 500 / 100 images each.
    """
    members = read_members(source)
    _check_names(members["meta"], f"{source}:meta")
    arrays, labels = [], []
    for part in ("train", "test"):
        images, fine = _images_and_labels(members[part], f"{source}:{part}")
        counts = np.bincount(fine, minlength=100)
        if len(fine) == 100 * PER_CLASS[part] and bool((counts != PER_CLASS[part]).any()):
            c = int(np.flatnonzero(counts != PER_CLASS[part])[0])
            raise DataError(f"{source}:{part}: class {FINE_LABEL_NAMES[c]} has {counts[c]} "
                            f"images, the release has {PER_CLASS[part]}; delete the archive and "
                            "download it again")
        arrays.append(images)
        labels.append(fine)
    fine = np.concatenate(labels)
    counts = np.bincount(fine, minlength=100)
    if bool((counts == 0).any()):
        absent = [FINE_LABEL_NAMES[c] for c in np.flatnonzero(counts == 0)[:3]]
        raise DataError(f"{source}: no images of class(es) {', '.join(absent)}; delete the "
                        "archive and download it again")
    order = np.argsort(fine, kind="stable")  # by class; train images before test ones
    images = np.concatenate(arrays)[order]
    if image_size != IMAGE_SIZE:
        out = np.empty((len(images), 3, image_size, image_size), dtype=np.uint8)
        for i, img in enumerate(tqdm(images, desc="resizing cifar100", unit="img",
                                     disable=None, leave=False)):
            out[i] = to_rgb(Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))),
                            image_size)
        images = out
    return ClassDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(fine[order]), FINE_LABEL_NAMES, "cifar100/all")


def _fingerprint(source: Path) -> list[Any]:
    files = [source / m for m in MEMBERS] if source.is_dir() else [source]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def load_all(root: Path, dataset: str, download: bool, image_size: int) -> ClassDataset:
    """The merged 100-class set at `image_size`, decoded or from the cache."""
    source = locate(root, dataset, download)
    key = cache_key(dataset="cifar100", source=source.name, files=_fingerprint(source),
                    image_size=image_size, version=VERSION)
    return cached_dataset(writable_cache_dir(root), key, "cifar100/all",
                          lambda: read_cifar100(source, image_size))


def select(full: ClassDataset, names: tuple[str, ...] | list[str], name: str) -> ClassDataset:
    """The classes `names` (fine label names) of the merged set, in fine-label order."""
    index = {n: i for i, n in enumerate(full.class_names)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise DataError(f"{name}: class(es) {', '.join(unknown[:5])} not in the CIFAR-100 data; "
                        "the cache or archive is not the official one: delete it and download "
                        "it again")
    return full.select_classes(sorted(index[n] for n in names), name)


def split_loader(dataset: str, classes: Mapping[str, tuple[str, ...]]) -> Loader:
    """The `load` of a dataset that is a class split of CIFAR-100 (CIFAR-FS, FC100): split
    `s` is the fine classes `classes[s]` of the merged 600-image classes, in fine-label order;
    the run's seed does not change it."""

    def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
             image_size: int = IMAGE_SIZE, seed: int = 0) -> ClassDataset:
        del seed  # the split is a property of the dataset, not of the run
        if split not in classes:
            raise ConfigError(f"{dataset} has no split '{split}'; choose one of "
                              f"{', '.join(classes)}")
        check_image_size(dataset, image_size)
        full = load_all(resolve_root(root), dataset, download, image_size)
        return select(full, classes[split], f"{dataset}/{split}")

    load.__doc__ = (f"One split of {dataset} ({', '.join(classes)}) as a `ClassDataset` of "
                    "`[M, 3, S, S]` uint8 RGB images, from `cifar-100-python.tar.gz` under "
                    "`root` (or `<root>/cifar100/`); `download` fetches it (MD5-checked).")
    return load
