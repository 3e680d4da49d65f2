"""ResNet-12 (MetaOptNet): the reference block order, sizes, given parameters, DropBlock."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metazoo import functional
from metazoo.models import resnet12
from metazoo.models.resnet12 import ResNet12, drop_block, dropout

SMALL = (3, 4, 5, 6)
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 84, 84)]


def _net(shape=(1, 28, 28), widths=SMALL, **kwargs) -> ResNet12:
    torch.manual_seed(0)
    return ResNet12(shape, widths=widths, **kwargs)


def _reference(net: ResNet12, x: torch.Tensor) -> torch.Tensor:
    """MetaOptNet's BasicBlock order (ReLU, then pool), torch's batch norm, no dropout."""

    def bn(module, h):
        return F.batch_norm(h, None, None, module.weight, module.bias, training=True,
                            eps=module.eps)

    for b in net.blocks:
        out = F.leaky_relu(bn(b.bn1, b.conv1(x)), 0.1)
        out = F.leaky_relu(bn(b.bn2, b.conv2(out)), 0.1)
        out = bn(b.bn3, b.conv3(out)) + bn(b.shortcut_bn, b.shortcut_conv(x))
        x = F.max_pool2d(F.leaky_relu(out, 0.1), 2)
    return x.flatten(1)


@pytest.mark.parametrize("shape", SHAPES)
def test_output_shape_and_reference_block_order(shape):
    net = _net(shape).eval()
    x = torch.randn(5, *shape)
    out = net(x)
    assert out.shape == (5, net.feature_dim)
    torch.testing.assert_close(out, _reference(net, x), rtol=1e-4, atol=1e-5)


def test_paper_sizes_and_parameter_count():
    # MetaOptNet: 64-160-320-640, 16000-d features at 84x84, about 12.4M parameters
    def count(c_in, widths):
        total = 0
        for c in widths:  # three 3x3 convs, a 1x1 shortcut, four batch norms (scale, shift)
            total += 9 * c_in * c + 2 * 9 * c * c + c_in * c + 4 * 2 * c
            c_in = c
        return total

    dims = {(1, 28, 28): 640, (3, 32, 32): 640 * 2 * 2, (3, 84, 84): 640 * 5 * 5}
    for shape, dim in dims.items():
        net = ResNet12(shape)
        assert net.feature_dim == dim
        assert sum(p.numel() for p in net.parameters()) == count(shape[0], net.block_widths)
    assert count(3, (64, 160, 320, 640)) == 12_424_320
    assert ResNet12(avg_pool=True).feature_dim == 640
    assert ResNet12((3, 84, 84), avg_pool=True).feature_shape == (640, 1, 1)
    with pytest.raises(ValueError, match="too small"):
        ResNet12((3, 8, 8), widths=SMALL)


def test_avg_pool_is_the_mean_of_the_last_maps():
    net = _net((3, 32, 32)).eval()
    pooled = _net((3, 32, 32), avg_pool=True).eval()
    x = torch.randn(4, 3, 32, 32)
    expected = net(x).view(4, SMALL[-1], 2, 2).mean((2, 3))
    torch.testing.assert_close(pooled(x), expected)


@pytest.mark.parametrize("train", [False, True])
def test_forward_with_no_params_equals_forward(train):
    net = _net().train(train)
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
    some = {k: v for k, v in params.items() if k.startswith("blocks.2.")}  # others: the net's
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
    net = _net((3, 32, 32), drop_rate=0.3).train()
    x = torch.randn(6, 3, 32, 32, requires_grad=True)
    net(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_dropblock_in_last_two_blocks_in_training_only(monkeypatch):
    calls = []

    def spy(x, keep_prob, block_size, generator=None):
        calls.append((x.shape[1], keep_prob, block_size))
        return drop_block(x, keep_prob, block_size, generator)

    monkeypatch.setattr(resnet12, "drop_block", spy)
    net = _net((3, 84, 84), drop_rate=0.2, dropblock_size=5)
    x = torch.randn(4, 3, 84, 84)
    net.eval()
    first = net(x)
    torch.testing.assert_close(net(x), first)  # eval: nothing random
    assert calls == []
    net.train()
    net.set_progress(0.5)
    assert net.keep_prob == pytest.approx(0.9)
    trained = net(x)
    assert calls == [(SMALL[2], pytest.approx(0.9), 5), (SMALL[3], pytest.approx(0.9), 5)]
    assert not torch.allclose(trained, first)
    net.set_progress(7)  # clamped: MetaOptNet's final keep probability
    assert net.keep_prob == pytest.approx(0.8)


def test_schedule_at_zero_leaves_only_dropout():
    net = _net((3, 84, 84), drop_rate=0.2)
    x = torch.randn(4, 3, 84, 84)
    net.train()
    net.set_progress(0.0)
    g = torch.Generator().manual_seed(3)
    expected = x
    for i, block in enumerate(net.blocks):  # what training mode should compute at keep_prob 1
        expected = block.run({}, f"blocks.{i}.", expected, None, None)
        expected = dropout(expected, 0.2, g) if i < 2 else expected
    net.generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(net(x), expected.flatten(1), rtol=1e-4, atol=1e-5)


def test_drop_block_drops_whole_squares_and_keeps_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(64, 8, 10, 10)
    y = drop_block(x, keep_prob=0.8, block_size=5, generator=g)
    dropped = (y == 0).float()
    # dropped = a union of 5x5 squares: its morphological opening by a 5x5 square is itself
    inside = 1 - F.max_pool2d(1 - dropped, 5, stride=1)  # squares fully dropped
    opened = F.max_pool2d(F.pad(inside, [4] * 4), 5, stride=1)
    torch.testing.assert_close(opened, dropped)
    assert 0.12 < dropped.mean().item() < 0.22  # about 1 - keep_prob (overlaps: a bit less)
    torch.testing.assert_close(y.mean(), torch.tensor(1.0))  # kept entries rescaled
    assert drop_block(x, 1.0, 5) is x
    small = drop_block(torch.ones(4, 8, 3, 3), 0.5, 5, g)  # block clamped to the 3x3 map
    torch.testing.assert_close(small.flatten(2).amin(2), small.flatten(2).amax(2))  # all or none


def test_randomness_from_the_generator_or_the_global_seed():
    x = torch.randn(4, 3, 32, 32)
    a = _net((3, 32, 32), drop_rate=0.3, generator=torch.Generator().manual_seed(5)).train()
    b = _net((3, 32, 32), drop_rate=0.3, generator=torch.Generator().manual_seed(5)).train()
    torch.manual_seed(0)
    out_a = a(x)
    torch.manual_seed(1)  # the global seed does not matter with a generator
    torch.testing.assert_close(b(x), out_a)
    assert not torch.allclose(a(x), out_a)  # a's generator moved on
    c = _net((3, 32, 32), drop_rate=0.3).train()
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
    shifted = net.forward_with({}, x, modulation={1: (None, torch.ones(SMALL[1]))})
    assert not torch.allclose(shifted, out)
