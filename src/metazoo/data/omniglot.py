"""Omniglot (Lake et al. 2015): the official archives -> in-memory splits.

What: 1623 handwritten characters from 50 alphabets, 20 drawings each, published as
`images_background.zip` (30 alphabets, 964 characters) and `images_evaluation.zip` (20 alphabets,
659 characters) of 105x105 1-bit PNGs. The PNGs are read straight from the zips (no extraction),
inverted so ink is 255 on 0, and resized with an antialiasing filter (LANCZOS, as MAML's
preprocessing script did) to `image_size` (28 by default). Class names are `Alphabet/characterNN`.

Splits:
- `background`, `evaluation`: the two archives as published, no rotations (Lake's protocol).
- `train`, `val`, `test`: the Vinyals et al. (2016) split over all 1623 characters. The characters
  are put in a fixed pseudo-random order (a hash of `SPLIT_SEED` and the class name, so the split
  is the same on every machine, every run and every library version; the run's `seed` does not
  change it): the first 1200 are for meta-training, of which the last 100 are held out as `val`;
  `train` is the other 1100; `test` is the remaining 423. Every split has its characters rotated by
  90, 180 and 270 degrees as new classes (Santoro et al. 2016), so train/val/test hold 4400/400/1692
  classes. Rotating val and test too is the common protocol: ProtoNet's published Vinyals split
  files (jakesnell/prototypical-networks, data/omniglot/splits/vinyals/{val,test}.txt) list every
  val/test character at rot000..rot270, and MAML's data generator (cbfinn/maml) rotates the classes
  of test episodes as well. The 1100/100 train/val sizes follow MAML; ProtoNet used 1028/172.
  The rotated copies of a character always stay in the same split.

Decoded archives are cached with `cached_dataset` under `<root>/cache` (or `~/.cache/metazoo/cache`
when the root is read-only), keyed by archive name, size, mtime, image size and `VERSION`; a cache
hit loads in a fraction of a second. A local archive is validated by its contents (alphabet,
character and image counts), not by checksum, so rebuilt archives with the same images work.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from pathlib import Path

import torch

from metazoo.data.base import ClassDataset, DatasetSpec
from metazoo.data.cache import (
    cache_key,
    cached_dataset,
    image_tensor,
    resolve_root,
    writable_cache_dir,
)
from metazoo.data.check import DataCheck
from metazoo.data.download import download as fetch
from metazoo.data.images import decode_gray
from metazoo.errors import ConfigError, DataError

VERSION = 1  # bump when decoding changes, so stale caches are not reused
SPLIT_SEED = 1623  # the split's own constant seed: the same classes for every run
URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}"
ARCHIVES: dict[str, str] = {"background": "images_background.zip",
                            "evaluation": "images_evaluation.zip"}
MD5: dict[str, str] = {"images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
                       "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811"}
# (characters, images) each published archive must hold; a mismatch means a damaged archive
EXPECTED: dict[str, tuple[int, int]] = {"background": (964, 19280), "evaluation": (659, 13180)}
NUM_META_TRAIN = 1200  # of 1623 characters (Vinyals et al. 2016); the rest are `test`
NUM_VAL = 100  # held out of the meta-training characters (MAML's choice)
SPLITS = ("train", "val", "test", "background", "evaluation")
_ENTRY = re.compile(r"^[^/]+/([^/]+)/([^/]+)/([^/]+\.png)$", re.IGNORECASE)


def find_archive(root: Path, name: str) -> Path | None:
    """`root/name` or `root/omniglot/name`, whichever exists first."""
    for folder in (root, root / "omniglot"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_archive(path: Path, part: str, image_size: int) -> ClassDataset:
    """Decode every PNG of one official archive into a `ClassDataset` (classes sorted by name).

    Raises:
        DataError: not a zip, a damaged entry, a corrupt PNG, or counts other than `EXPECTED`.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            by_class: dict[str, list[zipfile.ZipInfo]] = {}
            for info in zf.infolist():
                m = _ENTRY.match(info.filename)
                if m and not info.is_dir():
                    by_class.setdefault(f"{m[1]}/{m[2]}", []).append(info)
            n_chars, n_images = len(by_class), sum(len(v) for v in by_class.values())
            want = EXPECTED.get(part)
            if want is not None and (n_chars, n_images) != want:
                raise DataError(f"{path} holds {n_chars} characters / {n_images} PNGs, expected "
                                f"{want[0]} / {want[1]}; the archive is incomplete or not the "
                                "official one: delete it and download it again")
            names = sorted(by_class)
            arrays, labels = [], []
            for label, cls in enumerate(names):
                for info in sorted(by_class[cls], key=lambda i: i.filename):
                    try:
                        data = zf.read(info)
                    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                        raise DataError(f"{path}: cannot read {info.filename} ({e}); the archive "
                                        "is damaged: delete it and download it again") from None
                    arrays.append(decode_gray(data, image_size, invert=True,
                                              name=f"{path}:{info.filename}"))
                    labels.append(label)
    except (zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable zip archive ({e}); it may be truncated: "
                        "delete it and download it again") from None
    if not arrays:
        raise DataError(f"{path} holds no PNG images under <set>/<alphabet>/<character>/")
    return ClassDataset(image_tensor(arrays), torch.tensor(labels, dtype=torch.long),
                        tuple(names), f"omniglot/{part}")


LAYOUT = "\n".join(
    [f"{name}  (md5 {MD5[name]}; {EXPECTED[part][0]} characters, {EXPECTED[part][1]} PNGs)"
     for part, name in ARCHIVES.items()]
    + ["in DIR or DIR/omniglot/, as published at " + URL.format(name="")])


def check(root: Path) -> DataCheck:
    """Which of the two official archives are under `root` (contents are checked on loading)."""
    found, missing = [], []
    for name in ARCHIVES.values():
        path = find_archive(root, name)
        if path is None:
            missing.append(name)
        else:
            found.append(f"{path} ({path.stat().st_size:,} bytes)")
    return DataCheck("omniglot", root, tuple(found), tuple(missing), LAYOUT,
                     "pass --data-root DIR (the folder holding them) or --set data.download=true")


def _locate(root: Path, part: str, download: bool) -> Path:
    """The archive of `part`, downloading it when allowed; a clear DataError otherwise."""
    name = ARCHIVES[part]
    path = find_archive(root, name)
    if path is not None:
        return path
    if not download:
        raise DataError(check(root).message())
    dest = root / "omniglot" / name
    try:
        return fetch(URL.format(name=name), dest, md5=MD5[name])
    except OSError as e:
        raise DataError(f"cannot write {dest} ({e}); pass a writable --data-root DIR") from None


def load_part(part: str, root: Path, download: bool, image_size: int) -> ClassDataset:
    """One published archive ("background" or "evaluation"), decoded or from the cache."""
    path = _locate(root, part, download)
    st = path.stat()
    key = cache_key(dataset="omniglot", archive=path.name, size=st.st_size,
                    mtime=st.st_mtime_ns, image_size=image_size, version=VERSION,
                    expected=EXPECTED.get(part))
    return cached_dataset(writable_cache_dir(root), key, f"omniglot/{part}",
                          lambda: read_archive(path, part, image_size))


def _order(name: str) -> str:
    """The class's place in the split permutation: a hash of the constant seed and its name."""
    return hashlib.sha256(f"{SPLIT_SEED}:{name}".encode()).hexdigest()


def vinyals_split(names: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """Character names of the Vinyals train/val/test split (before rotations).

    With all 1623 characters: 1100 / 100 / 423. With fewer (e.g. test archives), the sizes scale in
    the same proportions, each split keeping at least one character.
    """
    order = sorted(names, key=_order)
    n = len(order)
    if n < 3:
        raise DataError(f"Omniglot needs at least 3 characters for train/val/test, found {n}")
    n_meta = min(n - 1, max(2, round(n * NUM_META_TRAIN / 1623)))
    n_val = min(n_meta - 1, max(1, round(n * NUM_VAL / 1623)))
    return {"train": order[:n_meta - n_val], "val": order[n_meta - n_val:n_meta],
            "test": order[n_meta:]}


def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
         image_size: int = 28, seed: int = 0) -> ClassDataset:
    """One split of Omniglot as a `ClassDataset` of `[M, 1, S, S]` uint8 images, ink 255.

    Args:
        split: "train", "val", "test" (Vinyals split, x4 rotations as classes), or "background" /
            "evaluation" (the published archives, no rotations).
        root: folder holding the two archives (or `<root>/omniglot/`); see `resolve_root`.
        download: fetch missing archives from the official repository (MD5-checked).
        image_size: side of the square images, pixels.
        seed: ignored: the split is fixed by `SPLIT_SEED` so every run sees the same classes.

    Raises:
        ConfigError: unknown split or image size below 8.
        DataError: an archive is missing (and `download` is False), damaged or incomplete.
    """
    del seed  # the split is a property of the dataset, not of the run
    if split not in SPLITS:
        raise ConfigError(f"omniglot has no split '{split}'; choose one of {', '.join(SPLITS)}")
    if image_size < 8:
        raise ConfigError(f"omniglot image_size must be >= 8, got {image_size}")
    base = resolve_root(root)
    if split in ARCHIVES:
        return load_part(split, base, download, image_size)
    parts = [load_part(p, base, download, image_size) for p in ARCHIVES]
    offset = parts[0].num_classes
    everything = ClassDataset(torch.cat([p.images for p in parts]),
                              torch.cat([parts[0].labels, parts[1].labels + offset]),
                              parts[0].class_names + parts[1].class_names, "omniglot/all")
    index = {name: i for i, name in enumerate(everything.class_names)}
    chosen = sorted(index[c] for c in vinyals_split(everything.class_names)[split])
    return everything.select_classes(chosen, f"omniglot/{split}").with_rotations(
        f"omniglot/{split}")


SPEC = DatasetSpec("omniglot", load, "images", SPLITS,
                   "Lake et al. 2015; Vinyals split, rotations as classes for training",
                   True, True, check=check)
