"""Fungi loader on a tiny FGVCx Fungi 2018 release built here in its layout (folder and .tgz)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from metazoo.data import fungi
from metazoo.errors import ChecksumError, ConfigError, DataError

# two categories share a species name, as in the release (fgvcx_fungi_comp issue #1)
SPECIES = ("Abortiporus biennis", "Agaricus arvensis", "Agaricus augustus", "Amanita muscaria",
           "Boletus edulis", "Cantharellus cibarius", "Amanita muscaria", "Morchella esculenta",
           "Russula emetica", "Trametes versicolor")
CATEGORIES = len(SPECIES)
PER_CATEGORY = 3  # 2 in train.json, 1 in val.json


def _jpeg(cat: int, k: int) -> bytes:
    img = Image.new("RGB", (40, 52), (20 * cat, 60 + 40 * k, 255 - 20 * cat))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def image_path(cat: int, k: int) -> str:
    folder = f"{10000 + cat}_{SPECIES[cat % len(SPECIES)].replace(' ', '_')}"
    return f"images/{folder}/FVL{cat:04d}PIC{k:03d}.JPG"


def release_files(categories: int = CATEGORIES, per_category: int = PER_CATEGORY,
                  corrupt: str | None = None) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(images by path, annotation files by name), as the two archives hold them."""
    cats = [{"id": c, "name": SPECIES[c % len(SPECIES)], "supercategory": "Fungi"}
            for c in range(categories)]
    docs = {name: {"info": {"year": 2018}, "licenses": [], "categories": cats, "images": [],
                   "annotations": []} for name in fungi.ANNOTATION_FILES}
    images: dict[str, bytes] = {}
    image_id = 1
    for c in range(categories):
        for k in range(per_category):
            path = image_path(c, k)
            doc = docs["val.json" if k == per_category - 1 else "train.json"]
            doc["images"].append({"id": image_id, "file_name": path, "width": 40, "height": 52,
                                  "license": 0, "rights_holder": "x"})
            doc["annotations"].append({"id": image_id, "image_id": image_id, "category_id": c})
            images[path] = b"\xff\xd8 not a jpeg" if path == corrupt else _jpeg(c, k)
            image_id += 1
    return images, {name: json.dumps(doc).encode() for name, doc in docs.items()}


def write_tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_fungi(root: Path, *, categories: int = CATEGORIES, per_category: int = PER_CATEGORY,
               archive: bool = False, corrupt: str | None = None) -> Path:
    """Write the release into `root/fungi/` (extracted: `train.json`, `val.json`, `images/`; or
    with `archive=True` the two archives) and return `root`, the data root to load from.
    `fungi.EXPECTED` must be set to `(categories, categories * per_category)` (see `tiny`)."""
    folder = root / "fungi"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = release_files(categories, per_category, corrupt)
    if archive:
        write_tgz(folder / fungi.IMAGES_ARCHIVE, images)
        write_tgz(folder / fungi.ANNOTATIONS_ARCHIVE, annotations)
    else:
        for rel, data in {**images, **annotations}.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    return root


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(fungi, "EXPECTED", (CATEGORIES, CATEGORIES * PER_CATEGORY))


@pytest.fixture
def root(tmp_path, tiny) -> Path:
    return make_fungi(tmp_path / "data")


def test_meta_dataset_split_reproduces_the_published_split_file():
    # google-research/meta-dataset meta_dataset/dataset_conversion/splits/fungi_splits.json
    split = fungi.meta_dataset_split(1394)
    assert [len(split[s]) for s in ("train", "val", "test")] == [994, 200, 200]
    assert split["train"][:5] == [226, 283, 256, 334, 919]
    assert split["val"][:5] == [0, 4, 6, 15, 22]
    assert split["test"][:5] == [8, 9, 19, 38, 44]
    assert sorted(i for ids in split.values() for i in ids) == list(range(1394))


def test_split_sizes_labels_and_names(root):
    splits = {s: fungi.load(s, root=root) for s in ("train", "val", "test", "all")}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [8, 1, 1]
    everything = splits["all"]
    assert everything.class_names[:2] == ("0000.Abortiporus biennis", "0001.Agaricus arvensis")
    assert "0003.Amanita muscaria" in everything.class_names
    assert "0006.Amanita muscaria" in everything.class_names  # same species name, two classes
    expected = fungi.meta_dataset_split(CATEGORIES)
    for name in ("train", "val", "test"):
        ds = splits[name]
        assert ds.class_names == tuple(everything.class_names[i] for i in sorted(expected[name]))
        assert len(ds) == ds.num_classes * PER_CATEGORY  # train.json + val.json images merged
        assert ds.labels.tolist() == [i for i in range(ds.num_classes)
                                      for _ in range(PER_CATEGORY)]
    names = [set(splits[s].class_names) for s in ("train", "val", "test")]
    assert set.union(*names) == set(everything.class_names) and sum(map(len, names)) == CATEGORIES
    assert fungi.load("val", root=root, seed=9).class_names == splits["val"].class_names


def test_images_are_rgb_resized_to_the_asked_size(root):
    ds = fungi.load("all", root=root)
    assert ds.images.shape == (CATEGORIES * PER_CATEGORY, 3, 84, 84)
    assert ds.images.dtype == torch.uint8
    first = ds.images[0, :, 40, 40].to(torch.int64).tolist()  # category 0, k=0: (0, 60, 255)
    assert first[0] < 15 and abs(first[1] - 60) < 15 and first[2] > 240
    assert fungi.load("test", root=root, image_size=16).images.shape[1:] == (3, 16, 16)


def test_archives_give_the_same_pixels_as_the_folder(tmp_path, tiny):
    ref = fungi.load("all", root=make_fungi(tmp_path / "a"))
    packed = make_fungi(tmp_path / "b", archive=True)
    for root in (packed, packed / "fungi"):
        ds = fungi.load("all", root=root)
        assert ds.class_names == ref.class_names and torch.equal(ds.images, ref.images)
    assert sorted(p.name for p in (packed / "fungi").iterdir()) == \
        sorted([fungi.IMAGES_ARCHIVE, fungi.ANNOTATIONS_ARCHIVE, "cache"])  # nothing extracted


def test_mixed_extracted_annotations_and_archived_images(tmp_path, tiny):
    root = make_fungi(tmp_path / "data", archive=True)
    (root / "fungi" / fungi.ANNOTATIONS_ARCHIVE).unlink()
    _, annotations = release_files()
    for name, data in annotations.items():
        (root / "fungi" / name).write_bytes(data)
    assert fungi.load("all", root=root).num_classes == CATEGORIES


def test_missing_image_is_named(root):
    victim = root / "fungi" / image_path(4, 1)
    victim.unlink()
    with pytest.raises(DataError) as err:
        fungi.load("train", root=root)
    msg = str(err.value)
    assert image_path(4, 1) in msg and "1 of 30" in msg and "\n" not in msg
    assert "images/: 29 of 30 files" in fungi.check(root).report()


def test_missing_annotation_file_is_named(root):
    (root / "fungi" / "val.json").unlink()
    with pytest.raises(DataError, match=r"train\.json and val\.json") as err:
        fungi.load("train", root=root)
    assert "data.download=true" in str(err.value) and "\n" not in str(err.value)


def test_nothing_there_names_both_archives(tmp_path):
    with pytest.raises(DataError) as err:
        fungi.load("train", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert fungi.IMAGES_ARCHIVE in msg and fungi.ANNOTATIONS_ARCHIVE in msg and "nowhere" in msg


@pytest.mark.parametrize("archive", [False, True])
def test_corrupt_image_is_named(tmp_path, tiny, archive):
    bad = image_path(7, 0)
    root = make_fungi(tmp_path / "data", archive=archive, corrupt=bad)
    with pytest.raises(DataError, match=re.escape(bad)) as err:
        fungi.load("all", root=root)
    assert "\n" not in str(err.value)


def test_published_counts_are_checked(tmp_path):
    root = make_fungi(tmp_path / "data")  # EXPECTED not patched
    with pytest.raises(DataError, match="10 categories / 30 images, expected 1394 / 89760"):
        fungi.load("all", root=root)


def test_damaged_annotations_name_the_file(root):
    (root / "fungi" / "train.json").write_text('{"images": [}')
    with pytest.raises(DataError, match=r"train\.json is not valid annotation JSON"):
        fungi.load("all", root=root)


def test_unsafe_file_name_is_refused(root):
    path = root / "fungi" / "val.json"
    doc = json.loads(path.read_text())
    doc["images"][0]["file_name"] = "../../etc/passwd"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"unsafe member '\.\./\.\./etc/passwd'"):
        fungi.load("all", root=root)


def test_cache_hit_skips_decoding(root, monkeypatch):
    first = fungi.load("val", root=root)
    assert list((root / "cache").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(fungi, "decode_rgb_images", boom)
    again = fungi.load("val", root=root)
    assert torch.equal(first.images, again.images) and first.class_names == again.class_names


def test_download_retries_then_checks_md5(tmp_path, tiny, file_server, monkeypatch):
    images, annotations = release_files()
    src = tmp_path / "src"
    src.mkdir()
    payload = {fungi.IMAGES_ARCHIVE: write_tgz(src / "i.tgz", images).read_bytes(),
               fungi.ANNOTATIONS_ARCHIVE: write_tgz(src / "a.tgz", annotations).read_bytes()}
    for name, data in payload.items():
        file_server.files[name] = data
        monkeypatch.setitem(fungi.MD5, name, hashlib.md5(data).hexdigest())
    file_server.fail[fungi.IMAGES_ARCHIVE] = 1  # one HTTP 500 first: retried
    monkeypatch.setattr(fungi, "URL", file_server.url("{name}"))
    root = tmp_path / "root"
    ds = fungi.load("all", root=root, download=True)
    assert ds.num_classes == CATEGORIES and len(file_server.requests) == 3
    assert sorted(p.name for p in (root / "fungi").iterdir()) == sorted(payload)

    (root / "fungi" / fungi.IMAGES_ARCHIVE).unlink()
    monkeypatch.setitem(fungi.MD5, fungi.IMAGES_ARCHIVE, "f" * 32)
    with pytest.raises(ChecksumError, match="f" * 32):
        fungi.load("all", root=root, download=True)
    assert [p.name for p in (root / "fungi").iterdir()] == [fungi.ANNOTATIONS_ARCHIVE]


def test_check_reports_found_and_layout(root, tmp_path):
    report = fungi.check(root)
    assert report.ok, report.report()
    text = report.report()
    assert "10 categories, 30 images" in text and "images/: 30 of 30 files" in text
    assert fungi.MD5[fungi.IMAGES_ARCHIVE] in text and fungi.MD5[fungi.ANNOTATIONS_ARCHIVE] in text
    assert not fungi.check(tmp_path / "empty").ok


def test_bad_split_and_size_are_config_errors(root):
    with pytest.raises(ConfigError, match="no split 'valid'"):
        fungi.load("valid", root=root)
    with pytest.raises(ConfigError, match="image_size"):
        fungi.load("train", root=root, image_size=2)


def test_spec():
    spec = fungi.SPEC
    assert spec.name == "fungi" and spec.image_size == 84 and spec.check is fungi.check
    assert spec.needs_files and set(spec.splits) >= {"train", "val", "test"}


def test_images_archive_with_a_top_folder_is_read(tmp_path, tiny):
    images, annotations = release_files()
    folder = tmp_path / "fungi"
    folder.mkdir()
    wrapped = {f"./fungi_train_val/{k}": v for k, v in images.items()}
    write_tgz(folder / fungi.IMAGES_ARCHIVE, wrapped)
    write_tgz(folder / fungi.ANNOTATIONS_ARCHIVE, {f"./{k}": v for k, v in annotations.items()})
    assert len(fungi.load("all", root=tmp_path)) == CATEGORIES * PER_CATEGORY
