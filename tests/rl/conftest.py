"""Fixtures of the meta-RL tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: small recurrent policies gain nothing from more, and idle threads
    spinning cost CPU time on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
