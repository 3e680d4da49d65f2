"""Task threads: the split, the shared clones, and what the workers inherit from the caller."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from metazoo.task_threads import chunks, map_chunks, structural_clones


@pytest.mark.parametrize("n,parts", [(32, 2), (5, 3), (2, 8), (1, 2), (7, 1)])
def test_chunks_cover_range_in_order_without_empty_pieces(n, parts):
    pieces = chunks(n, parts)
    assert [i for p in pieces for i in p] == list(range(n))
    assert len(pieces) == min(n, parts) and all(len(p) > 0 for p in pieces)
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


def test_structural_clones_share_parameters_and_buffers_but_not_modules():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    a, b = structural_clones(net, 2)
    assert a is net and b is not net and b[0] is not net[0]
    for (_, p), (_, q) in zip(net.named_parameters(), b.named_parameters(), strict=True):
        assert p is q
    assert b[1].running_mean is net[1].running_mean


def test_map_chunks_runs_workers_in_parallel_threads_in_order(two_threads):
    barrier = threading.Barrier(2, timeout=10)  # fails unless both chunks run at once

    def fn(module, part):
        barrier.wait()
        return (threading.get_ident(), torch.get_num_threads(), list(part))

    out = map_chunks(fn, nn.Linear(1, 1), 6, 2)
    assert [r[2] for r in out] == [[0, 1, 2], [3, 4, 5]]
    assert out[0][0] != out[1][0]  # two threads
    assert [r[1] for r in out] == [1, 1]  # one intra-op thread each
    assert torch.get_num_threads() == 2  # the caller's count is back


def test_workers_inherit_grad_mode(two_threads):
    def fn(module, part):
        return torch.is_grad_enabled()

    with torch.no_grad():
        assert map_chunks(fn, nn.Linear(1, 1), 4, 2) == [False, False]
    assert map_chunks(fn, nn.Linear(1, 1), 4, 2) == [True, True]
    with torch.inference_mode():
        assert map_chunks(lambda m, p: torch.is_inference_mode_enabled(), m := nn.Linear(1, 1),
                          4, 2) == [True, True]
    assert m.weight.requires_grad


def test_an_error_in_a_worker_reaches_the_caller(two_threads):
    def fn(module, part):
        if 3 in part:
            raise ValueError("task 3 failed")
        return len(part)

    with pytest.raises(ValueError, match="task 3"):
        map_chunks(fn, nn.Linear(1, 1), 4, 2)
    assert torch.get_num_threads() == 2
