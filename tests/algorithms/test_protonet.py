import pytest
import torch
from torch import nn

from metazoo import algorithms
from metazoo.errors import ConfigError
from tests.algorithms.learning import accuracy_before_after, separable_episodes


class Flatten(nn.Module):
    feature_dim = 4

    def forward(self, x):
        return x.flatten(1)


def test_logits_equal_hand_computed_negative_squared_distances():
    alg = algorithms.build("protonet", Flatten(), ways=2)
    sx = torch.tensor([[0.0, 0, 0, 0], [2, 0, 0, 0], [0, 4, 0, 0], [0, 0, 0, 0]])
    sy = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[1.0, 1, 0, 0], [0, 3, 1, 0]])
    # prototypes: class 0 -> (1, 0, 0, 0); class 1 -> (0, 2, 0, 0)
    expected = -torch.tensor([[1.0, 1 + 1], [1 + 9 + 1, 1 + 1]])
    torch.testing.assert_close(alg.adapt(sx, sy)(q), expected)


def test_cosine_distance_and_temperature():
    alg = algorithms.build("protonet", Flatten(), ways=2, distance="cosine", temperature=0.5)
    sx = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    out = alg.adapt(sx, torch.tensor([0, 1]))(torch.tensor([[2.0, 0, 0, 0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, -2.0]]))


def test_more_ways_at_test_than_built_for():
    alg = algorithms.build("protonet", Flatten(), ways=2)
    sx = torch.eye(4)
    out = alg.adapt(sx, torch.arange(4), ways=4)(sx)
    assert out.argmax(1).tolist() == [0, 1, 2, 3]


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="temperature"):
        algorithms.build("protonet", Flatten(), ways=2, temperature=0.0)
    with pytest.raises(ConfigError, match="did you mean 'distance'"):
        algorithms.build("protonet", Flatten(), ways=2, distanse="cosine")


def test_protonet_learns_separable_classes():
    from metazoo import models

    torch.manual_seed(0)
    alg = algorithms.build("protonet", models.build("conv4", hidden=16), ways=5)
    before, after = accuracy_before_after(alg, *separable_episodes(), steps=60)
    assert after >= 0.6 and after > before + 0.05, (before, after)
