"""Conv4: the fused forward equals the plain block sequence, with and without pooling blocks."""

from __future__ import annotations

import pytest
import torch

from metazoo import models
from metazoo.errors import ConfigError


def _plain(net, x):
    for block in net.features:  # conv, BatchNorm, ReLU, [MaxPool2d]: the unfused sequence
        x = block(x)
    return x


@pytest.mark.parametrize("pools", [None, 2, 0])
def test_fused_forward_equals_block_sequence(pools):
    torch.manual_seed(0)
    net = models.build("conv4", input_shape=(1, 28, 28), hidden=8, pools=pools)
    x = torch.randn(6, 1, 28, 28)
    expected = _plain(net, x)
    assert tuple(expected.shape[1:]) == net.feature_shape
    torch.testing.assert_close(net(x), expected.flatten(1), rtol=1e-4, atol=1e-5)


def test_feature_shape_follows_pools():
    assert models.build("conv4", hidden=8, pools=2).feature_shape == (8, 7, 7)
    assert models.build("conv4", hidden=8).feature_shape == (8, 1, 1)
    with pytest.raises(ConfigError, match="pools"):
        models.build("conv4", pools=5)
