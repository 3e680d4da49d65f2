"""miniImageNet loader on tiny files written here in the two published layouts."""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metazoo.data import miniimagenet
from metazoo.errors import ConfigError, DataError

# real wnids of the Ravi & Larochelle split, 3 per split
WNIDS = {"train": ("n01532829", "n01558993", "n01704323"),
         "val": ("n01855672", "n02091244", "n02114548"),
         "test": ("n01930112", "n01981276", "n02099601")}
PER_CLASS = 4
JPEG_SIZE = (12, 10)  # width, height: not square, not 84


def colour(wnid: str) -> tuple[int, int, int]:
    """A flat colour per class, far from the others, so labels can be checked from pixels."""
    k = sum(WNIDS.values(), ()).index(wnid)
    return (40 + 20 * k, 220 - 20 * k, 60 + 15 * (k % 3))


def _jpeg(wnid: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", JPEG_SIZE, colour(wnid)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_miniimagenet_csv(root: Path, folder: str = "miniimagenet") -> Path:
    """`<root>/<folder>/{train,val,test}.csv` + `images/*.jpg`, as Ravi & Larochelle publish.

    Returns the data root to pass as `root`.
    """
    base = root / folder
    (base / "images").mkdir(parents=True, exist_ok=True)
    for split, wnids in WNIDS.items():
        lines = ["filename,label"]
        for wnid in wnids:
            for i in range(PER_CLASS):
                name = f"{wnid}{i + 1:08d}.jpg"
                (base / "images" / name).write_bytes(_jpeg(wnid))
                lines.append(f"{name},{wnid}")
        (base / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def make_miniimagenet_pickles(root: Path, folder: str = "mini-imagenet") -> Path:
    """`<root>/<folder>/mini-imagenet-cache-{split}.pkl`: image_data [N, 84, 84, 3] uint8 and
    class_dict {wnid: [rows]} (rows of a class interleaved with the others', as in the release).

    Returns the data root to pass as `root`.
    """
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    for split, wnids in WNIDS.items():
        n = len(wnids) * PER_CLASS
        data = np.zeros((n, 84, 84, 3), dtype=np.uint8)
        class_dict: dict[str, list[int]] = {w: [] for w in wnids}
        for row in range(n):
            wnid = wnids[row % len(wnids)]
            data[row] = colour(wnid)
            class_dict[wnid].append(row)
        with open(base / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f, protocol=4)
    return root


def _assert_split(ds, split: str, size: int) -> None:
    assert ds.class_names == tuple(sorted(WNIDS[split]))
    assert ds.images.shape == (3 * PER_CLASS, 3, size, size) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [c for c in range(3) for _ in range(PER_CLASS)]
    assert ds.name == f"miniimagenet/{split}"
    for row in range(len(ds)):
        want = torch.tensor(colour(ds.class_names[int(ds.labels[row])]), dtype=torch.float32)
        got = ds.images[row].float().mean(dim=(1, 2))
        assert float((got - want).abs().max()) < 6  # JPEG is lossy, the colour survives


@pytest.mark.parametrize("make", [make_miniimagenet_csv, make_miniimagenet_pickles])
def test_both_layouts_give_the_splits_sorted_by_wnid(tmp_path, make):
    root = make(tmp_path)
    for split in miniimagenet.SPLITS:
        _assert_split(miniimagenet.load(split, root=root), split, 84)


@pytest.mark.parametrize("make", [make_miniimagenet_csv, make_miniimagenet_pickles])
def test_resizes_to_the_asked_size(tmp_path, make):
    root = make(tmp_path)
    _assert_split(miniimagenet.load("val", root=root, image_size=20), "val", 20)


def test_root_itself_may_hold_the_files(tmp_path):
    make_miniimagenet_csv(tmp_path / "x", folder=".")
    assert miniimagenet.load("test", root=tmp_path / "x").num_classes == 3


def test_cache_hit_skips_decoding(tmp_path, monkeypatch):
    root = make_miniimagenet_csv(tmp_path)
    first = miniimagenet.load("train", root=root)
    assert list((root / "cache").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(miniimagenet, "read_csv_split", boom)
    again = miniimagenet.load("train", root=root)
    assert torch.equal(first.images, again.images) and first.class_names == again.class_names
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another entry
        miniimagenet.load("train", root=root, image_size=32)


def test_missing_csv_is_named(tmp_path):
    root = make_miniimagenet_csv(tmp_path)
    (root / "miniimagenet" / "val.csv").unlink()
    with pytest.raises(DataError) as err:
        miniimagenet.load("val", root=root)
    msg = str(err.value)
    assert "val.csv" in msg and "\n" not in msg and "miniimagenet" in msg
    assert miniimagenet.load("train", root=root).num_classes == 3  # other splits still load


def test_missing_images_are_counted_and_named(tmp_path):
    root = make_miniimagenet_csv(tmp_path)
    (root / "miniimagenet" / "images" / "n0153282900000002.jpg").unlink()
    with pytest.raises(DataError) as err:
        miniimagenet.load("train", root=root)
    msg = str(err.value)
    assert "images/ (JPEG files named in the CSVs: 1 of 36 missing" in msg
    assert "n0153282900000002.jpg" in msg and "\n" not in msg
    report = miniimagenet.check(root)
    assert not report.ok and "train.csv (12 rows, 3 classes)" in report.found


def test_nothing_there_names_both_layouts_and_download_is_refused(tmp_path):
    report = miniimagenet.check(tmp_path)
    assert not report.ok and any("train.csv" in m for m in report.missing)
    assert "mini-imagenet-cache-train.pkl" in report.layout
    with pytest.raises(DataError) as err:
        miniimagenet.load("train", root=tmp_path, download=True)
    msg = str(err.value)
    assert "no official download" in msg and "train.csv" in msg and "images/" in msg
    assert "mini-imagenet-cache-{train,val,test}.pkl" in msg and "\n" not in msg


def test_check_reports_complete_layouts(tmp_path):
    csv_root = make_miniimagenet_csv(tmp_path / "a")
    report = miniimagenet.check(csv_root)
    assert report.ok and "images/ (36 JPEG files named in the CSVs)" in report.found
    pkl_root = make_miniimagenet_pickles(tmp_path / "b")
    report = miniimagenet.check(pkl_root)
    assert report.ok and report.root == pkl_root / "mini-imagenet" and len(report.found) == 3


def test_corrupt_jpeg_is_named(tmp_path):
    root = make_miniimagenet_csv(tmp_path)
    bad = root / "miniimagenet" / "images" / "n0211454800000003.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError) as err:
        miniimagenet.load("val", root=root)
    assert "n0211454800000003.jpg" in str(err.value) and "\n" not in str(err.value)


def test_bad_csv_header_is_a_data_error(tmp_path):
    root = make_miniimagenet_csv(tmp_path)
    path = root / "miniimagenet" / "test.csv"
    path.write_text(path.read_text().replace("filename,label", "file,class"))
    with pytest.raises(DataError, match=re.escape("header must be 'filename,label'")):
        miniimagenet.load("test", root=root)


def test_published_class_count_needs_600_images_each(tmp_path, monkeypatch):
    root = make_miniimagenet_csv(tmp_path)
    monkeypatch.setitem(miniimagenet.CLASSES, "train", 3)  # as many classes as the release
    with pytest.raises(DataError, match=r"3 of 3 classes do not hold 600 images"):
        miniimagenet.load("train", root=root)


def test_hostile_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    base = tmp_path / "miniimagenet"
    base.mkdir()
    with open(base / "mini-imagenet-cache-test.pkl", "wb") as f:
        pickle.dump({"image_data": Hostile(), "class_dict": {}}, f)
    with pytest.raises(DataError) as err:
        miniimagenet.load("test", root=tmp_path)
    msg = str(err.value)
    assert not marker.exists()
    assert "refuses global" in msg and "system" in msg and "mini-imagenet-cache-test.pkl" in msg
    assert "\n" not in msg


def test_pickle_with_wrong_contents_is_a_data_error(tmp_path):
    base = tmp_path / "miniimagenet"
    base.mkdir()
    data = np.zeros((2, 84, 84, 3), dtype=np.uint8)
    with open(base / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": data, "class_dict": {"n01855672": [0, 5]}}, f)
    with pytest.raises(DataError, match=r"row indices in 0\.\.1"):
        miniimagenet.load("val", root=tmp_path)


def test_unknown_split_and_tiny_size_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no split 'dev'"):
        miniimagenet.load("dev", root=tmp_path)
    with pytest.raises(ConfigError, match="image_size must be >= 8"):
        miniimagenet.load("train", root=tmp_path, image_size=4)
