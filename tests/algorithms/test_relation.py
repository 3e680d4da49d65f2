"""Relation Networks: scores by hand, their range, the MSE loss of Eq. 2, and learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metazoo import algorithms, models
from metazoo.algorithms.relation import class_maps
from metazoo.errors import ConfigError
from tests.algorithms.learning import accuracy_before_after, glyph_episodes, separable_episodes


class Maps(nn.Module):
    """Identity 'embedding' of 2x4x4 inputs, so the relation module sees the raw pixels."""

    feature_dim = 32
    feature_shape = (2, 4, 4)

    def forward(self, x):
        return x.flatten(1)


def test_class_maps_sum_each_class_support():
    maps = torch.arange(4 * 2.0).view(4, 2, 1, 1)
    out = class_maps(maps, torch.tensor([1, 0, 1, 0]), 2)
    torch.testing.assert_close(out.flatten(1), torch.tensor([[2.0 + 6, 3 + 7], [0 + 4, 1 + 5]]))


def test_scores_equal_relation_module_on_concatenated_maps():
    torch.manual_seed(0)
    alg = algorithms.build("relation", Maps(), ways=2)
    sx, sy = torch.randn(4, 2, 4, 4), torch.tensor([0, 1, 0, 1])
    q = torch.randn(3, 2, 4, 4)
    scores = alg.adapt(sx, sy)(q)
    classes = torch.stack([sx[0] + sx[2], sx[1] + sx[3]])  # [2, 2, 4, 4]
    pairs = torch.cat([classes[None].expand(3, -1, -1, -1, -1),
                       q[:, None].expand(-1, 2, -1, -1, -1)], dim=2).flatten(0, 1)
    m = alg.relation  # by hand: two conv+BN+ReLU+pool blocks (4 -> 2 -> 1), FC 8, FC 1, sigmoid
    x = pairs
    for block in m.convs:
        x = F.max_pool2d(torch.relu(block(x)), 2)
    expected = torch.sigmoid(m.fc2(torch.relu(m.fc1(x.flatten(1))))).view(3, 2)
    torch.testing.assert_close(scores, expected)
    assert ((scores > 0) & (scores < 1)).all()


def test_split_first_convolution_gives_the_concatenated_pairs_logits_and_gradients():
    torch.manual_seed(1)
    alg = algorithms.build("relation", Maps(), ways=3).double()
    classes, queries = torch.randn(3, 2, 4, 4).double(), torch.randn(5, 2, 4, 4).double()
    pairs = torch.cat([classes[None].expand(5, -1, -1, -1, -1),
                       queries[:, None].expand(-1, 3, -1, -1, -1)], dim=2).flatten(0, 1)
    m = alg.relation
    grads = []
    for out in (m.logits(pairs).view(5, 3), m.pair_logits(classes, queries)):
        m.zero_grad()
        (out.sin().sum()).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
        torch.testing.assert_close(out, m.logits(pairs).view(5, 3), rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_loss_is_mse_against_one_hot():
    torch.manual_seed(0)
    alg = algorithms.build("relation", Maps(), ways=2)
    sx, sy = torch.randn(2, 2, 4, 4), torch.tensor([0, 1])
    qx, qy = torch.randn(4, 2, 4, 4), torch.tensor([1, 0, 0, 1])
    loss, metrics = alg.task_loss(sx, sy, qx, qy, 2)
    scores = alg.adapt(sx, sy)(qx)
    target = torch.tensor([[0.0, 1], [1, 0], [1, 0], [0, 1]])
    torch.testing.assert_close(loss, ((scores - target) ** 2).mean())
    assert metrics["acc"] == (scores.argmax(1) == qy).float().mean()


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="fc_hidden"):
        algorithms.build("relation", Maps(), ways=2, fc_hidden=0)


def test_relation_learns_separable_classes():
    torch.manual_seed(0)
    alg = algorithms.build("relation", models.build("conv4", hidden=16, pools=2), ways=5)
    before, after = accuracy_before_after(alg, *separable_episodes(), steps=80)
    assert after >= 0.6 and after > before + 0.05, (before, after)


@pytest.mark.slow
def test_relation_learns_glyphs_5way_1shot():
    torch.manual_seed(0)
    alg = algorithms.build("relation", models.build("conv4", hidden=32, pools=2), ways=5)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=100)
    assert after >= 0.6 and after > before + 0.1, (before, after)
