"""Omniglot loader on tiny archives built here in the official layout, and on the real data."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from metazoo.data import omniglot
from metazoo.errors import ChecksumError, DataError

BACKGROUND = {"Latin": 3, "Greek": 2, "Korean": 3}  # alphabet -> characters
EVALUATION = {"Angelic": 2, "Tengwar": 3}
DRAWERS = 3
# the real environment, read at import, before the autouse fixture isolates HOME and METAZOO_DATA
REAL_DATA, REAL_HOME = os.environ.get("METAZOO_DATA"), os.environ.get("HOME")


def _png(char_id: int, drawer: int) -> bytes:
    """A 105x105 1-bit drawing: black strokes on white, like the official PNGs."""
    img = Image.new("1", (105, 105), 1)
    d = ImageDraw.Draw(img)
    x = 10 + (char_id * 17) % 60
    y = 10 + (char_id * 29) % 60
    d.line([(x, y), (x + 30, y + 5 * drawer), (105 - x, 95 - y)], fill=0, width=6)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_archive(path: Path, alphabets: dict[str, int], start_id: int = 1,
                 corrupt: str | None = None) -> Path:
    """An archive `<stem>/<alphabet>/characterNN/<id>_<drawer>.png`, as published."""
    stem = path.stem
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{stem}/", b"")
        char_id = start_id
        for alphabet, n in alphabets.items():
            for c in range(1, n + 1):
                for k in range(1, DRAWERS + 1):
                    name = f"{stem}/{alphabet}/character{c:02d}/{char_id:04d}_{k:02d}.png"
                    data = b"not a png" if name == corrupt else _png(char_id, k)
                    zf.writestr(name, data)
                char_id += 1
    return path


def counts(alphabets: dict[str, int]) -> tuple[int, int]:
    n = sum(alphabets.values())
    return n, n * DRAWERS


@pytest.fixture
def tiny(monkeypatch):
    """Expected archive contents patched to the tiny archives' counts."""
    monkeypatch.setitem(omniglot.EXPECTED, "background", counts(BACKGROUND))
    monkeypatch.setitem(omniglot.EXPECTED, "evaluation", counts(EVALUATION))


@pytest.fixture
def root(tmp_path, tiny) -> Path:
    make_archive(tmp_path / "images_background.zip", BACKGROUND)
    make_archive(tmp_path / "images_evaluation.zip", EVALUATION, start_id=9)
    return tmp_path


def test_published_sets_are_inverted_resized_and_named(root):
    ds = omniglot.load("background", root=root)
    assert ds.num_classes == 8 and len(ds) == 8 * DRAWERS
    assert ds.images.shape == (24, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert "Latin/character03" in ds.class_names and "Greek/character02" in ds.class_names
    assert int(ds.images[:, :, 0, 0].max()) == 0  # white paper -> 0
    assert int(ds.images.amax(dim=(1, 2, 3)).min()) >= 200  # every drawing has ink near 255
    small = omniglot.load("evaluation", root=root, image_size=14)
    assert small.images.shape == (5 * DRAWERS, 1, 14, 14)


def test_vinyals_splits_are_disjoint_and_rotated(root):
    splits = {s: omniglot.load(s, root=root) for s in ("train", "val", "test")}
    base = {s: {n.split("/rot")[0] for n in ds.class_names} for s, ds in splits.items()}
    assert not base["train"] & base["val"] and not base["train"] & base["test"]
    assert not base["val"] & base["test"]
    assert len(base["train"] | base["val"] | base["test"]) == 13
    for s, ds in splits.items():
        assert ds.num_classes == 4 * len(base[s])  # x4 rotations as new classes
        assert len(ds) == ds.num_classes * DRAWERS
    train = splits["train"]
    name = train.class_names[0]
    rot = train.class_names.index(f"{name}/rot90")
    a, b = train.images[train.labels == 0], train.images[train.labels == rot]
    assert torch.equal(torch.rot90(a, 1, dims=(2, 3)), b)


def test_split_ignores_run_seed_and_has_paper_sizes(root):
    assert omniglot.load("test", root=root, seed=0).class_names == \
        omniglot.load("test", root=root, seed=123).class_names
    names = [f"A{i // 20}/character{i % 20:02d}" for i in range(1623)]
    split = omniglot.vinyals_split(names)
    assert [len(split[s]) for s in ("train", "val", "test")] == [1100, 100, 423]
    assert omniglot.vinyals_split(list(reversed(names))) == split  # order of input is irrelevant


def test_cache_hit_skips_decoding(root, monkeypatch):
    first = omniglot.load("background", root=root)
    assert list((root / "cache").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(omniglot, "read_archive", boom)
    again = omniglot.load("background", root=root)
    assert torch.equal(first.images, again.images) and first.class_names == again.class_names


def test_read_only_root_falls_back_to_home_cache(root, isolated_home):
    (root / "cache").write_text("a file where the cache folder would go: root is unwritable")
    omniglot.load("evaluation", root=root)
    assert list((isolated_home / ".cache" / "metazoo" / "cache").glob("*.safetensors"))


def test_accepts_omniglot_subfolder(tmp_path, tiny):
    sub = tmp_path / "omniglot"
    sub.mkdir()
    make_archive(sub / "images_background.zip", BACKGROUND)
    assert omniglot.load("background", root=tmp_path).num_classes == 8


def test_wrong_counts_are_a_data_error(tmp_path):
    make_archive(tmp_path / "images_background.zip", BACKGROUND)  # EXPECTED not patched
    with pytest.raises(DataError, match="964 / 19280"):
        omniglot.load("background", root=tmp_path)


def test_corrupt_png_names_the_file(tmp_path, tiny):
    bad = "images_background/Greek/character01/0004_02.png"
    make_archive(tmp_path / "images_background.zip", BACKGROUND, corrupt=bad)
    with pytest.raises(DataError, match=re.escape(bad)):
        omniglot.load("background", root=tmp_path)


def test_truncated_zip_is_a_data_error(tmp_path, tiny):
    good = make_archive(tmp_path / "good.zip", BACKGROUND).read_bytes()
    (tmp_path / "images_background.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated"):
        omniglot.load("background", root=tmp_path)


def test_corrupted_compressed_member_is_named(tmp_path, tiny):
    (tmp_path / "stored").mkdir()
    stored = make_archive(tmp_path / "stored" / "images_background.zip", BACKGROUND)
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info) * 20)  # long enough to deflate in blocks
    bad = "images_background/Greek/character01/0004_02.png"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(bad)
    raw = bytearray(path.read_bytes())
    data = info.header_offset + 30 + len(bad.encode())  # local header, then compressed bytes
    for i in range(data + 8, data + 40):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"cannot read {re.escape(bad)}.*damaged"):
        omniglot.load("background", root=tmp_path)


def test_missing_archive_says_where_and_what_to_pass(tmp_path):
    with pytest.raises(DataError) as err:
        omniglot.load("train", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "--data-root" in msg and "data.download=true" in msg and "nowhere" in msg
    assert "\n" not in msg


def test_download_from_server_with_md5(tmp_path, tiny, file_server, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for name, alphabets, start in (("images_background.zip", BACKGROUND, 1),
                                   ("images_evaluation.zip", EVALUATION, 9)):
        data = make_archive(src / name, alphabets, start).read_bytes()
        file_server.files[name] = data
        monkeypatch.setitem(omniglot.MD5, name, hashlib.md5(data).hexdigest())
    monkeypatch.setattr(omniglot, "URL", file_server.url("{name}"))
    root = tmp_path / "root"
    ds = omniglot.load("test", root=root, download=True)
    assert (root / "omniglot" / "images_background.zip").exists() and ds.num_classes > 0
    assert len(file_server.requests) == 2

    (root / "omniglot" / "images_evaluation.zip").unlink()
    monkeypatch.setitem(omniglot.MD5, "images_evaluation.zip", "f" * 32)
    with pytest.raises(ChecksumError, match="f" * 32):
        omniglot.load("evaluation", root=root, download=True)
    assert list((root / "omniglot").iterdir()) == [root / "omniglot" / "images_background.zip"]


def real_root() -> Path | None:
    here = Path(__file__).resolve().parents[2]  # the repository
    for cand in (Path(REAL_DATA) if REAL_DATA else None, Path("/work/shared/data/omniglot"),
                 here.parent / "shared" / "data" / "omniglot"):
        if cand is not None and omniglot.find_archive(cand, "images_evaluation.zip"):
            return cand
    return None


@pytest.mark.omniglot
def test_real_omniglot(monkeypatch):
    root = real_root()
    if root is None:
        pytest.skip("real Omniglot archives not found in $METAZOO_DATA, /work/shared/data/omniglot "
                    "or ../shared/data/omniglot")
    if REAL_HOME:  # decode once per machine: use the real cache (the shared root is read-only)
        monkeypatch.setenv("HOME", REAL_HOME)
    bg = omniglot.load("background", root=root)
    ev = omniglot.load("evaluation", root=root)
    assert (bg.num_classes, len(bg)) == (964, 19280)
    assert (ev.num_classes, len(ev)) == (659, 13180)
    assert bg.num_classes + ev.num_classes == 1623 and len(bg) + len(ev) == 32460
    sizes = {s: omniglot.load(s, root=root).num_classes for s in ("train", "val", "test")}
    assert sizes == {"train": 4 * 1100, "val": 4 * 100, "test": 4 * 423}
    start = time.perf_counter()
    omniglot.load("train", root=root)
    assert time.perf_counter() - start < 3.0  # a cache hit (well under 1 s on an idle machine)
