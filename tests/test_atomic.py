"""Atomic writes: the destination holds the old content or the whole new one, never a part."""

from pathlib import Path

import pytest

from metazoo import atomic


def test_write_text_and_bytes_replace_the_file(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic.write_text(path, "first")
    atomic.write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    atomic.write_bytes(path, b"old")
    seen: list[Path] = []
    with pytest.raises(OSError, match="disk full"), atomic.replacing(path) as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert seen[0].parent == tmp_path and not seen[0].exists()  # same folder, then removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_replacing_syncs_before_the_rename(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append("fsync"))
    real_replace = atomic.os.replace
    monkeypatch.setattr(atomic.os, "replace",
                        lambda a, b: (calls.append("replace"), real_replace(a, b)))
    atomic.write_text(tmp_path / "x", "x")
    assert calls == ["fsync", "replace"]


def test_the_library_has_one_atomic_write():
    """`os.replace` of a finished file appears only in metazoo.atomic (downloads move a
    resumable `.part` file or an extracted folder, which are not whole-file writes)."""
    src = Path(atomic.__file__).parent
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                   if "os.replace(" in p.read_text())
    assert users == ["atomic.py", "data/download.py"]


def test_written_files_get_the_usual_permissions_not_0600(tmp_path):
    import os
    import stat

    from metazoo import atomic

    old = os.umask(0o022)
    atomic._UMASK = None  # read the umask set here
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
        (tmp_path / "b.json").write_text("{}")
    finally:
        os.umask(old)
        atomic._UMASK = None
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o644
