"""The user's image folder: channels, class splits, cache, and errors, on folders made here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from metazoo.data import folder
from metazoo.errors import ConfigError, DataError


def gray(value: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("L", size, value)


def make_folder(root: Path, classes: int = 10, per_class: int = 2, colour: bool = False) -> Path:
    """`root/classNN/imgK.<ext>` of mixed formats, sizes and modes; one RGB image if `colour`."""
    exts = [".png", ".jpg", ".bmp", ".gif", ".webp"]
    for c in range(classes):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        for k in range(per_class):
            img = gray(10 * c + k, size=(20 + 7 * c, 30 + k))
            ext = exts[(c + k) % len(exts)]
            if ext == ".png" and k == 1:
                img = img.convert("RGB")  # stored as RGB but colourless: still grayscale
            img.save(d / f"img{k}{ext}")
    (root / "class00" / "notes.txt").write_text("not an image, ignored")
    if colour:
        Image.new("RGBA", (16, 16), (200, 30, 10, 255)).save(root / "class01" / "red.png")
    return root


def test_grayscale_folder_has_one_channel_and_is_not_inverted(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = folder.load("all", root=root, image_size=16)
    assert ds.images.shape == (20, 1, 16, 16) and ds.num_classes == 10
    assert ds.class_names[:2] == ("class00", "class01")
    assert int(ds.images[ds.labels == 3].float().mean().round()) in (30, 31)  # stored as is


def test_one_colour_image_makes_the_dataset_rgb(tmp_path):
    root = make_folder(tmp_path / "imgs", colour=True)
    ds = folder.load("all", root=root, image_size=8)
    assert ds.images.shape == (21, 3, 8, 8)
    red = ds.images[ds.labels == 1][-1]  # files sorted: img0, img1, red
    assert red[:, 4, 4].tolist() == [200, 30, 10]


def test_splits_are_seeded_disjoint_70_10_20(tmp_path):
    root = make_folder(tmp_path / "imgs")
    names = {s: set(folder.load(s, root=root, seed=3).class_names)
             for s in ("train", "val", "test")}
    assert [len(names[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    assert names["train"] | names["val"] | names["test"] == {f"class{c:02d}" for c in range(10)}
    assert set(folder.load("train", root=root, seed=3).class_names) == names["train"]
    others = [frozenset(folder.split_classes(10, s)["train"]) for s in range(8)]
    assert len(set(others)) > 1  # the seed chooses the split
    assert all(len(v) >= 1 for v in folder.split_classes(3, 0).values())


def test_listed_splits_replace_the_seeded_one(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=5, per_class=1)
    (root / "train.txt").write_text("# published split\nclass03\nclass01\n\nclass00\n")
    (root / "val.txt").write_text("class02\n")
    (root / "test.txt").write_text("class04\n")
    for seed in (0, 5):  # the lists, whatever the seed
        assert folder.load("train", root=root, seed=seed).class_names == (
            "class00", "class01", "class03")
        assert folder.load("test", root=root, seed=seed).class_names == ("class04",)
    assert len(folder.load("all", root=root).class_names) == 5  # the .txt files are no class
    (root / "test.txt").write_text("class02\n")
    with pytest.raises(DataError, match=r"class02.*both val\.txt and test\.txt"):
        folder.load("train", root=root)
    (root / "test.txt").write_text("class09\n")
    with pytest.raises(DataError, match="'class09', which has no folder"):
        folder.load("train", root=root)
    (root / "test.txt").unlink()
    with pytest.raises(DataError, match=r"has no test\.txt"):
        folder.load("val", root=root)


def test_cache_is_used_outside_the_folder_and_invalidated_by_edits(tmp_path, monkeypatch,
                                                                   isolated_home):
    root = make_folder(tmp_path / "imgs")
    monkeypatch.setenv("METAZOO_DATA", str(root))  # even then the cache stays out of the folder
    first = folder.load("all", root=root, image_size=12)
    assert not (root / "cache").exists()
    assert list((isolated_home / ".cache" / "metazoo" / "cache").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(folder, "load_class_folder", boom)
    assert torch.equal(folder.load("all", root=root, image_size=12).images, first.images)
    gray(255).save(root / "class05" / "new.png")  # a new file: the key changes, decode again
    with pytest.raises(AssertionError, match="decoded again"):
        folder.load("all", root=root, image_size=12)


def test_load_class_folder_and_load_images(tmp_path):
    root = make_folder(tmp_path / "support", classes=3, per_class=2)
    images, labels, names, files = folder.load_class_folder(root, 10)
    assert images.shape == (6, 1, 10, 10) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] and names == ["class00", "class01", "class02"]
    assert [f.parent.name for f in files] == ["class00", "class00", "class01", "class01",
                                              "class02", "class02"]
    rgb, _, _, _ = folder.load_class_folder(root, 10, channels=3)
    assert rgb.shape == (6, 3, 10, 10)
    query = tmp_path / "query"
    query.mkdir()
    gray(7).save(query / "b.png")
    gray(9).save(query / "a.jpeg")
    imgs, paths = folder.load_images(query, 5, channels=1)
    assert imgs.shape == (2, 1, 5, 5) and [p.name for p in paths] == ["a.jpeg", "b.png"]
    mixed, paths = folder.load_images([query / "b.png", query], 5, channels=1)  # file, folder
    assert [p.name for p in paths] == ["b.png", "a.jpeg", "b.png"]
    assert torch.equal(mixed[0], mixed[2]) and torch.equal(mixed[1], imgs[0])


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        folder.load("all", root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        folder.load("all", root=tmp_path / "empty")
    with pytest.raises(DataError, match="holds no images"):
        folder.load_images(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="does not exist; give image files or folders"):
        folder.load_images(tmp_path / "missing.png", 8)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image file"):
        folder.load_images([tmp_path / "notes.txt"], 8)
    root = make_folder(tmp_path / "imgs", classes=3)
    (root / "class09").mkdir()
    with pytest.raises(DataError, match="class09"):
        folder.load("all", root=root)
    (root / "class09").rmdir()
    (root / "class01" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        folder.load("all", root=root)
    (root / "class01" / "broken.jpg").unlink()
    with pytest.raises(ConfigError, match="no split"):
        folder.load("everything", root=root)
    two = make_folder(tmp_path / "two", classes=2)
    with pytest.raises(DataError, match="at least 3"):
        folder.load("train", root=two)


def _bomb_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header declares `width` x `height` pixels (with a valid CRC)."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    start = raw.index(b"IHDR")
    raw[start + 4:start + 12] = struct.pack(">II", width, height)
    raw[start + 17:start + 21] = struct.pack(">I", zlib.crc32(bytes(raw[start:start + 17])))
    return bytes(raw)


def test_an_image_declaring_huge_dimensions_is_refused_before_decoding(tmp_path):
    root = make_folder(tmp_path / "images", classes=3, per_class=2)
    bomb = root / "class00" / "bomb.png"
    bomb.write_bytes(_bomb_png(30000, 30000))
    with pytest.raises(DataError, match=r"bomb\.png.*decompression bomb") as err:
        folder.load("all", root=root)  # Pillow's own refusal, above 179 M pixels
    assert "\n" not in str(err.value)
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "q.png").write_bytes(_bomb_png(8000, 8000))  # ours: 64 M > MAX_PIXELS
    with pytest.raises(DataError, match=r"q\.png declares 8000x8000 pixels"):
        folder.load_images(queries, 28)
