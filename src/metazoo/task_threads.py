"""Run the tasks of a meta-batch in worker threads, one intra-op thread each (CPU).

Why: a MAML task on Omniglot is thousands of small kernels (5 images, 64 channels), and
splitting each of them over the cores costs a synchronisation per kernel that such small
kernels cannot pay back. Giving each core whole tasks instead, one task per thread at a time,
keeps every core busy without that per-kernel cost: MAML meta-iterations ran 1.08-1.60x
faster on 2 cores (`benchmarks/maml_vs_peers.py --interleaved`, "threads" against "loop",
2026-11-29; `docs/benchmarks.md`). PyTorch kernels and its autograd engine release the GIL,
so the Python threads do run in parallel; the Python between kernels does not, which is what
is left of the gap.

`torch.func.functional_call` swaps a module's parameters in place for the length of a call, so
two threads must not call it on the same module object: every worker gets its own *structural
clone*, a copy of the module tree that shares the very same parameter and buffer tensors. The
gradients they produce are therefore gradients of the one set of meta-parameters.

The split is fixed (contiguous chunks, in order), so results do not depend on thread timing;
they differ from a one-thread loop only in the order of floating-point sums.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)
R = TypeVar("R")


def structural_clones(module: M, n: int) -> list[M]:
    """`[module, clone_1, ..., clone_{n-1}]`; clones share all parameters and buffers.

    Everything else (submodules, plain attributes) is copied, so a clone can be reparametrised
    by `functional_call` while another thread uses the original.
    """
    shared: dict[int, object] = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return [module] + [copy.deepcopy(module, dict(shared)) for _ in range(n - 1)]


def chunks(n: int, parts: int) -> list[range]:
    """`range(n)` split into at most `parts` contiguous, nearly equal, non-empty pieces."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


@contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_chunks(fn: Callable[[M, range], R], module: M, tasks: int, workers: int) -> list[R]:
    """`[fn(clone_w, chunk_w) for each worker w]`, the chunks of `range(tasks)` in order.

    Worker 0 runs in the calling thread on `module` itself; the others on structural clones.
    Every worker computes with one intra-op thread; the caller's thread count is restored
    afterwards. Each worker runs with the caller's grad mode and inference mode (thread-local in
    PyTorch). An exception in any worker is re-raised.
    """
    parts = chunks(tasks, workers)
    if len(parts) == 1:
        return [fn(module, parts[0])]
    clones = structural_clones(module, len(parts))
    modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
    with _intra_op_threads(1), ThreadPoolExecutor(len(parts) - 1) as pool:
        futures = [pool.submit(_worker, fn, c, p, modes)
                   for c, p in zip(clones[1:], parts[1:], strict=True)]
        first = fn(clones[0], parts[0])
        return [first] + [f.result() for f in futures]


def _worker(fn: Callable[[M, range], R], module: M, part: range, modes: tuple[bool, bool]
            ) -> R:
    torch.set_num_threads(1)  # a new thread starts with the process default
    grad, inference = modes
    # inference_mode(False) would switch grad mode on: enter it only where the caller had it
    with torch.inference_mode() if inference else torch.set_grad_enabled(grad):
        return fn(module, part)
