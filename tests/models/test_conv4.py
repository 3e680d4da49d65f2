"""Conv4: the fused forward equals the plain block sequence, with and without pooling blocks."""

from __future__ import annotations

import pytest
import torch

from metazoo import functional, models
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


def _layouts_seen(net, x, memory_format=None):
    """Whether each later conv's input is channels-last-only (not also NCHW-contiguous)."""
    seen = []
    hooks = [block[0].register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
        for block in list(net.features)[1:]]
    net.forward_with({}, x, memory_format=memory_format)
    for h in hooks:
        h.remove()
    return seen


def test_one_channel_input_runs_channels_last_on_cpu():
    # a [M, 1, H, W] input is NCHW and channels-last at once, and the first conv then returned
    # NCHW maps: max-pooling on them ran ~15x slower (the regression this pins down)
    net = models.build("conv4", input_shape=(1, 28, 28), hidden=8)
    assert _layouts_seen(net, torch.randn(4, 1, 28, 28)) == [True, True, True]
    nchw = _layouts_seen(net, torch.randn(4, 1, 28, 28), functional.SECOND_ORDER_LAYOUT)
    assert nchw == [False, False, False]


def test_layouts_give_equal_outputs_and_second_order_gradients():
    torch.manual_seed(0)
    net = models.build("conv4", input_shape=(1, 28, 28), hidden=8).double()
    x = torch.randn(6, 1, 28, 28, dtype=torch.double)

    def meta_grad(layout=None):  # output, and the gradient of a function of the input gradient
        params = list(net.parameters())
        out = net.forward_with({}, x, memory_format=layout)
        g = torch.autograd.grad(out.square().sum(), params, create_graph=True)
        return out, torch.autograd.grad(sum(gi.square().sum() for gi in g), params)

    out_cl, grads_cl = meta_grad()
    out_nchw, grads_nchw = meta_grad(torch.contiguous_format)
    torch.testing.assert_close(out_cl, out_nchw)
    torch.testing.assert_close(grads_cl, grads_nchw)


def test_three_channel_input_runs_channels_last_on_cpu():
    net = models.build("conv4", input_shape=(3, 28, 28), hidden=8)
    assert _layouts_seen(net, torch.randn(4, 3, 28, 28)) == [True, True, True]
    nchw = _layouts_seen(net, torch.randn(4, 3, 28, 28), torch.contiguous_format)
    assert nchw == [False, False, False]
