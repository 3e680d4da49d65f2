"""download(): checksum, resume, retries; safe_extract(): refuses entries that leave the target."""

from __future__ import annotations

import hashlib
import stat
import zipfile

import pytest

from metazoo.data.download import download, safe_extract
from metazoo.errors import ChecksumError, DataError

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB, several network reads


def test_download_verifies_and_moves_into_place(file_server, tmp_path):
    file_server.files["a.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "a.bin"
    out = download(file_server.url("a.bin"), dest, md5=hashlib.md5(PAYLOAD).hexdigest(),
                   sha256=hashlib.sha256(PAYLOAD).hexdigest(), backoff=0)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "a.bin.part").exists()


def test_checksum_mismatch_removes_everything(file_server, tmp_path):
    file_server.files["a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    with pytest.raises(ChecksumError) as err:
        download(file_server.url("a.bin"), dest, md5="0" * 32, backoff=0)
    msg = str(err.value)
    assert "\n" not in msg and "a.bin" in msg and "0" * 32 in msg
    assert hashlib.md5(PAYLOAD).hexdigest() in msg
    assert not dest.exists() and not (tmp_path / "a.bin.part").exists()


def test_resumes_a_partial_download_with_range(file_server, tmp_path):
    file_server.files["a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:300_000])
    download(file_server.url("a.bin"), dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
             backoff=0)
    assert dest.read_bytes() == PAYLOAD
    assert file_server.requests == [("a.bin", "bytes=300000-")]
    assert file_server.sent == [len(PAYLOAD) - 300_000]  # only the missing tail travelled


def test_restarts_when_server_ignores_range(file_server, tmp_path):
    file_server.files["a.bin"] = PAYLOAD
    file_server.ranges = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage that must not be kept")
    download(file_server.url("a.bin"), tmp_path / "a.bin",
             md5=hashlib.md5(PAYLOAD).hexdigest(), backoff=0)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_retries_after_server_errors(file_server, tmp_path):
    file_server.files["a.bin"] = PAYLOAD
    file_server.fail["a.bin"] = 2
    download(file_server.url("a.bin"), tmp_path / "a.bin", retries=3,
             md5=hashlib.md5(PAYLOAD).hexdigest(), backoff=0)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert len(file_server.requests) == 3


def test_gives_up_after_last_retry(file_server, tmp_path):
    file_server.files["a.bin"] = PAYLOAD
    file_server.fail["a.bin"] = 5
    with pytest.raises(DataError, match="after 2 attempts"):
        download(file_server.url("a.bin"), tmp_path / "a.bin", retries=2, backoff=0)
    assert len(file_server.requests) == 2 and not (tmp_path / "a.bin").exists()


def test_not_found_is_not_retried(file_server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        download(file_server.url("missing.bin"), tmp_path / "m.bin", retries=3, backoff=0)
    assert len(file_server.requests) == 1


def test_connection_refused_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="after 2 attempts"):
        download("http://127.0.0.1:9/x", tmp_path / "x", retries=2, timeout=2, backoff=0)


def _zip(path, entries):
    """Write a zip of (name, bytes) pairs; bytes given as ("link", target) make a symlink."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            if isinstance(data, tuple):
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data[1])
            else:
                zf.writestr(name, data)
    return path


def test_safe_extract_good_archive(tmp_path):
    z = _zip(tmp_path / "ok.zip", [("a/b.txt", b"hello"), ("c.txt", b"x")])
    out = safe_extract(z, tmp_path / "out")
    assert (out / "a" / "b.txt").read_bytes() == b"hello" and (out / "c.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.zip", "out"]  # no temp left


@pytest.mark.parametrize("entries, bad", [
    ([("good.txt", b"1"), ("../evil.txt", b"2")], "../evil.txt"),
    ([("good.txt", b"1"), ("a/../../evil.txt", b"2")], "a/../../evil.txt"),
    ([("/abs/evil.txt", b"2")], "/abs/evil.txt"),
    ([("good.txt", b"1"), ("link", ("link", "../../etc/passwd"))], "link"),
    ([("d/link", ("link", "/etc/passwd"))], "d/link"),
    ([("a/link", ("link", "b.txt")), ("a/b.txt", b"1")], "a/link"),  # even one that stays inside
    # a chain of links each judged harmless alone: a -> ., a/b -> .., then a/b/evil.txt
    ([("a", ("link", ".")), ("a/b", ("link", "..")), ("a/b/evil.txt", b"2")], "'a'"),
])
def test_safe_extract_refuses_escaping_entries(tmp_path, entries, bad):
    z = _zip(tmp_path / "bad.zip", entries)
    target = tmp_path / "inside" / "out"
    with pytest.raises(DataError) as err:
        safe_extract(z, target)
    assert bad in str(err.value)
    assert not target.exists() and not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "inside").iterdir()) == []  # the temporary folder was removed


def test_safe_extract_refuses_non_empty_target_and_bad_zip(tmp_path):
    z = _zip(tmp_path / "ok.zip", [("a.txt", b"1")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    with pytest.raises(DataError, match="already exists"):
        safe_extract(z, tmp_path / "full")
    (tmp_path / "broken.zip").write_bytes(z.read_bytes()[:20])
    with pytest.raises(DataError, match="not a valid zip"):
        safe_extract(tmp_path / "broken.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_names_corrupted_compressed_data(tmp_path):
    payload = bytes(range(256)) * 64
    z = tmp_path / "c.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.bin", payload)
    raw = bytearray(z.read_bytes())
    start = raw.index(b"data.bin") + len("data.bin")  # the local header's name, then the data
    for i in range(start + 10, start + 40):
        raw[i] ^= 0xFF
    z.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"c\.zip is not a valid zip archive"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()
