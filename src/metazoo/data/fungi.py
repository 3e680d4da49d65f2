"""Fungi (FGVCx Fungi 2018) as Meta-Dataset uses it: train+val images -> 994/200/200 classes.

What: 89,760 photographs of 1,394 Danish fungi species from the 2018 FGVCx Fungi Classification
challenge (Svampe Atlas; visipedia/fgvcx_fungi_comp): 85,578 train and 4,182 validation images,
labelled in COCO-style `train.json` / `val.json` (`images`: id, file_name; `annotations`: image_id,
category_id; `categories`: id, name). The test set is unlabelled and not used. As in Meta-Dataset
(Triantafillou et al., ICLR 2020), the train and val images are merged and the classes, not the
images, are split. Images are decoded to RGB and resized to `image_size` (84 by default, the size
of Meta-Dataset's episodes) with the filter every file dataset shares (`images.to_rgb`). Class
names are `<category id, 4 digits>.<name>` (some species names repeat, so the id is kept), e.g.
`0000.Abortiporus biennis`.

Layout: `<root>/fungi/` (or `<root>`) holding `train.json`, `val.json` and
`images/<category folder>/<file>.JPG` (the `file_name`s of the json files), or the two archives of
the release, `fungi_train_val.tgz` (13 GB, images) and `train_val_annotations.tgz` (the two json
files), read straight from the tars (streamed, nothing extracted). Folders and archives may be
mixed (e.g. extracted annotations, archived images).

Splits: Meta-Dataset's rule (google-research/meta-dataset,
`meta_dataset/dataset_conversion/dataset_to_records.py`: `FungiConverter.create_splits` and
`gen_rand_split_inds`, with the converter's default `random_seed=22`): the categories sorted by
id, numbered 0..1393; numpy's RandomState(22) draws 1194 train+val indices without replacement
(`choice`), the rest is test; a second draw from those picks the 994 train classes, the rest is
val. This reproduces `meta_dataset/dataset_conversion/splits/fungi_splits.json` exactly. With
other class counts (test fixtures) the sizes scale in proportion, each split keeping a class.
`all` is every class. The run's `seed` does not change the split.

Decoded images are cached with `cached_dataset`, keyed by the archives' or files' names, sizes and
mtimes, the image size and `VERSION`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from metazoo.data.archives import iter_tar_files, safe_member_name
from metazoo.data.base import ClassDataset, DatasetSpec
from metazoo.data.cache import (
    cache_key,
    cached_dataset,
    file_stamp,
    resolve_root,
    writable_cache_dir,
)
from metazoo.data.check import DataCheck
from metazoo.data.decoding import assemble, decode_rgb_images
from metazoo.data.download import download as fetch
from metazoo.data.images import Source, check_image_size
from metazoo.errors import ConfigError, DataError

VERSION = 1  # bump when decoding changes, so stale caches are not reused
NAME = "fungi"
IMAGES_ARCHIVE = "fungi_train_val.tgz"
ANNOTATIONS_ARCHIVE = "train_val_annotations.tgz"
ANNOTATION_FILES = ("train.json", "val.json")
URL = "https://labs.gbif.org/fgvcx/2018/{name}"  # the release's links (fgvcx_fungi_comp README)
MD5: dict[str, str] = {IMAGES_ARCHIVE: "df2b2980835668ed1d9a0e286e4bdadd",
                       ANNOTATIONS_ARCHIVE: "c3c0f1b8a8d0b60619c43d9c89bdbc7e"}
EXPECTED: tuple[int, int] | None = (1394, 89760)  # (classes, train+val images) of the release
SPLIT_SIZES = (994, 200, 200)  # Meta-Dataset's train / valid / test classes
SPLIT_SEED = 22  # Meta-Dataset's DatasetConverter default random_seed
SPLITS = ("train", "val", "test", "all")
HINT = (f"pass --data-root DIR (holding {NAME}/ with train.json, val.json and images/, or "
        f"{IMAGES_ARCHIVE} and {ANNOTATIONS_ARCHIVE}) or --set data.download=true to fetch both "
        "archives (13 GB) from labs.gbif.org")
LAYOUT = f"""
<root>/fungi/ (or <root>) holding either the release's archives, read without extracting:
  {IMAGES_ARCHIVE}        13 GB, md5 {MD5[IMAGES_ARCHIVE]}
  {ANNOTATIONS_ARCHIVE}  2.9 MB, md5 {MD5[ANNOTATIONS_ARCHIVE]}
or their extracted contents:
  train.json, val.json    COCO-style: images (id, file_name), annotations, categories (1394)
  images/<category folder>/<file>.JPG   (89760 train+val images, named by file_name)
"""


@dataclass(frozen=True)
class Annotations:
    """The merged train+val labels.

    Attributes:
        class_names: `<id:04d>.<name>` per category, in category-id order.
        files: each class's image keys (`images/<folder>/<file>`, sorted), by class index.
    """

    class_names: tuple[str, ...]
    files: tuple[tuple[str, ...], ...]

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.files)


def _candidates(root: Path) -> tuple[Path, ...]:
    return root, root / NAME


def find_annotation_folder(root: Path) -> Path | None:
    """The first of `root`, `root/fungi` holding both `train.json` and `val.json`."""
    return next((d for d in _candidates(root)
                 if all((d / f).is_file() for f in ANNOTATION_FILES)), None)


def find_image_folder(root: Path) -> Path | None:
    """The first of `root`, `root/fungi` holding an `images/` folder (returned is its parent)."""
    return next((d for d in _candidates(root) if (d / "images").is_dir()), None)


def find_archive(root: Path, name: str) -> Path | None:
    """`root/name` or `root/fungi/name`, whichever exists first."""
    return next((d / name for d in _candidates(root) if (d / name).is_file()), None)


def image_key(file_name: str, where: str) -> str:
    """The image's path relative to the dataset folder, `images/<folder>/<file>`.

    Raises:
        DataError: an absolute `file_name` or one with `..` (never opened).
    """
    key = safe_member_name(Path(where), file_name)
    return key if key.startswith("images/") else f"images/{key}"


def _field(data: Any, key: str, where: str) -> list[Any]:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise DataError(f"{where} has no '{key}' list; it is not the release's COCO-style "
                        f"annotation file: replace it from {ANNOTATIONS_ARCHIVE}")
    return value


def parse_annotations(texts: dict[str, bytes], where: str) -> Annotations:
    """Merge `train.json` and `val.json` (bytes by file name) as Meta-Dataset does.

    Raises:
        DataError: invalid JSON, missing fields, differing category lists, an image without
            exactly one known label, or counts other than `EXPECTED`.
    """
    categories: list[Any] | None = None
    class_of: dict[int, int] = {}
    images: dict[int, str] = {}
    for fname in ANNOTATION_FILES:
        label = f"{where}/{fname}"
        try:
            data = json.loads(texts[fname])
            cats = sorted(_field(data, "categories", label), key=lambda c: int(c["id"]))
            pairs = [(int(c["id"]), str(c["name"])) for c in cats]
            for image in _field(data, "images", label):
                if int(image["id"]) in images:
                    raise DataError(f"{label}: image id {image['id']} appears twice; replace the "
                                    f"annotation files from {ANNOTATIONS_ARCHIVE}")
                images[int(image["id"])] = image_key(str(image["file_name"]), label)
            for ann in _field(data, "annotations", label):
                image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
                if image_id in class_of:
                    raise DataError(f"{label}: image id {image_id} is labelled twice; replace the "
                                    f"annotation files from {ANNOTATIONS_ARCHIVE}")
                class_of[image_id] = category_id
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{label} is not valid annotation JSON ({type(e).__name__}: {e}); "
                            f"replace it from {ANNOTATIONS_ARCHIVE}") from None
        if categories is None:
            categories = pairs
        elif pairs != categories:
            raise DataError(f"{where}: train.json and val.json list different categories; "
                            f"replace both from {ANNOTATIONS_ARCHIVE}")
    assert categories is not None
    position = {cid: i for i, (cid, _) in enumerate(categories)}
    files: list[list[str]] = [[] for _ in categories]
    for image_id, key in images.items():
        cid = class_of.get(image_id)
        if cid is None or cid not in position:
            what = "has no label" if cid is None else f"has unknown category {cid}"
            raise DataError(f"{where}: image {image_id} ({key}) {what}; replace the annotation "
                            f"files from {ANNOTATIONS_ARCHIVE}")
        files[position[cid]].append(key)
    unknown = sorted(set(class_of) - set(images))
    if unknown:
        raise DataError(f"{where}: annotations name image id {unknown[0]} that no 'images' entry "
                        f"lists; replace the annotation files from {ANNOTATIONS_ARCHIVE}")
    names = tuple(f"{cid:04d}.{name}" for cid, name in categories)
    if EXPECTED is not None and (len(names), len(images)) != EXPECTED:
        raise DataError(f"{where}: train.json + val.json list {len(names)} categories / "
                        f"{len(images)} images, expected {EXPECTED[0]} / {EXPECTED[1]} (FGVCx "
                        "Fungi 2018 train+val); the files are incomplete or not the official "
                        f"release: download {ANNOTATIONS_ARCHIVE} again")
    empty = [names[i] for i, f in enumerate(files) if not f]
    if empty:
        raise DataError(f"{where}: categor(ies) {', '.join(empty[:3])} have no images; replace "
                        f"the annotation files from {ANNOTATIONS_ARCHIVE}")
    return Annotations(names, tuple(tuple(sorted(f)) for f in files))


def _annotation_source(root: Path) -> Path | None:
    return find_annotation_folder(root) or find_archive(root, ANNOTATIONS_ARCHIVE)


def read_annotations(source: Path) -> Annotations:
    """Parse the annotations from a folder holding the json files or from their archive."""
    if source.is_dir():
        texts = {f: (source / f).read_bytes() for f in ANNOTATION_FILES}
        return parse_annotations(texts, str(source))
    texts = {}
    for name, data in iter_tar_files(source, lambda n: n.rsplit("/", 1)[-1] in ANNOTATION_FILES):
        texts.setdefault(name.rsplit("/", 1)[-1], data)
    absent = [f for f in ANNOTATION_FILES if f not in texts]
    if absent:
        raise DataError(f"{source} holds no {' or '.join(absent)}; it is not the official "
                        f"{ANNOTATIONS_ARCHIVE}: delete it and download it again")
    return parse_annotations(texts, str(source))


def archive_key(name: str) -> str:
    """A member name of the images archive as `images/<folder>/<file>`, also when the archive
    wraps `images/` in a top folder."""
    at = name.find("/images/")
    return name[at + 1:] if not name.startswith("images/") and at >= 0 else name


def read_images(ann: Annotations, source: Path, image_size: int, root: Path) -> ClassDataset:
    """Decode every annotated image from `source/images/` or the images archive.

    Raises:
        DataError: an image missing (`check(root)`'s message for a folder) or corrupt, or a
            damaged archive.
    """
    wanted = {key for files in ann.files for key in files}
    desc = f"{NAME}: decoding {source.name}"
    if source.is_dir():
        if any(not (source / key).is_file() for key in wanted):
            raise DataError(check(root).message())
        items: Iterator[tuple[str, Source, str]] = (
            (key, source / key, str(source / key)) for files in ann.files for key in files)
    else:
        items = ((archive_key(name), data, f"{source}:{name}")
                 for name, data in iter_tar_files(source, lambda n: archive_key(n) in wanted))
    arrays = decode_rgb_images(items, image_size, total=len(wanted), desc=desc)
    absent = sorted(wanted - set(arrays))
    if absent:
        raise DataError(f"{source} lacks {len(absent)} annotated image(s) (first: {absent[0]}); "
                        "the archive is incomplete: delete it and download it again")
    return assemble([list(f) for f in ann.files], arrays, ann.class_names, f"{NAME}/all")


def check(root: Path) -> DataCheck:
    """What of the Fungi release is under `root`: json files or their archive, images or theirs."""
    root = Path(root)
    found: list[str] = []
    missing: list[str] = []
    ann_source = _annotation_source(root)
    ann: Annotations | None = None
    if ann_source is None:
        missing.append(f"train.json and val.json (or {ANNOTATIONS_ARCHIVE})")
    else:
        try:
            ann = read_annotations(ann_source)
        except DataError as e:
            missing.append(str(e))
        else:
            what = f"{ann_source}/train.json, val.json" if ann_source.is_dir() else ann_source
            found.append(f"{what} ({len(ann.class_names)} categories, {ann.num_images} images)")
    img_folder = find_image_folder(root)
    img_archive = find_archive(root, IMAGES_ARCHIVE)
    if img_folder is not None and ann is not None:
        keys = [k for files in ann.files for k in files]
        absent = [k for k in keys if not (img_folder / k).is_file()]
        found.append(f"images/: {len(keys) - len(absent)} of {len(keys)} files")
        if absent:
            missing.append(f"{img_folder}/images/: {len(absent)} of {len(keys)} annotated files "
                           f"(first: {', '.join(absent[:3])})")
    elif img_folder is not None:
        found.append(f"{img_folder / 'images'}/ (not counted: no annotations)")
    if img_archive is not None:
        found.append(f"{img_archive} ({img_archive.stat().st_size} bytes; its contents are "
                     "checked when it is loaded)")
    if img_folder is None and img_archive is None:
        missing.append(f"images/<category folder>/*.JPG (or {IMAGES_ARCHIVE})")
    return DataCheck(NAME, root, tuple(found), tuple(missing), LAYOUT, HINT)


def _fetch(root: Path, name: str) -> Path:
    dest = root / NAME / name
    try:
        return fetch(URL.format(name=name), dest, md5=MD5[name])
    except OSError as e:
        raise DataError(f"cannot write {dest} ({e}); pass a writable --data-root DIR") from None


def _locate(root: Path, download: bool) -> tuple[Path, Path]:
    """(annotations: folder or archive, images: folder holding images/ or archive)."""
    ann = _annotation_source(root)
    images = find_image_folder(root) or find_archive(root, IMAGES_ARCHIVE)
    if ann is not None and images is not None:
        return ann, images
    if not download:
        raise DataError(check(root).message())
    return (ann or _fetch(root, ANNOTATIONS_ARCHIVE)), (images or _fetch(root, IMAGES_ARCHIVE))


def _build(ann_source: Path, img_source: Path, image_size: int, root: Path) -> ClassDataset:
    return read_images(read_annotations(ann_source), img_source, image_size, root)


def load_all(root: Path, download: bool, image_size: int) -> ClassDataset:
    """Every class of the merged train+val release, decoded or from the cache."""
    ann_source, img_source = _locate(root, download)
    stamps = ([file_stamp(ann_source / f) for f in ANNOTATION_FILES] if ann_source.is_dir()
              else [file_stamp(ann_source)])
    stamps.append(file_stamp(img_source / "images" if img_source.is_dir() else img_source))
    key = cache_key(dataset=NAME, annotations=str(ann_source.resolve()),
                    images=str(img_source.resolve()), files=stamps, image_size=image_size,
                    version=VERSION, expected=EXPECTED)
    return cached_dataset(writable_cache_dir(root), key, f"{NAME}/all",
                          partial(_build, ann_source, img_source, image_size, root))


def split_sizes(num_classes: int) -> tuple[int, int, int]:
    """(train, val, test) class counts: Meta-Dataset's 994/200/200 for the 1394 classes, else
    the same proportions with at least one class each."""
    if num_classes == sum(SPLIT_SIZES):
        return SPLIT_SIZES
    if num_classes < 3:
        raise DataError(f"Fungi's train/val/test split needs at least 3 classes, found "
                        f"{num_classes}")
    total = sum(SPLIT_SIZES)
    n_val = max(1, round(num_classes * SPLIT_SIZES[1] / total))
    n_test = max(1, round(num_classes * SPLIT_SIZES[2] / total))
    return num_classes - n_val - n_test, n_val, n_test


def meta_dataset_split(num_classes: int) -> dict[str, list[int]]:
    """Class indices (categories in id order) of Meta-Dataset's Fungi split.

    `np.random.RandomState(SPLIT_SEED)`: `choice(n, n_train + n_val, replace=False)` are
    train+val, the rest (sorted) test; `choice(train+val, n_train, replace=False)` are train (in
    draw order, as Meta-Dataset lists them), the rest of train+val (sorted) val.
    """
    n_train, n_val, _ = split_sizes(num_classes)
    rng = np.random.RandomState(SPLIT_SEED)
    trainval = rng.choice(num_classes, n_train + n_val, replace=False)
    test = np.setdiff1d(np.arange(num_classes), trainval)
    train = rng.choice(trainval, n_train, replace=False)
    val = np.setdiff1d(trainval, train)
    return {"train": [int(i) for i in train], "val": [int(i) for i in val],
            "test": [int(i) for i in test]}


def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
         image_size: int = 84, seed: int = 0) -> ClassDataset:
    """One split of Fungi as a `ClassDataset` of `[M, 3, S, S]` uint8 RGB images.

    Args:
        split: "train", "val", "test" (Meta-Dataset's 994/200/200 classes) or "all".
        root: data root holding `fungi/` (or the files themselves); see `resolve_root`.
        download: fetch the two release archives (MD5-checked) into `<root>/fungi/` when absent.
        image_size: side of the square images, pixels (84 in Meta-Dataset's episodes).
        seed: ignored: the split is fixed by `SPLIT_SEED`.

    Raises:
        ConfigError: unknown split or image size below 8.
        DataError: files missing (and `download` is False), damaged, incomplete or corrupt.
    """
    del seed  # the split is a property of the dataset, not of the run
    if split not in SPLITS:
        raise ConfigError(f"{NAME} has no split '{split}'; choose one of {', '.join(SPLITS)}")
    check_image_size(NAME, image_size)
    everything = load_all(resolve_root(root), download, image_size)
    if split == "all":
        return everything
    chosen = sorted(meta_dataset_split(everything.num_classes)[split])
    return everything.select_classes(chosen, f"{NAME}/{split}")


SPEC = DatasetSpec(NAME, load, "images", SPLITS,
                   "FGVCx Fungi 2018 train+val; Meta-Dataset's 994/200/200 class split",
                   True, False, image_size=84, check=check)
