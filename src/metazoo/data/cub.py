"""CUB-200-2011 (Wah et al. 2011): the official archive -> in-memory class splits.

What: 11,788 photographs of 200 North American bird species (Caltech-UCSD Birds-200-2011),
published as `CUB_200_2011.tgz` (Caltech data repository). Images are decoded to RGB and resized
to `image_size` (84 by default, the few-shot protocol) with the antialiasing filter every file
dataset shares (`images.to_rgb`); bounding boxes are not used. Class names are the folder names,
e.g. `001.Black_footed_Albatross`.

Layout: `CUB_200_2011/` holding `classes.txt` ("1 001.Black_footed_Albatross"), `images.txt`
("1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg") and
`images/<NNN.Class_Name>/*.jpg`. Accepted as the data root itself, `<root>/CUB_200_2011/`,
`<root>/cub/CUB_200_2011/`, or the archive `<root>/CUB_200_2011.tgz` / `<root>/cub/...tgz`, read
straight from the tar (streamed into memory, nothing extracted).

Splits: `train` / `val` / `test` are the 100/50/50 class split of Chen et al. (ICLR 2019, "A Closer
Look at Few-shot Classification"), as their `filelists/CUB/write_CUB_filelist.py`
(wyharveychen/CloserLookFewShot) makes it: the class folders in sorted order, class `i` is train if
`i % 2 == 0`, val if `i % 4 == 1`, test if `i % 4 == 3`. torchmeta's CUB split files (which cite
Hilliard et al. 2018 for the benchmark) list the same classes. `all` is every class. The run's
`seed` does not change the split.

Decoded images are cached with `cached_dataset` under `<root>/cache` (or `~/.cache/metazoo/cache`),
keyed by the archive's or metadata files' names, sizes and mtimes, the image size and `VERSION`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

from metazoo.data.archives import iter_tar_files
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
NAME = "cub"
FOLDER = "CUB_200_2011"
ARCHIVE = "CUB_200_2011.tgz"
# Caltech data repository record of CUB-200-2011; the MD5 is the one torchmeta checks
URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
MD5 = "97eceeb196236b17998738112f37df78"
EXPECTED: tuple[int, int] | None = (200, 11788)  # (classes, images) of the release
SPLITS = ("train", "val", "test", "all")
HINT = (f"pass --data-root DIR (holding {ARCHIVE} or its extracted {FOLDER}/ folder) or "
        f"--set data.download=true to fetch {ARCHIVE} (1.1 GB) from the Caltech data repository")
LAYOUT = f"""
<root>/cub/{ARCHIVE}  (official archive, 1.1 GB, md5 {MD5}; read without extracting)
or its extracted folder <root>/cub/{FOLDER}/ (also <root>/{FOLDER}/ or <root> itself):
  classes.txt   "1 001.Black_footed_Albatross" (200 lines)
  images.txt    "1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg" (11788 lines)
  images/<NNN.Class_Name>/*.jpg
"""


def _candidates(root: Path) -> tuple[Path, ...]:
    return root, root / FOLDER, root / NAME / FOLDER


def find_folder(root: Path) -> Path | None:
    """The first of `root`, `root/CUB_200_2011`, `root/cub/CUB_200_2011` holding the release."""
    for folder in _candidates(root):
        if (folder / "classes.txt").is_file() and (folder / "images.txt").is_file() and \
                (folder / "images").is_dir():
            return folder
    return None


def find_archive(root: Path) -> Path | None:
    """`root/CUB_200_2011.tgz` or `root/cub/CUB_200_2011.tgz`, whichever exists first."""
    for path in (root / ARCHIVE, root / NAME / ARCHIVE):
        if path.is_file():
            return path
    return None


def _lines(text: str, where: str, what: str) -> Iterator[tuple[int, str]]:
    """`(line number, second field)` of each non-empty `<id> <value>` line."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(f"{where}:{lineno}: cannot parse '{line.strip()}'; expected "
                            f"'<id> {what}': the file is damaged, replace it from {ARCHIVE}")
        yield lineno, fields[1].strip()


def parse_metadata(classes_txt: str, images_txt: str, where: str) -> dict[str, list[str]]:
    """Each class folder's image paths (relative to `images/`, sorted), from the two lists.

    Raises:
        DataError: a malformed line, an image outside a listed class, a class without images, or
            counts other than `EXPECTED`.
    """
    classes = [name for _, name in _lines(classes_txt, f"{where}/classes.txt",
                                          "<NNN.Class_Name>")]
    by_class: dict[str, list[str]] = {c: [] for c in classes}
    n_images = 0
    for lineno, rel in _lines(images_txt, f"{where}/images.txt", "<NNN.Class_Name>/<file>.jpg"):
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in by_class or ".." in parts or not parts[1]:
            raise DataError(f"{where}/images.txt:{lineno}: '{rel}' is not "
                            "<class from classes.txt>/<file>; replace images.txt from "
                            f"{ARCHIVE}")
        by_class[parts[0]].append(rel)
        n_images += 1
    if EXPECTED is not None and (len(classes), n_images) != EXPECTED:
        raise DataError(f"{where}: classes.txt/images.txt list {len(classes)} classes / "
                        f"{n_images} images, expected {EXPECTED[0]} / {EXPECTED[1]} "
                        f"(CUB-200-2011); the files are incomplete or not the official release: "
                        f"download {ARCHIVE} again")
    empty = [c for c, files in by_class.items() if not files]
    if empty:
        raise DataError(f"{where}: class(es) {', '.join(empty[:3])} have no images in images.txt; "
                        f"replace images.txt from {ARCHIVE}")
    return {c: sorted(files) for c, files in sorted(by_class.items())}


def _dataset(by_class: dict[str, list[str]], arrays: dict[str, np.ndarray]) -> ClassDataset:
    names = sorted(by_class)
    return assemble([by_class[c] for c in names], arrays, tuple(names), f"{NAME}/all")


def read_folder(folder: Path, image_size: int) -> ClassDataset:
    """Decode the extracted release in `folder` (classes sorted by name, files by name).

    Raises:
        DataError: damaged lists, a listed image missing (with `check`'s message) or corrupt.
    """
    by_class = parse_metadata((folder / "classes.txt").read_text(),
                              (folder / "images.txt").read_text(), str(folder))
    images = folder / "images"
    if any(not (images / rel).is_file() for files in by_class.values() for rel in files):
        raise DataError(check(folder).message())
    total = sum(len(v) for v in by_class.values())
    items = ((rel, images / rel, str(images / rel)) for files in by_class.values()
             for rel in files)
    return _dataset(by_class, decode_rgb_images(items, image_size, total=total,
                                                desc=f"{NAME}: decoding {folder.name}"))


def read_archive(archive: Path, image_size: int) -> ClassDataset:
    """Decode the official `CUB_200_2011.tgz`, streamed from the tar (nothing is extracted).

    Raises:
        DataError: unsafe or damaged archive, missing lists or images, or a corrupt JPEG.
    """
    meta: dict[str, bytes] = {}
    prefix = f"{FOLDER}/images/"

    def want(name: str) -> bool:
        return name in (f"{FOLDER}/classes.txt", f"{FOLDER}/images.txt") or (
            name.startswith(prefix) and name.lower().endswith((".jpg", ".jpeg")))

    def jpegs() -> Iterator[tuple[str, Source, str]]:
        for name, data in iter_tar_files(archive, want):
            if name.startswith(prefix):
                yield name[len(prefix):], data, f"{archive}:{name}"
            else:
                meta[name.rsplit("/", 1)[-1]] = data

    total = EXPECTED[1] if EXPECTED is not None else None
    arrays = decode_rgb_images(jpegs(), image_size, total=total,
                               desc=f"{NAME}: decoding {archive.name}")
    lists = [f for f in ("classes.txt", "images.txt") if f not in meta]
    if lists:
        raise DataError(f"{archive} holds no {FOLDER}/{' or '.join(lists)}; it is not the "
                        f"official {ARCHIVE}: delete it and download it again")
    by_class = parse_metadata(meta["classes.txt"].decode("utf-8", "replace"),
                              meta["images.txt"].decode("utf-8", "replace"),
                              f"{archive}:{FOLDER}")
    absent = [rel for files in by_class.values() for rel in files if rel not in arrays]
    if absent:
        raise DataError(f"{archive} lacks {len(absent)} image(s) listed in images.txt (first: "
                        f"{prefix}{absent[0]}); the archive is incomplete: delete it and "
                        "download it again")
    return _dataset(by_class, arrays)


def check(root: Path) -> DataCheck:
    """What of CUB-200-2011 is under `root`: the extracted folder (counted) or the archive."""
    root = Path(root)
    found: list[str] = []
    missing: list[str] = []
    folder = find_folder(root)
    archive = find_archive(root)
    if folder is not None:
        try:
            by_class = parse_metadata((folder / "classes.txt").read_text(),
                                      (folder / "images.txt").read_text(), str(folder))
        except DataError as e:
            missing.append(str(e))
        else:
            files = [rel for v in by_class.values() for rel in v]
            absent = [rel for rel in files if not (folder / "images" / rel).is_file()]
            found.append(f"{folder}/classes.txt ({len(by_class)} classes)")
            found.append(f"{folder}/images.txt ({len(files)} images)")
            found.append(f"images/: {len(files) - len(absent)} of {len(files)} files")
            if absent:
                missing.append(f"{folder}/images/: {len(absent)} of {len(files)} files listed in "
                               f"images.txt (first: {', '.join(absent[:3])})")
    if archive is not None:
        found.append(f"{archive} ({archive.stat().st_size} bytes; its contents are checked "
                     "when it is loaded)")
    if folder is None and archive is None:
        partial = next((f for f in _candidates(root)[1:] if f.is_dir()), None)
        if partial is not None:
            missing += [f"{partial}/{item}" for item in ("classes.txt", "images.txt", "images/")
                        if not (partial / item).exists()]
        else:
            missing.append(f"{ARCHIVE} or its extracted {FOLDER}/ folder")
    if folder is not None and archive is not None and missing:  # the archive can replace it
        found.append(f"(the damaged folder {folder} is used first: delete or fix it)")
    return DataCheck(NAME, root, tuple(found), tuple(missing), LAYOUT, HINT)


def _locate(root: Path, download: bool) -> Path:
    """The extracted folder, else the archive, downloading it when allowed."""
    path = find_folder(root) or find_archive(root)
    if path is not None:
        return path
    if not download:
        raise DataError(check(root).message())
    dest = root / NAME / ARCHIVE
    try:
        return fetch(URL, dest, md5=MD5)
    except OSError as e:
        raise DataError(f"cannot write {dest} ({e}); pass a writable --data-root DIR") from None


def load_all(root: Path, download: bool, image_size: int) -> ClassDataset:
    """Every class of CUB-200-2011, decoded or from the cache."""
    path = _locate(root, download)
    if path.is_dir():
        stamps = [file_stamp(path / f) for f in ("classes.txt", "images.txt", "images")]
        build = partial(read_folder, path, image_size)
    else:
        stamps = [file_stamp(path)]
        build = partial(read_archive, path, image_size)
    key = cache_key(dataset=NAME, source=str(path.resolve()), files=stamps,
                    image_size=image_size, version=VERSION, expected=EXPECTED)
    return cached_dataset(writable_cache_dir(root), key, f"{NAME}/all", build)


def chen_split(names: Iterable[str]) -> dict[str, list[str]]:
    """Class names of Chen et al.'s split: sorted order, index i -> train if i % 2 == 0, val if
    i % 4 == 1, test if i % 4 == 3 (100/50/50 of the 200 classes)."""
    order = sorted(names)
    if len(order) < 4:
        raise DataError(f"CUB's train/val/test split needs at least 4 classes, found {len(order)}")
    return {"train": [c for i, c in enumerate(order) if i % 2 == 0],
            "val": [c for i, c in enumerate(order) if i % 4 == 1],
            "test": [c for i, c in enumerate(order) if i % 4 == 3]}


def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
         image_size: int = 84, seed: int = 0) -> ClassDataset:
    """One split of CUB-200-2011 as a `ClassDataset` of `[M, 3, S, S]` uint8 RGB images.

    Args:
        split: "train", "val", "test" (Chen et al. 2019's 100/50/50 classes) or "all".
        root: data root holding the archive or the extracted folder; see `resolve_root`.
        download: fetch `CUB_200_2011.tgz` (MD5-checked) into `<root>/cub/` when absent.
        image_size: side of the square images, pixels (84 in the protocol).
        seed: ignored: the split is fixed.

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
    index = {name: i for i, name in enumerate(everything.class_names)}
    chosen = sorted(index[c] for c in chen_split(everything.class_names)[split])
    return everything.select_classes(chosen, f"{NAME}/{split}")


SPEC = DatasetSpec(NAME, load, "images", SPLITS,
                   "CUB-200-2011 birds (Wah et al. 2011); Chen et al. 2019's 100/50/50 class split",
                   True, False, image_size=84, check=check)
