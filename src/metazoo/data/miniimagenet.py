"""miniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (ICLR 2017) split.

What: 100 ImageNet classes, 600 colour images each, split by class into 64 train, 16 val and 20
test classes (38400 / 9600 / 12000 images). There is no official download (ImageNet's terms do not
allow redistribution), so two community forms are read, from the root itself or from
`<root>/miniimagenet/` (or `<root>/mini-imagenet/`):
- (a) Ravi & Larochelle's `train.csv`, `val.csv`, `test.csv` (header `filename,label`, rows like
  `n0153282900000005.jpg,n01532829`) and an `images/` folder holding the JPEGs they name;
- (b) the pickled caches `mini-imagenet-cache-{train,val,test}.pkl`: a dict with `image_data`
  (uint8 `[N, 84, 84, 3]`) and `class_dict` (`{wnid: [row indices]}`), read only through
  `metazoo.data.safe_pickle` (no code in the file runs).
A split's classes are those its CSV (or cache) lists, sorted by WordNet id; a file that holds as
many classes as the published split must also hold 600 images of each. Images are RGB, resized
(LANCZOS, `images.to_rgb`) to `image_size` (84 in the papers), `[M, 3, S, S]` uint8, decoded once
and cached by `cached_dataset` under `<root>/cache`, keyed by the source file's name, size and mtime
(for form (a) also the `images/` folder's mtime), the image size and `VERSION`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from metazoo.data.base import ClassDataset, DatasetSpec
from metazoo.data.cache import cache_key, cached_dataset, resolve_root, writable_cache_dir
from metazoo.data.check import DataCheck
from metazoo.data.decoding import assemble, decode_rgb_images
from metazoo.data.images import to_rgb
from metazoo.data.safe_pickle import load_pickle
from metazoo.errors import ConfigError, DataError

VERSION = 1  # bump when decoding changes, so stale caches are not reused
NAME = "miniimagenet"
SPLITS = ("train", "val", "test")
FOLDERS = ("miniimagenet", "mini-imagenet")  # accepted sub-folders of the root
PICKLE = "mini-imagenet-cache-{split}.pkl"
IMAGES = "images"
CLASSES: dict[str, int] = {"train": 64, "val": 16, "test": 20}  # Ravi & Larochelle's split
IMAGES_PER_CLASS = 600
IMAGE_SIZE = 84
LAYOUT = """\
<root>/, <root>/miniimagenet/ or <root>/mini-imagenet/ holding either
(a) train.csv, val.csv, test.csv   header "filename,label", rows "n0153282900000005.jpg,n01532829"
                                   (Ravi & Larochelle split: 38400 / 9600 / 12000 rows)
    images/                        the 60000 JPEG files the CSVs name
(b) mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl, mini-imagenet-cache-test.pkl
                                   dicts: image_data uint8 [N, 84, 84, 3], class_dict {wnid: [rows]}
no checksums: there is no official release of these files"""
HINT = ("miniImageNet has no official download (ImageNet's terms forbid redistribution): place "
        "either (a) train.csv, val.csv, test.csv and images/ or (b) "
        "mini-imagenet-cache-{train,val,test}.pkl in --data-root DIR or DIR/miniimagenet/")


def folders(root: Path) -> tuple[Path, ...]:
    """The folders searched, in order: the root, then its accepted sub-folders."""
    return (root, *(root / name for name in FOLDERS))


def find_source(root: Path, split: str) -> tuple[str, Path] | None:
    """("csv", path of `<split>.csv`) or ("pickle", path of its cache), whichever exists first."""
    for folder in folders(root):
        csv_path = folder / f"{split}.csv"
        if csv_path.is_file() and (folder / IMAGES).is_dir():
            return "csv", csv_path
        pkl = folder / PICKLE.format(split=split)
        if pkl.is_file():
            return "pickle", pkl
    return None


def _parse_csv(text: str) -> list[tuple[str, str]]:
    """Rows `(filename, wnid)` of a split CSV; ValueError with a short reason if malformed."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if header != ["filename", "label"]:
        raise ValueError(f"header must be 'filename,label', found '{','.join(header)}'")
    rows, seen = [], set()
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"line {line} is not 'filename,label': {','.join(row)[:80]}")
        filename, label = row[0].strip(), row[1].strip()
        if "/" in filename or "\\" in filename or filename.startswith("."):
            raise ValueError(f"line {line} names '{filename[:80]}', not a file inside images/")
        if filename in seen:
            raise ValueError(f"line {line} repeats {filename}")
        seen.add(filename)
        rows.append((filename, label))
    if not rows:
        raise ValueError("no rows")
    return rows


def read_csv(path: Path) -> list[tuple[str, str]]:
    """The `(filename, wnid)` rows of a split CSV.

    Raises:
        DataError: the file cannot be read, has another header, or a malformed or repeated row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} ({e}); replace it with the published CSV") from None
    try:
        return _parse_csv(text)
    except ValueError as e:
        raise DataError(f"{path}: {e}; replace it with the published CSV") from None


def _check_counts(source: str, split: str, counts: dict[str, int]) -> None:
    """A file with the published split's class count must hold 600 images of each class."""
    if len(counts) != CLASSES[split]:
        return  # another or a reduced split: whatever classes the file lists
    short = {c: n for c, n in sorted(counts.items()) if n != IMAGES_PER_CLASS}
    if short:
        c, n = next(iter(short.items()))
        raise DataError(f"{source}: {len(short)} of {len(counts)} classes do not hold "
                        f"{IMAGES_PER_CLASS} images (e.g. {c}: {n}); the published {split} split "
                        f"has {CLASSES[split]} classes x {IMAGES_PER_CLASS}: the file is "
                        "incomplete, get it again")


def _progress(total: int, split: str) -> Any:
    return tqdm(total=total, desc=f"decoding {NAME}/{split}", unit="img", disable=None,
                leave=False)


def read_csv_split(csv_path: Path, split: str, image_size: int) -> ClassDataset:
    """Decode the JPEGs a split CSV names (form (a)) into a `ClassDataset`, classes by wnid.

    Raises:
        DataError: a malformed CSV, images named but missing (the `check` message), a corrupt
            image (named), or a class count that contradicts the published split.
    """
    rows = read_csv(csv_path)
    folder = csv_path.parent
    images_dir = folder / IMAGES
    present = set(os.listdir(images_dir))
    if any(filename not in present for filename, _ in rows):
        raise DataError(check(folder).message())
    by_class: dict[str, list[str]] = {}
    for filename, label in rows:
        by_class.setdefault(label, []).append(filename)
    _check_counts(str(csv_path), split, {c: len(v) for c, v in by_class.items()})
    names = sorted(by_class)
    files = [sorted(by_class[wnid]) for wnid in names]
    items = ((f, images_dir / f, str(images_dir / f)) for fs in files for f in fs)
    arrays = decode_rgb_images(items, image_size, total=len(rows), desc=f"decoding {NAME}/{split}")
    return assemble(files, arrays, tuple(names), f"{NAME}/{split}")


def read_pickle_split(path: Path, split: str, image_size: int) -> ClassDataset:
    """Decode one `mini-imagenet-cache-<split>.pkl` (form (b)), read by the restricted unpickler.

    Raises:
        DataError: a refused global, not a dict with `image_data` uint8 `[N, H, W, 3]` and
            `class_dict` `{wnid: [row indices]}`, indices out of range, or wrong counts.
    """
    data = load_pickle(path, str(path))
    fix = "the file is not a miniImageNet cache: delete it and get it again"
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        raise DataError(f"{path}: expected a dict with keys image_data and class_dict; {fix}")
    images, class_dict = data["image_data"], data["class_dict"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else \
            type(images).__name__
        raise DataError(f"{path}: image_data must be a uint8 array [N, H, W, 3], got {got}; {fix}")
    if not isinstance(class_dict, dict) or not class_dict:
        raise DataError(f"{path}: class_dict must be a non-empty dict {{wnid: [rows]}}; {fix}")
    rows: dict[str, np.ndarray] = {}
    for wnid, idx in class_dict.items():
        try:
            index = np.asarray(idx, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            index = np.empty(0, dtype=np.int64)
        if index.size == 0 or int(index.min()) < 0 or int(index.max()) >= len(images):
            raise DataError(f"{path}: class_dict[{wnid!r}] must list row indices in "
                            f"0..{len(images) - 1}; {fix}")
        rows[str(wnid)] = index
    _check_counts(str(path), split, {c: len(v) for c, v in rows.items()})
    names = sorted(rows)
    order = np.concatenate([rows[c] for c in names])
    labels = np.repeat(np.arange(len(names)), [len(rows[c]) for c in names])
    if images.shape[1:3] == (image_size, image_size):
        out = np.ascontiguousarray(images[order].transpose(0, 3, 1, 2))
    else:
        out = np.empty((len(order), 3, image_size, image_size), dtype=np.uint8)
        with _progress(len(order), split) as bar:
            for i, index in enumerate(order.tolist()):
                out[i] = to_rgb(Image.fromarray(images[index]), image_size)
                bar.update(1)
    return ClassDataset(torch.from_numpy(out), torch.from_numpy(labels), tuple(names),
                        f"{NAME}/{split}")


def _report_folder(root: Path) -> Path:
    """The first searched folder holding any file of either form (else `<root>/miniimagenet`)."""
    markers = [f"{s}.csv" for s in SPLITS] + [PICKLE.format(split=s) for s in SPLITS] + [IMAGES]
    for folder in folders(root):
        if any((folder / m).exists() for m in markers):
            return folder
    return root / FOLDERS[0]


def check(root: Path) -> DataCheck:
    """What of either published form is under `root`, and what is missing."""
    root = Path(root)
    folder = _report_folder(root)
    found: list[str] = []
    missing: list[str] = []
    pickles = {s: folder / PICKLE.format(split=s) for s in SPLITS}
    csvs = {s: folder / f"{s}.csv" for s in SPLITS}
    if any(p.is_file() for p in pickles.values()) and not any(p.is_file() for p in csvs.values()):
        for p in pickles.values():
            if p.is_file():
                found.append(f"{p.name} ({p.stat().st_size / 1e6:.0f} MB)")
            else:
                missing.append(p.name)
        return DataCheck(NAME, folder, tuple(found), tuple(missing), LAYOUT, HINT)
    wanted: list[str] = []
    for path in csvs.values():
        if not path.is_file():
            missing.append(path.name)
            continue
        try:
            rows = read_csv(path)
        except DataError as e:
            missing.append(f"{path.name} (unreadable: {str(e).removeprefix(f'{path}: ')})")
            continue
        wanted += [filename for filename, _ in rows]
        n_classes = len({label for _, label in rows})
        found.append(f"{path.name} ({len(rows)} rows, {n_classes} classes)")
    images_dir = folder / IMAGES
    if not images_dir.is_dir():
        missing.append(f"{IMAGES}/ (folder of the JPEG files named in the CSVs)")
    else:
        present = set(os.listdir(images_dir))
        absent = [f for f in wanted if f not in present]
        if absent:
            missing.append(f"{IMAGES}/ (JPEG files named in the CSVs: {len(absent)} of "
                           f"{len(wanted)} missing, e.g. {absent[0]})")
        else:
            found.append(f"{IMAGES}/ ({len(wanted)} JPEG files named in the CSVs)")
    return DataCheck(NAME, folder, tuple(found), tuple(missing), LAYOUT, HINT)


def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
         image_size: int = IMAGE_SIZE, seed: int = 0) -> ClassDataset:
    """One split of miniImageNet as a `ClassDataset` of `[M, 3, S, S]` uint8 RGB images.

    Args:
        split: "train", "val" or "test" (the split's classes are those of its CSV or cache).
        root: folder holding either form (or `<root>/miniimagenet/`); see `resolve_root`.
        download: there is no official download; when the files are missing this raises a
            `DataError` naming the two accepted layouts instead of fetching anything.
        image_size: side of the square images, pixels (84 in the papers).
        seed: ignored: the split is fixed by the files.

    Raises:
        ConfigError: unknown split or image size below 8.
        DataError: files missing (named), a corrupt image (named), a refused pickle, bad counts.
    """
    del seed  # the split is a property of the dataset, not of the run
    if split not in SPLITS:
        raise ConfigError(f"{NAME} has no split '{split}'; choose one of {', '.join(SPLITS)}")
    if image_size < 8:
        raise ConfigError(f"{NAME} image_size must be >= 8, got {image_size}")
    base = resolve_root(root)
    source = find_source(base, split)
    if source is None:
        if download:
            raise DataError(f"{NAME} cannot be downloaded: {HINT} (nothing found in {base})")
        raise DataError(check(base).message())
    kind, path = source
    st = path.stat()
    parts: dict[str, Any] = {"dataset": NAME, "split": split, "file": path.name,
                             "size": st.st_size, "mtime": st.st_mtime_ns,
                             "image_size": image_size, "version": VERSION}
    if kind == "csv":
        parts["images_mtime"] = (path.parent / IMAGES).stat().st_mtime_ns
        return cached_dataset(writable_cache_dir(base), cache_key(**parts), f"{NAME}/{split}",
                              lambda: read_csv_split(path, split, image_size))
    return cached_dataset(writable_cache_dir(base), cache_key(**parts), f"{NAME}/{split}",
                          lambda: read_pickle_split(path, split, image_size))


SPEC = DatasetSpec(NAME, load, "images", SPLITS,
                   "Vinyals et al. 2016; Ravi & Larochelle split, 64/16/20 classes, 84x84 RGB",
                   True, False, image_size=IMAGE_SIZE, check=check)
