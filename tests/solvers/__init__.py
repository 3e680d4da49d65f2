"""Tests of `metazoo.solvers`, one module per solver."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run a test on one intra-op thread (a test module opts in by importing this fixture).

    The solvers' tensors are tiny and finite differences call them hundreds of times; on a
    loaded machine every multi-threaded kernel (even the `tril` inside a Cholesky call) can wait
    milliseconds for the second thread to be scheduled, which made these tests 20x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
