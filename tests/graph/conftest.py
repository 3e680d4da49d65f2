"""The graph tests run many small matrix products in sequence: one intra-op thread is fastest
(and keeps a shared machine's cores free); the thread count is restored after each test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
