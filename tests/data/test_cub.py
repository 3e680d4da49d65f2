"""CUB-200-2011 loader on a tiny release built here in the official layout (folder and .tgz)."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from metazoo.data import cub
from metazoo.errors import ChecksumError, ConfigError, DataError

NAMES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
         "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet",
         "007.Parakeet_Auklet", "008.Rhinoceros_Auklet")
CLASSES = len(NAMES)
PER_CLASS = 3


def _jpeg(class_id: int, k: int) -> bytes:
    """A small non-square photo-like JPEG whose colour tells its class."""
    img = Image.new("RGB", (48, 36), (40 * (class_id % 6), 200 - 20 * k, 30 * (class_id % 4)))
    img.paste((255, 0, 0) if class_id % 2 else (0, 0, 255), (8, 8, 30, 28))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def release_files(classes: int = CLASSES, per_class: int = PER_CLASS,
                  corrupt: str | None = None) -> dict[str, bytes]:
    """The files of the release (paths relative to the archive's top), as published."""
    files: dict[str, bytes] = {}
    class_lines, image_lines, label_lines, split_lines = [], [], [], []
    image_id = 1
    for c in range(1, classes + 1):
        folder = NAMES[c - 1] if c <= len(NAMES) else f"{c:03d}.Bird_{c}"
        class_lines.append(f"{c} {folder}")
        stem = folder.split(".", 1)[1].title()
        for k in range(1, per_class + 1):
            rel = f"{folder}/{stem}_{k:04d}_{1000 + image_id}.jpg"
            image_lines.append(f"{image_id} {rel}")
            label_lines.append(f"{image_id} {c}")
            split_lines.append(f"{image_id} {k % 2}")
            path = f"{cub.FOLDER}/images/{rel}"
            files[path] = b"\xff\xd8 not a jpeg" if rel == corrupt else _jpeg(c, k)
            image_id += 1
    for name, lines in (("classes.txt", class_lines), ("images.txt", image_lines),
                        ("image_class_labels.txt", label_lines),
                        ("train_test_split.txt", split_lines)):
        files[f"{cub.FOLDER}/{name}"] = ("\n".join(lines) + "\n").encode()
    files["attributes.txt"] = b"1 has_bill_shape::curved_(up_or_down)\n"
    return files


def make_cub(root: Path, *, classes: int = CLASSES, per_class: int = PER_CLASS,
             archive: bool = False, corrupt: str | None = None) -> Path:
    """Write the release under `root` (extracted `CUB_200_2011/`, or `CUB_200_2011.tgz` with
    `archive=True`) and return `root`, the data root to load from. `cub.EXPECTED` must be set to
    `(classes, classes * per_class)` by the caller (see `tiny`)."""
    root.mkdir(parents=True, exist_ok=True)
    files = release_files(classes, per_class, corrupt)
    if archive:
        write_tgz(root / cub.ARCHIVE, files)
    else:
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    return root


def write_tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(cub, "EXPECTED", (CLASSES, CLASSES * PER_CLASS))


@pytest.fixture
def root(tmp_path, tiny) -> Path:
    return make_cub(tmp_path / "data")


def test_chen_split_sizes_labels_and_names(root):
    splits = {s: cub.load(s, root=root) for s in ("train", "val", "test", "all")}
    assert splits["train"].class_names == NAMES[0::2]  # i % 2 == 0
    assert splits["val"].class_names == (NAMES[1], NAMES[5])  # i % 4 == 1
    assert splits["test"].class_names == (NAMES[3], NAMES[7])  # i % 4 == 3
    assert splits["all"].class_names == NAMES
    for name, ds in splits.items():
        assert len(ds) == ds.num_classes * PER_CLASS and ds.name == f"cub/{name}"
        assert ds.labels.tolist() == [i for i in range(ds.num_classes) for _ in range(PER_CLASS)]
    assert cub.load("test", root=root, seed=5).class_names == splits["test"].class_names


def test_chen_rule_on_the_200_classes_gives_100_50_50():
    names = [f"{i:03d}.Bird" for i in range(200, 0, -1)]
    split = cub.chen_split(names)
    assert [len(split[s]) for s in ("train", "val", "test")] == [100, 50, 50]
    assert split["train"][:2] == ["001.Bird", "003.Bird"] and split["val"][:2] == \
        ["002.Bird", "006.Bird"] and split["test"][:2] == ["004.Bird", "008.Bird"]
    assert len(set().union(*split.values())) == 200


def test_images_are_rgb_resized_to_the_asked_size(root):
    ds = cub.load("all", root=root)
    assert ds.images.shape == (CLASSES * PER_CLASS, 3, 84, 84) and ds.images.dtype == torch.uint8
    small = cub.load("train", root=root, image_size=20)
    assert small.images.shape == (4 * PER_CLASS, 3, 20, 20)
    # class 001 has a red patch in the middle, class 002 a blue one: colour survives decoding
    centre = ds.images[:, :, 42, 42].to(torch.int64)
    assert int(centre[0, 0]) > 200 > int(centre[0, 2])
    assert int(centre[PER_CLASS, 2]) > 200 > int(centre[PER_CLASS, 0])


def test_archive_and_every_folder_layout_give_the_same_pixels(tmp_path, tiny):
    ref = cub.load("all", root=make_cub(tmp_path / "a"))
    roots = [make_cub(tmp_path / "b", archive=True),  # <root>/CUB_200_2011.tgz
             make_cub(tmp_path / "c" / "cub", archive=True).parent,  # <root>/cub/...tgz
             make_cub(tmp_path / "d" / "cub").parent,  # <root>/cub/CUB_200_2011/
             make_cub(tmp_path / "e") / cub.FOLDER]  # the folder itself
    for r in roots:
        ds = cub.load("all", root=r)
        assert ds.class_names == ref.class_names and torch.equal(ds.images, ref.images), r


def test_tar_is_streamed_not_extracted(tmp_path, tiny):
    root = make_cub(tmp_path / "data", archive=True)
    cub.load("val", root=root)
    assert sorted(p.name for p in root.iterdir()) == sorted([cub.ARCHIVE, "cache"])


def test_missing_image_is_named(root):
    victim = next((root / cub.FOLDER / "images" / NAMES[2]).iterdir())
    victim.unlink()
    with pytest.raises(DataError) as err:
        cub.load("train", root=root)
    msg = str(err.value)
    assert victim.name in msg and "23 of 24" not in msg and "1 of 24" in msg and "\n" not in msg
    assert not cub.check(root).ok and f"images/: 23 of {CLASSES * PER_CLASS} files" in \
        cub.check(root).report()


def test_missing_list_file_is_named(root):
    (root / cub.FOLDER / "images.txt").unlink()
    with pytest.raises(DataError, match=r"images\.txt") as err:
        cub.load("train", root=root)
    assert "--data-root" in str(err.value) and "data.download=true" in str(err.value)


def test_nothing_there_says_what_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        cub.load("train", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert cub.ARCHIVE in msg and "nowhere" in msg and "data.download=true" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("archive", [False, True])
def test_corrupt_image_is_named(tmp_path, tiny, archive):
    bad = f"{NAMES[4]}/Crested_Auklet_0002_1014.jpg"
    root = make_cub(tmp_path / "data", archive=archive, corrupt=bad)
    with pytest.raises(DataError, match=re.escape(bad)) as err:
        cub.load("all", root=root)
    assert "\n" not in str(err.value)


def test_published_counts_are_checked(tmp_path):
    root = make_cub(tmp_path / "data")  # EXPECTED not patched: 200 / 11788
    with pytest.raises(DataError, match="8 classes / 24 images, expected 200 / 11788"):
        cub.load("train", root=root)


def test_malformed_list_line_names_file_and_line(root):
    path = root / cub.FOLDER / "classes.txt"
    path.write_text(path.read_text() + "garbage\n")
    with pytest.raises(DataError, match=r"classes\.txt:9: cannot parse 'garbage'"):
        cub.load("all", root=root)


def test_unsafe_and_truncated_archives_are_refused(tmp_path, tiny):
    files = release_files()
    files["../evil.jpg"] = b"x"
    write_tgz(tmp_path / cub.ARCHIVE, files)
    with pytest.raises(DataError, match=r"unsafe member '\.\./evil\.jpg'"):
        cub.load("all", root=tmp_path)
    assert not (tmp_path.parent / "evil.jpg").exists()
    good = write_tgz(tmp_path / "good.tgz", release_files()).read_bytes()
    (tmp_path / cub.ARCHIVE).write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated"):
        cub.load("all", root=tmp_path)


def test_cache_hit_skips_decoding(root, monkeypatch):
    first = cub.load("train", root=root)
    assert list((root / "cache").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(cub, "decode_rgb_images", boom)
    again = cub.load("train", root=root)
    assert torch.equal(first.images, again.images) and first.class_names == again.class_names
    assert cub.load("all", root=root, image_size=84).num_classes == CLASSES
    with pytest.raises(AssertionError, match="despite"):  # another size is another cache entry
        cub.load("all", root=root, image_size=32)


def test_download_retries_then_checks_md5(tmp_path, tiny, file_server, monkeypatch):
    data = write_tgz(tmp_path / "src.tgz", release_files()).read_bytes()
    file_server.files[cub.ARCHIVE] = data
    file_server.fail[cub.ARCHIVE] = 1  # one HTTP 500 first: retried
    monkeypatch.setattr(cub, "URL", file_server.url(cub.ARCHIVE))
    monkeypatch.setattr(cub, "MD5", hashlib.md5(data).hexdigest())
    root = tmp_path / "root"
    ds = cub.load("test", root=root, download=True)
    assert ds.num_classes == 2 and (root / "cub" / cub.ARCHIVE).read_bytes() == data
    assert len(file_server.requests) == 2

    (root / "cub" / cub.ARCHIVE).unlink()
    monkeypatch.setattr(cub, "MD5", "0" * 32)
    with pytest.raises(ChecksumError, match="0" * 32):
        cub.load("test", root=root, download=True, image_size=40)
    assert not list((root / "cub").iterdir())


def test_check_reports_found_and_layout(root, tmp_path):
    report = cub.check(root)
    assert report.ok and report.dataset == "cub"
    text = report.report()
    assert "classes.txt (8 classes)" in text and "images/: 24 of 24 files" in text
    assert cub.MD5 in text and "images/<NNN.Class_Name>/*.jpg" in text
    empty = cub.check(tmp_path / "empty")
    assert not empty.ok and cub.ARCHIVE in empty.message()


def test_bad_split_and_size_are_config_errors(root):
    with pytest.raises(ConfigError, match="no split 'novel'"):
        cub.load("novel", root=root)
    with pytest.raises(ConfigError, match="image_size"):
        cub.load("train", root=root, image_size=4)


def test_spec():
    spec = cub.SPEC
    assert spec.name == "cub" and spec.image_size == 84 and spec.check is cub.check
    assert spec.needs_files and not spec.ink_high and set(spec.splits) >= {"train", "val", "test"}
