"""The sequence presentation of a task (`metazoo.sequence_tasks`): offset labels, presentation
numbers, accuracy by presentation, and the recurrence over the steps."""

from typing import NamedTuple

import torch

from metazoo import algorithms, models
from metazoo.sequence_tasks import (
    accuracy_by_presentation,
    expand_rows,
    offset_labels,
    presentation_numbers,
    sequence_inputs,
)


def test_offset_labels_carry_the_previous_steps_label():
    y = torch.tensor([2, 0, 0, 1])
    slots = offset_labels(y, 3, torch.zeros(1))
    assert slots.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]]


def test_presentation_numbers_count_each_class_so_far():
    y = torch.tensor([[1, 1, 0, 1, 0, 2], [0, 1, 2, 0, 1, 2]])
    assert presentation_numbers(y).tolist() == [[1, 2, 1, 3, 2, 1], [1, 1, 1, 2, 2, 2]]


def test_accuracy_by_presentation_by_hand():
    numbers = torch.tensor([[1, 1, 2, 2, 3]])
    correct = torch.tensor([[True, False, True, True, False]])
    table = accuracy_by_presentation(correct, numbers, 4)
    assert table[0, :3].tolist() == [0.5, 1.0, 0.0]
    assert torch.isnan(table[0, 3])  # no 4th presentation in this episode


def test_expand_rows_keeps_named_tuples():
    class State(NamedTuple):
        a: torch.Tensor
        b: torch.Tensor

    out = expand_rows((torch.ones(1, 2), State(torch.zeros(1, 3), torch.ones(1, 2, 2))), 4)
    assert out[0].shape == (4, 2) and isinstance(out[1], State)
    assert out[1].a.shape == (4, 3) and out[1].b.shape == (4, 2, 2)


def test_offset_query_step_carries_the_last_support_label():
    backbone = models.build("mlp", input_shape=(4,), hidden=())
    sx, sy, qx = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 2]), torch.randn(3, 4)
    support, query = sequence_inputs(backbone, sx, sy, qx, 3, "offset_labels")
    torch.testing.assert_close(support[:, :4], sx)
    assert support[:, 4:].tolist() == offset_labels(sy, 3, sx).tolist()
    assert query[:, 4:].tolist() == [[0, 0, 1]] * 3  # y of the last support step


def test_a_stream_step_never_sees_its_own_label_or_later_ones():
    for name in ("lstm_learner", "mann"):
        torch.manual_seed(0)
        alg = algorithms.build(name, models.build("mlp", input_shape=(4,), hidden=()), ways=3,
                               presentation="offset_labels")
        x, y = torch.randn(9, 4), torch.tensor([0, 1, 2, 2, 0, 1, 1, 2, 0])
        changed = y.clone()
        changed[4] = 2  # the label of step 4: steps 0..4 must not move, step 5 must
        a, b = alg.stream_logits(x, y), alg.stream_logits(x, changed)
        torch.testing.assert_close(a[:5], b[:5], rtol=0, atol=0)
        assert not torch.allclose(a[5], b[5]), name
