import math

import pytest
import torch

from metazoo.metrics import accuracy, mean_and_ci95, mse


def test_accuracy_counts_argmax_hits():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])).item() == pytest.approx(2 / 3)


def test_mse_is_mean_of_squares():
    assert mse(torch.zeros(1, 2, 1), torch.tensor([[[1.0], [3.0]]])).item() == pytest.approx(5.0)


def test_ci95_matches_formula():
    values = [0.9, 0.8, 1.0, 0.7]
    m, h = mean_and_ci95(values)
    t = torch.tensor(values, dtype=torch.float64)
    assert m == pytest.approx(0.85)
    assert h == pytest.approx(1.96 * t.std().item() / math.sqrt(4))


def test_ci95_rejects_empty():
    with pytest.raises(ValueError):
        mean_and_ci95([])
