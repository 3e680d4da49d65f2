import math

import pytest
import torch
from torch import nn

from metazoo import algorithms, models
from metazoo.algorithms.snail import episode_sequences
from metazoo.errors import ConfigError, ShapeError
from metazoo.models.snail_blocks import AttentionBlock, DenseBlock, TCBlock, tc_dilations
from tests.algorithms.learning import accuracy_before_after, separable_episodes


def _seq(batch=2, steps=7, channels=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, channels, generator=g, dtype=torch.float64)


def _assert_causal(block: nn.Module, steps: int = 7, channels: int = 5) -> None:
    """Output steps <= t are unchanged when the input after t changes; step t+1 does change."""
    x = _seq(steps=steps, channels=channels)
    out = block(x)
    assert out.shape[:2] == x.shape[:2] and out.shape[2] > channels
    for t in range(steps - 1):
        y = x.clone()
        y[:, t + 1:] = torch.randn_like(y[:, t + 1:])
        changed = block(y)
        torch.testing.assert_close(changed[:, : t + 1], out[:, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(changed[:, t + 1], out[:, t + 1])  # a check that can fail


def test_tc_block_is_causal_and_has_the_papers_dilations():
    torch.manual_seed(0)
    assert tc_dilations(6) == [2, 4, 8] and tc_dilations(2) == [2] and tc_dilations(101)[-1] == 128
    block = TCBlock(5, 7, 4).double()
    assert block.out_channels == 5 + 3 * 4
    _assert_causal(block)


def test_attention_block_is_causal():
    torch.manual_seed(0)
    _assert_causal(AttentionBlock(5, 6, 3).double())


def test_attention_block_equals_a_direct_computation():
    torch.manual_seed(0)
    block = AttentionBlock(5, 6, 3).double()
    x = _seq()
    out = block(x)
    torch.testing.assert_close(out[..., :5], x)  # the input passes through (dense)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            q = x[b, i] @ block.query.weight.T + block.query.bias
            scores = torch.stack([q @ (x[b, j] @ block.key.weight.T + block.key.bias)
                                  for j in range(i + 1)]) / math.sqrt(6)
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            values = x[b, : i + 1] @ block.value.weight.T + block.value.bias
            torch.testing.assert_close(out[b, i, 5:], weights @ values)


def test_dense_block_equals_a_gated_causal_conv():
    torch.manual_seed(0)
    block = DenseBlock(5, 2, 3).double()
    x = _seq()
    w, bias = block.conv.conv.weight, block.conv.conv.bias  # [6, 5, 2], [6]
    for t in range(x.shape[1]):
        past = x[:, t - 2] if t >= 2 else torch.zeros_like(x[:, t])  # zero padding on the left
        pre = past @ w[:, :, 0].T + x[:, t] @ w[:, :, 1].T + bias  # [B, 6]
        expected = torch.tanh(pre[:, :3]) * torch.sigmoid(pre[:, 3:])
        torch.testing.assert_close(block(x)[:, t], torch.cat([x[:, t], expected], -1))


def test_sequences_put_each_query_after_the_labelled_support():
    zs, zq = torch.randn(4, 3), torch.randn(2, 3)
    seq = episode_sequences(zs, torch.tensor([0, 0, 1, 1]), zq, 2)
    assert seq.shape == (2, 5, 5)
    torch.testing.assert_close(seq[:, :4, :3], zs.expand(2, -1, -1))
    torch.testing.assert_close(seq[0, :4, 3:], torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]]))
    torch.testing.assert_close(seq[:, 4, :3], zq)
    assert (seq[:, 4, 3:] == 0).all()  # the query's label slot is zeros


def _small(ways=3, **options):
    torch.manual_seed(0)
    backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=8)
    return algorithms.build("snail", backbone, ways=ways, shots=2, key_sizes=[8, 8, 8],
                            value_sizes=[4, 4, 4], tc_filters=[4, 4], **options)


def test_a_querys_logits_do_not_depend_on_the_other_queries():
    alg = _small().double()
    g = torch.Generator().manual_seed(0)
    sx = torch.randn(6, 1, 28, 28, generator=g, dtype=torch.float64)
    sy = torch.arange(3).repeat_interleave(2)
    qx = torch.randn(4, 1, 28, 28, generator=g, dtype=torch.float64)
    predict = alg.adapt(sx, sy)
    out = predict(qx)
    other = qx.clone()
    other[1:] = torch.randn(3, 1, 28, 28, generator=g, dtype=torch.float64)
    torch.testing.assert_close(predict(other)[0], out[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(predict(qx[:1])[0], out[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(predict(other)[1:], out[1:])  # a check that can fail


def test_transductive_mode_runs_the_backbone_on_the_whole_episode():
    alg = _small(bn_mode="transductive")
    sx, qx = torch.randn(6, 1, 28, 28), torch.randn(4, 1, 28, 28)
    out = alg.adapt(sx, torch.arange(3).repeat_interleave(2))(qx)
    assert out.shape == (4, 3) and torch.isfinite(out).all()


def test_wrong_ways_raise_shape_error():
    alg = _small()
    sx, sy = torch.randn(8, 1, 28, 28), torch.arange(4).repeat_interleave(2)
    with pytest.raises(ShapeError, match="3-way"):
        alg.adapt(sx, sy, ways=4)


def test_bad_config_raises():
    backbone = models.build("conv4", hidden=8)
    with pytest.raises(ConfigError, match="shots"):
        algorithms.build("snail", backbone, ways=5, shots=0)
    with pytest.raises(ConfigError, match="one fewer tc_filters"):
        algorithms.build("snail", backbone, ways=5, tc_filters=[128])
    with pytest.raises(ConfigError, match="positive"):
        algorithms.build("snail", backbone, ways=5, value_sizes=[32, 0, 256])
    with pytest.raises(ConfigError, match="bn_mode"):
        algorithms.build("snail", backbone, ways=5, bn_mode="per_query")


@pytest.mark.slow
def test_snail_learns_separable_classes():
    """A small SNAIL leaves chance (0.2) within 300 steps of 8 tasks (~35 s): seeds 0-2 at one
    thread 0.64-0.76. On 40 training classes it memorised them and stalled near 0.3-0.4, so it
    gets 400; the paper-sized network sits at chance longer (glyphs preset: ~150 steps)."""
    torch.manual_seed(0)
    alg = algorithms.build("snail", models.build("conv4", hidden=16), ways=5,
                           key_sizes=[32, 64, 64], value_sizes=[16, 32, 32], tc_filters=[32, 32])
    before, after = accuracy_before_after(alg, *separable_episodes(train_classes=400), steps=300,
                                          lr=3e-3, meta_batch_size=8)
    assert after >= 0.4 and after > before + 0.15, (before, after)
