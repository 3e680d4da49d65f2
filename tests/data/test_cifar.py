"""CIFAR-FS and FC100 on a tiny `cifar-100-python.tar.gz` written here in the release's format,
and the restricted unpickler they (and miniImageNet's caches) read through."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from metazoo.data import cifar100, cifar_fs, fc100
from metazoo.data.safe_pickle import load_pickle
from metazoo.errors import ChecksumError, ConfigError, DataError

PER_CLASS = {"train": 2, "test": 1}  # images of every one of the 100 classes in each file


class _Py2Pickler(pickle._Pickler):  # type: ignore[misc]
    """Writes `str` and `bytes` as Python 2 `str` (BINSTRING), as CIFAR-100's cPickle files do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_dumps(obj) -> bytes:
    """A protocol-2 pickle as Python 2 wrote it (numpy 1's `numpy.core` module names)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def pixel(fine: int, part: str, k: int) -> tuple[int, int, int]:
    """The flat colour of image `k` of class `fine` in file `part`: R is the class."""
    return (2 * fine + 1, 200 if part == "train" else 100, 10 * k)


def cifar100_members(per_class: dict[str, int] | None = None) -> dict[str, bytes]:
    """The three pickles of the release (`meta`, `train`, `test`), with `per_class` images of
    every class per file, in a shuffled order as in the release."""
    per_class = per_class or PER_CLASS
    coarse_of = [cifar100.COARSE_LABEL_NAMES.index(cifar100.COARSE_OF[f])
                 for f in cifar100.FINE_LABEL_NAMES]
    out = {"meta": py2_dumps({"fine_label_names": list(cifar100.FINE_LABEL_NAMES),
                              "coarse_label_names": list(cifar100.COARSE_LABEL_NAMES)})}
    rng = np.random.default_rng(0)
    for part, n in per_class.items():
        items = [(fine, k) for fine in range(100) for k in range(n)]
        items = [items[i] for i in rng.permutation(len(items))]
        data = np.empty((len(items), 3, 32, 32), dtype=np.uint8)
        for row, (fine, k) in enumerate(items):
            data[row] = np.array(pixel(fine, part, k), dtype=np.uint8)[:, None, None]
        out[part] = py2_dumps({
            "batch_label": f"{part}ing batch 1 of 1",
            "filenames": [f"{cifar100.FINE_LABEL_NAMES[f]}_s_{k:06d}.png" for f, k in items],
            "fine_labels": [f for f, _ in items],
            "coarse_labels": [coarse_of[f] for f, _ in items],
            "data": data.reshape(len(items), 3072),
        })
    return out


def make_cifar100(root: Path, members: dict[str, bytes] | None = None) -> Path:
    """`<root>/cifar-100-python.tar.gz` holding `cifar-100-python/{meta,train,test}`.

    Returns the data root to pass as `root`.
    """
    members = members or cifar100_members()
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / cifar100.ARCHIVE, "w:gz") as tf:
        dir_info = tarfile.TarInfo("cifar-100-python")
        dir_info.type = tarfile.DIRTYPE
        tf.addfile(dir_info)
        extra = {"file.txt~": b"an editor's backup, as in the release"}
        for name, data in {**extra, **members}.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return root


def make_cifar100_folder(root: Path, members: dict[str, bytes] | None = None) -> Path:
    """The archive extracted: `<root>/cifar100/cifar-100-python/{meta,train,test}`."""
    members = members or cifar100_members()
    folder = root / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_cifar100(tmp_path_factory.mktemp("cifar"))


def _check_rows(ds, size: int) -> None:
    """Every image has its class's colour; per class its 2 train images, then its test one."""
    n = sum(PER_CLASS.values())
    assert ds.images.shape == (n * ds.num_classes, 3, size, size)
    assert ds.class_counts.tolist() == [n] * ds.num_classes
    for c, name in enumerate(ds.class_names):
        fine = cifar100.FINE_LABEL_NAMES.index(name)
        rows = ds.images[ds.labels == c].float().mean(dim=(2, 3))
        assert rows[:, 0].tolist() == [2 * fine + 1] * n
        assert rows[:, 1].tolist() == [200, 200, 100]  # train images, then test


def test_cifar_fs_splits_have_the_paper_classes(archive):
    sizes = {}
    for split in cifar_fs.SPLITS:
        ds = cifar_fs.load(split, root=archive)
        assert set(ds.class_names) == set(cifar_fs.CLASSES[split])
        assert list(ds.class_names) == sorted(ds.class_names)  # fine-label order
        assert ds.name == f"cifar_fs/{split}" and ds.image_shape == (3, 32, 32)
        _check_rows(ds, 32)
        sizes[split] = ds.num_classes
    assert sizes == cifar_fs.NUM_CLASSES == {"train": 64, "val": 16, "test": 20}
    every = [c for s in cifar_fs.SPLITS for c in cifar_fs.CLASSES[s]]
    assert sorted(every) == sorted(cifar100.FINE_LABEL_NAMES)  # disjoint, all 100


def test_fc100_splits_are_whole_superclasses(archive):
    sizes = {}
    for split in fc100.SPLITS:
        ds = fc100.load(split, root=archive)
        assert {cifar100.COARSE_OF[c] for c in ds.class_names} == set(fc100.SUPERCLASSES[split])
        _check_rows(ds, 32)
        sizes[split] = ds.num_classes
    assert sizes == fc100.NUM_CLASSES == {"train": 60, "val": 20, "test": 20}
    # TADAM's indices name the super-classes of the paper's appendix
    assert fc100.SUPERCLASSES["val"] == ("large_carnivores", "large_omnivores_and_herbivores",
                                         "non-insect_invertebrates", "small_mammals")
    assert fc100.SUPERCLASSES["test"] == ("aquatic_mammals", "insects", "medium_mammals",
                                          "people")


def test_resizes_to_the_asked_size(archive):
    ds = fc100.load("test", root=archive, image_size=16)
    assert ds.images.shape[1:] == (3, 16, 16)
    _check_rows(ds, 16)  # flat colours survive the resize


def test_extracted_folder_in_the_cifar100_subfolder(tmp_path):
    root = make_cifar100_folder(tmp_path)
    ds = cifar_fs.load("val", root=root)
    assert ds.num_classes == 16
    assert cifar_fs.check(root).ok


def test_one_decode_serves_both_datasets(tmp_path, monkeypatch):
    root = make_cifar100(tmp_path)
    first = cifar_fs.load("train", root=root)
    assert list((root / "cache").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(cifar100, "read_cifar100", boom)
    assert torch.equal(cifar_fs.load("train", root=root).images, first.images)
    assert fc100.load("val", root=root).num_classes == 20


def test_missing_archive_and_member_are_named(tmp_path):
    with pytest.raises(DataError) as err:
        cifar_fs.load("train", root=tmp_path)
    msg = str(err.value)
    assert "cifar-100-python.tar.gz" in msg and "data.download=true" in msg and "\n" not in msg
    members = cifar100_members()
    del members["test"]
    root = make_cifar100_folder(tmp_path / "partial", members)
    report = fc100.check(root)
    assert not report.ok and report.missing[0].startswith("cifar100/cifar-100-python/test")
    assert "cifar100/cifar-100-python/meta" in report.found[0]
    assert cifar100.MD5 in report.layout
    with pytest.raises(DataError, match="missing cifar100/cifar-100-python/test"):
        fc100.load("train", root=root)
    make_cifar100(tmp_path / "short", members)
    with pytest.raises(DataError, match="lacks cifar-100-python/test"):
        fc100.load("train", root=tmp_path / "short")


def test_truncated_archive_is_a_data_error(tmp_path, archive):
    data = (archive / cifar100.ARCHIVE).read_bytes()
    (tmp_path / cifar100.ARCHIVE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        cifar_fs.load("test", root=tmp_path)
    assert "\n" not in str(err.value)


def test_wrong_label_names_are_refused(tmp_path):
    members = cifar100_members()
    names = list(cifar100.FINE_LABEL_NAMES)
    names[3] = "teddy_bear"
    members["meta"] = py2_dumps({"fine_label_names": names,
                                 "coarse_label_names": list(cifar100.COARSE_LABEL_NAMES)})
    root = make_cifar100_folder(tmp_path, members)
    with pytest.raises(DataError, match="at 3 'teddy_bear' where the release has 'bear'"):
        cifar_fs.load("train", root=root)


def test_hostile_member_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    members = cifar100_members()
    members["meta"] = pickle.dumps({"fine_label_names": Hostile()}, protocol=2)
    root = make_cifar100(tmp_path / "root", members)
    with pytest.raises(DataError) as err:
        fc100.load("train", root=root)
    msg = str(err.value)
    assert not marker.exists() and "\n" not in msg
    assert "cifar-100-python/meta" in msg and "refuses global" in msg and "system" in msg


def test_download_retries_then_checks_md5(tmp_path, archive, file_server, monkeypatch):
    data = (archive / cifar100.ARCHIVE).read_bytes()
    file_server.files[cifar100.ARCHIVE] = data
    file_server.fail[cifar100.ARCHIVE] = 1  # one 500, then the file
    monkeypatch.setattr(cifar100, "URL", file_server.url(cifar100.ARCHIVE))
    monkeypatch.setattr(cifar100, "MD5", hashlib.md5(data).hexdigest())
    root = tmp_path / "root"
    assert cifar_fs.load("test", root=root, download=True).num_classes == 20
    assert (root / "cifar100" / cifar100.ARCHIVE).read_bytes() == data
    assert [p for p, _ in file_server.requests] == [cifar100.ARCHIVE] * 2

    other = tmp_path / "other"
    monkeypatch.setattr(cifar100, "MD5", "0" * 32)
    with pytest.raises(ChecksumError, match="0" * 32) as err:
        fc100.load("train", root=other, download=True)
    assert "\n" not in str(err.value)
    assert not list((other / "cifar100").iterdir())  # the partial file was deleted


def test_unknown_split_and_tiny_size_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cifar_fs has no split 'all'"):
        cifar_fs.load("all", root=tmp_path)
    with pytest.raises(ConfigError, match="fc100 image_size must be >= 8"):
        fc100.load("train", root=tmp_path, image_size=2)


# the restricted unpickler itself


def test_numpy_pickles_of_every_protocol_load():
    value = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "s": np.int64(7),
             "l": [1, 2.5, "x", b"y", (None, True)], "set": {1, 2}}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        got = load_pickle(pickle.dumps(value, protocol=protocol), "x.pkl")
        assert np.array_equal(got["a"], value["a"]) and got["s"] == 7
        assert got["l"] == value["l"] and got["set"] == {1, 2}


def test_python2_pickle_with_numpy_core_names_loads():
    blob = py2_dumps({"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "names": ["a", "b"]})
    assert b"numpy.core.multiarray" in blob
    got = load_pickle(io.BytesIO(blob), "py2")
    assert got["data"].tolist() == [[0, 1, 2], [3, 4, 5]] and got["names"] == ["a", "b"]
    # bytes keys (what encoding="bytes" would give) come back as str
    assert load_pickle(pickle.dumps({b"data": 1}), "k") == {"data": 1}


@pytest.mark.parametrize("target", [os.system, eval, pickle.loads, getattr])
def test_any_other_global_is_refused_in_one_line(tmp_path, target):
    marker = tmp_path / "marker"

    class Hostile:
        def __reduce__(self):
            return (target, (f"open({str(marker)!r}, 'w')",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([1, Hostile()]))
    with pytest.raises(DataError) as err:
        load_pickle(path, path.name)
    msg = str(err.value)
    assert msg.startswith("evil.pkl: refuses global ") and "not a dataset cache" in msg
    assert target.__name__ in msg and "\n" not in msg and not marker.exists()


def test_codecs_encode_is_latin1_only():
    evil = (b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x04\x00\x00\x00zlib"
            b"\x86q\x01Rq\x02.")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_pickle(evil, "codec.pkl")


def test_damaged_pickle_is_a_data_error(tmp_path):
    blob = pickle.dumps({"data": np.zeros(100, dtype=np.uint8)})
    with pytest.raises(DataError, match=r"x\.pkl is not a readable pickle") as err:
        load_pickle(blob[: len(blob) // 2], "x.pkl")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not found"):
        load_pickle(tmp_path / "nope.pkl", "nope.pkl")
