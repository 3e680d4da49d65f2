"""R2-D2's backbone: the authors' block order, the paper's sizes, given parameters, dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metazoo import functional
from metazoo.models import r2d2_conv
from metazoo.models.r2d2_conv import R2D2Conv

SMALL = (3, 4, 5, 6)
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 84, 84)]


def _net(shape=(1, 28, 28), widths=SMALL, **kwargs) -> R2D2Conv:
    torch.manual_seed(0)
    return R2D2Conv(shape, widths=widths, **kwargs)


def _reference(net: R2D2Conv, x: torch.Tensor) -> torch.Tensor:
    """`RRFeatures.forward` of github.com/bertinetto/r2d2 (eval mode, torch's batch norm)."""
    maps = []
    for block, stride in zip(net.blocks, (2, 2, 2, 1), strict=True):
        x = F.batch_norm(block.conv(x), None, None, block.bn.weight, block.bn.bias,
                         training=True, eps=block.bn.eps)
        x = F.leaky_relu(F.max_pool2d(x, 2, stride=stride), 0.1)
        maps.append(x)
    x3 = F.max_pool2d(maps[2], 2, stride=1)
    return torch.cat([x3.flatten(1), maps[3].flatten(1)], 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_output_shape_and_reference_block_order(shape):
    net = _net(shape).eval()
    x = torch.randn(5, *shape)
    out = net(x)
    assert out.shape == (5, net.feature_dim)
    torch.testing.assert_close(out, _reference(net, x), rtol=1e-4, atol=1e-5)


def test_paper_sizes_and_parameter_count():
    # the paper's feature sizes: 3584 (Omniglot), 8064 (CIFAR-FS), 72576 (miniImageNet)
    def count(c_in, widths):
        total = 0
        for c in widths:  # 3x3 conv with bias, batch norm scale and shift
            total += 9 * c_in * c + c + 2 * c
            c_in = c
        return total

    dims = {(1, 28, 28): 3584, (3, 32, 32): 8064, (3, 84, 84): 72576}
    for shape, dim in dims.items():
        net = R2D2Conv(shape)
        assert net.feature_dim == dim == (384 + 512) * net.feature_shapes[1][1] ** 2
        assert net.feature_shapes[0][1:] == net.feature_shapes[1][1:]
        assert sum(p.numel() for p in net.parameters()) == count(shape[0], net.block_widths)
    assert count(3, (96, 192, 384, 512)) == 2_605_056
    # MetaOptNet's re-implementation: stride 2 everywhere, no extra pool: 51200-d at 84x84
    variant = R2D2Conv(pool_strides=(2, 2, 2, 2), concat_pool=False, last_activation=False,
                       dropout=(0, 0, 0.1, 0.3))
    assert variant.feature_dim == 384 * 10 * 10 + 512 * 5 * 5 == 51200
    with pytest.raises(ValueError, match="too small"):
        R2D2Conv((3, 8, 8), widths=SMALL)
    with pytest.raises(ValueError, match="one entry per block"):
        R2D2Conv(widths=SMALL, dropout=(0.1,))


def test_last_activation_off_leaves_negative_features():
    net = _net(last_activation=False).eval()
    out = net(torch.randn(5, 1, 28, 28))
    third = net.feature_shapes[0]
    assert (out[:, third[0] * third[1] * third[2]:] < 0).any()  # the fourth block's raw maps


@pytest.mark.parametrize("train", [False, True])
def test_forward_with_no_params_equals_forward(train):
    net = _net(dropout=(0, 0, 0.3, 0.3)).train(train)
    x = torch.randn(6, 1, 28, 28)
    torch.manual_seed(1)
    expected = net(x)
    torch.manual_seed(1)  # training mode: the same draws from the global generator
    torch.testing.assert_close(net.forward_with({}, x), expected)


def test_given_params_equal_functional_call():
    net = _net((3, 32, 32)).eval()
    x = torch.randn(6, 3, 32, 32)
    g = torch.Generator().manual_seed(2)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in net.named_parameters()}
    expected = functional_call(net, params, (x,))
    torch.testing.assert_close(net.forward_with(params, x), expected)
    torch.testing.assert_close(functional.call(net, params, x), expected)
    assert not torch.allclose(expected, net(x))
    some = {k: v for k, v in params.items() if k.startswith("blocks.3.")}  # others: the net's
    torch.testing.assert_close(net.forward_with(some, x), functional_call(net, some, (x,)))


def test_stats_rows_normalise_with_the_first_rows_only():
    net = _net().eval()
    support, queries = torch.randn(4, 1, 28, 28), torch.randn(3, 1, 28, 28)
    out = net.forward_with({}, torch.cat([support, queries]), stats_rows=4)
    alone = net.forward_with({}, torch.cat([support, queries[1:2]]), stats_rows=4)
    torch.testing.assert_close(out[5], alone[4])  # query 1 does not see queries 0 and 2
    torch.testing.assert_close(out[:4], net(support))
    transductive = net(torch.cat([support, queries]))
    assert not torch.allclose(transductive[5], alone[4])


def test_gradients_are_finite_in_training_mode():
    net = _net((3, 32, 32)).train()
    x = torch.randn(6, 3, 32, 32, requires_grad=True)
    net(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_dropout_in_the_last_two_blocks_in_training_only(monkeypatch):
    calls, original = [], r2d2_conv._dropout

    def spy(x, p, generator=None):
        calls.append((x.shape[1], p))
        return original(x, p, generator)

    monkeypatch.setattr(r2d2_conv, "_dropout", spy)
    net = _net((3, 32, 32), dropout=(0, 0, 0.1, 0.4))
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    first = net(x)
    torch.testing.assert_close(net(x), first)  # eval: nothing random
    assert calls == []
    net.train()
    trained = net(x)
    assert [c for c in calls if c[1] > 0] == [(SMALL[2], 0.1), (SMALL[3], 0.4)]
    assert not torch.allclose(trained, first)
    assert (trained == 0).any()  # dropped entries (the leaky ReLU alone gives no exact zeros)


def test_randomness_from_the_generator_or_the_global_seed():
    x = torch.randn(4, 3, 32, 32)
    kwargs = {"dropout": (0, 0, 0.3, 0.3)}
    a = _net((3, 32, 32), generator=torch.Generator().manual_seed(5), **kwargs).train()
    b = _net((3, 32, 32), generator=torch.Generator().manual_seed(5), **kwargs).train()
    torch.manual_seed(0)
    out_a = a(x)
    torch.manual_seed(1)  # the global seed does not matter with a generator
    torch.testing.assert_close(b(x), out_a)
    assert not torch.allclose(a(x), out_a)
    c = _net((3, 32, 32), **kwargs).train()
    torch.manual_seed(9)
    out_c = c(x)
    torch.manual_seed(9)
    torch.testing.assert_close(c(x), out_c)


def test_vmap_equals_a_loop():
    net = _net().eval()
    tasks = torch.randn(3, 5, 1, 28, 28)
    g = torch.Generator().manual_seed(4)
    params = {k: v + 0.1 * torch.randn(3, *v.shape, generator=g)
              for k, v in net.named_parameters()}

    def run(p, x):
        return functional.call(net, p, x, stats_rows=3)

    batched = torch.vmap(run)(params, tasks)
    looped = torch.stack([run({k: v[t] for k, v in params.items()}, tasks[t]) for t in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


def test_layouts_and_identity_modulation_give_equal_outputs():
    net = _net((3, 32, 32)).eval()
    x = torch.randn(4, 3, 32, 32)
    out = net(x)
    torch.testing.assert_close(net.forward_with({}, x, memory_format=torch.contiguous_format),
                               out, rtol=1e-4, atol=1e-5)
    identity = {i: (torch.ones(c), torch.zeros(c)) for i, c in enumerate(net.block_widths)}
    torch.testing.assert_close(net.forward_with({}, x, modulation=identity), out)
    shifted = net.forward_with({}, x, modulation={0: (None, torch.ones(SMALL[0]))})
    assert not torch.allclose(shifted, out)
