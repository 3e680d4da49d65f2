"""NLL, Brier, ECE and interval coverage against values computed by hand on small arrays."""

import math

import pytest
import torch

from metazoo import calibration


def logits_of(probabilities):
    return torch.tensor(probabilities, dtype=torch.float64).log()


def test_nll_and_brier_by_hand():
    logits = logits_of([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 2])
    assert calibration.nll(logits, labels).item() == pytest.approx(
        -(math.log(0.7) + math.log(0.3)) / 2)
    first = 0.3**2 + 0.2**2 + 0.1**2
    second = 0.1**2 + 0.6**2 + 0.7**2
    assert calibration.brier(logits, labels).item() == pytest.approx((first + second) / 2)


def test_nll_is_per_task_over_leading_dimensions():
    logits = logits_of([[[0.5, 0.5]], [[0.9, 0.1]]])  # 2 tasks of 1 query
    per_task = calibration.nll(logits, torch.tensor([[1], [0]]))
    assert per_task.tolist() == pytest.approx([math.log(2), -math.log(0.9)])


def test_ece_by_hand_on_four_predictions():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.55 (right): 15 bins of width 1/15
    # bin (0.8667, 0.9333]: conf 0.9, acc 0.5 -> 2/4 * 0.4; bin (0.5333, 0.6]: conf 0.6, 0.55,
    # acc 1 -> 2/4 * |1 - 0.575|
    logits = logits_of([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    rel = calibration.Reliability()
    rel.add(logits[:2], labels[:2])
    rel.add(logits[2:], labels[2:])  # pooled over batches
    assert rel.ece() == pytest.approx(0.5 * 0.4 + 0.5 * 0.425)
    table = rel.to_json()
    assert sum(table["count"]) == 4 and table["count"][13] == 2 and table["count"][8] == 2
    assert table["accuracy"][13] == pytest.approx(0.5)
    assert table["confidence"][8] == pytest.approx(0.575)
    assert table["accuracy"][0] is None  # an empty bin has no mean


def test_bin_edges_are_right_closed():
    rel = calibration.Reliability(bins=2)
    rel.add(logits_of([[0.5, 0.5]]), torch.tensor([0]))  # confidence exactly 0.5: first bin
    assert rel.count == [1, 0]


def test_a_calibrated_predictor_has_small_ece_and_an_overconfident_one_large():
    g = torch.Generator().manual_seed(0)
    conf = 0.5 + 0.5 * torch.rand(20000, generator=g, dtype=torch.float64)
    right = torch.rand(20000, generator=g, dtype=torch.float64) < conf  # P(right) = confidence
    labels = torch.where(right, 0, 1)
    calibrated = torch.stack([conf, 1 - conf], dim=-1).log()
    sharp = torch.stack([torch.full_like(conf, 0.999), torch.full_like(conf, 0.001)], -1).log()
    good, bad = calibration.Reliability(), calibration.Reliability()
    good.add(calibrated, labels)
    bad.add(sharp, labels)
    assert good.ece() < 0.02
    assert bad.ece() == pytest.approx(0.999 - right.double().mean().item(), abs=1e-9)


def test_ece_of_nothing_is_refused():
    with pytest.raises(ValueError, match="no predictions"):
        calibration.Reliability().ece()


def test_gaussian_nll_and_intervals():
    mean = torch.tensor([[0.0], [1.0]])
    cov = torch.tensor([[[1.0]], [[4.0]]])
    y = torch.tensor([[1.0], [1.0]])
    by_hand = (0.5 * math.log(2 * math.pi) + 0.5) + (0.5 * math.log(2 * math.pi * 4))
    assert calibration.gaussian_nll(mean, cov, y).item() == pytest.approx(by_hand / 2)
    low, high = calibration.gaussian_interval(mean, cov)
    assert high[:, 0].tolist() == pytest.approx([1.96, 1 + 3.92])
    assert calibration.inside_interval(low, high, y).item() == pytest.approx(1.0)
    assert calibration.inside_interval(low, high, y + 3).item() == pytest.approx(0.5)


def test_sample_interval_is_the_central_95_percent():
    samples = torch.arange(1001, dtype=torch.float64).reshape(1001, 1, 1)  # 0..1000
    low, high = calibration.sample_interval(samples)
    assert (low.item(), high.item()) == pytest.approx((25.0, 975.0))
