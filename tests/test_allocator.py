"""tune_allocator: large tensors come from the heap (reused) instead of fresh mmaps."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from metazoo import tune_allocator


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc-only")
def test_large_tensor_memory_stays_in_the_heap_after_tuning() -> None:
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    libc.mallinfo2.restype = _MallInfo2
    assert tune_allocator()
    assert tune_allocator()  # idempotent
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's largest default mmap threshold
    info = libc.mallinfo2()
    assert info.hblkhd < 64 * 2**20, "a 64 MiB tensor was still served by mmap"
    del x
    after = libc.mallinfo2()
    assert after.arena >= 64 * 2**20, "freed memory was handed back instead of kept for reuse"
