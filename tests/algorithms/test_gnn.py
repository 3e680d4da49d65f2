"""Few-shot GNN: adjacency and graph conv by hand, per-query graphs, permutation, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metazoo import algorithms, models
from metazoo.algorithms.gnn import SLOPE, Adjacency, GraphConv, node_features
from metazoo.errors import ConfigError, ShapeError
from tests.algorithms.learning import accuracy_before_after, glyph_episodes, separable_episodes


class Flatten(nn.Module):
    """Batch-independent 'embedding' (no batch norm): each image's features are its pixels."""

    feature_dim = 4

    def forward(self, x):
        return x.flatten(1)


def _norm(h, dims):
    """Batch norm by hand with the default affine parameters (ones, zeros)."""
    mean = h.mean(dims, keepdim=True)
    return (h - mean) / torch.sqrt(((h - mean) ** 2).mean(dims, keepdim=True) + 1e-5)


def test_adjacency_equals_softmax_of_mlp_by_hand_and_rows_sum_to_one():
    torch.manual_seed(0)
    adj = Adjacency(2, [3])
    x = torch.randn(2, 4, 2)  # 2 graphs of 4 nodes with 2 features
    out = adj(x)
    w1, w2 = adj.linears[0].weight, adj.score.weight  # [3, 2], [1, 3]
    for g in range(2):
        pairs = torch.stack([torch.stack([(x[g, i] - x[g, j]).abs() for j in range(4)])
                             for i in range(4)])  # [4, 4, 2]
        h = torch.nn.functional.leaky_relu(_norm(pairs @ w1.T, (0, 1)), SLOPE)
        s = (h @ w2.T).squeeze(-1)  # [4, 4]
        for i in range(4):
            e = torch.tensor([0.0 if j == i else torch.exp(s[i, j]).item() for j in range(4)])
            torch.testing.assert_close(out[g, i], e / e.sum())
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 4))
    assert (out.diagonal(dim1=1, dim2=2) == 0).all()


@pytest.mark.parametrize("norm", [False, True])
def test_graph_conv_equals_identity_plus_adjacency_terms_by_hand(norm):
    torch.manual_seed(0)
    conv = GraphConv(3, 2, norm=norm)
    x = torch.randn(1, 3, 3)  # one graph of 3 nodes, 3 features
    a = torch.softmax(torch.randn(1, 3, 3), -1)
    w = conv.linear.weight  # [2, 6] = [theta_I^T, theta_A^T]
    theta_i, theta_a = w[:, :3].T, w[:, 3:].T
    rows = []
    for i in range(3):
        r = x[0, i] @ theta_i + sum(a[0, i, j] * x[0, j] for j in range(3)) @ theta_a
        rows.append(r if norm else r + conv.linear.bias)
    expected = torch.stack(rows)[None]
    torch.testing.assert_close(conv(x, a), _norm(expected, (1,)) if norm else expected)


def test_node_features_one_hot_support_uniform_query():
    zs, zq = torch.randn(3, 2), torch.randn(2, 2)
    x = node_features(zs, torch.tensor([2, 0, 1]), zq, 4)
    assert x.shape == (2, 4, 6)
    torch.testing.assert_close(x[1, 0], torch.cat([zs[0], torch.tensor([0.0, 0, 1, 0])]))
    torch.testing.assert_close(x[1, -1], torch.cat([zq[1], torch.full((4,), 0.25)]))


def test_query_logits_do_not_depend_on_other_queries():
    torch.manual_seed(0)
    alg = algorithms.build("gnn", Flatten(), ways=2)
    sx, sy = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    q = torch.randn(5, 1, 2, 2)
    together = alg.adapt(sx, sy)(q)
    alone = torch.cat([alg.adapt(sx, sy)(q[i: i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone)
    changed = alg.adapt(sx, sy)(torch.cat([q[:1], torch.randn(4, 1, 2, 2)]))
    torch.testing.assert_close(changed[0], together[0])


@pytest.mark.parametrize("backbone", ["flatten", "conv4"])
def test_permuting_the_support_set_leaves_logits_unchanged(backbone):
    torch.manual_seed(0)
    shape = (1, 2, 2) if backbone == "flatten" else (1, 16, 16)
    net = Flatten() if backbone == "flatten" else models.build("conv4", input_shape=shape,
                                                                hidden=8)
    alg = algorithms.build("gnn", net, ways=3)
    sx, sy = torch.randn(6, *shape), torch.tensor([0, 1, 2, 0, 1, 2])
    q = torch.randn(4, *shape)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    out = alg.adapt(sx, sy)(q)
    torch.testing.assert_close(alg.adapt(sx[perm], sy[perm])(q), out, rtol=1e-4, atol=1e-5)


def test_bad_config_and_other_ways_raise():
    with pytest.raises(ConfigError, match="growth"):
        algorithms.build("gnn", Flatten(), ways=2, growth=0)
    with pytest.raises(ConfigError, match="adj_ratios"):
        algorithms.build("gnn", Flatten(), ways=2, adj_ratios=(2.0, -1.0))
    with pytest.raises(ConfigError, match="adj_width"):
        algorithms.build("gnn", Flatten(), ways=2, adj_width=0)
    with pytest.raises(ConfigError, match="did you mean 'layers'"):
        algorithms.build("gnn", Flatten(), ways=2, layer=3)
    alg = algorithms.build("gnn", Flatten(), ways=2)
    with pytest.raises(ShapeError, match="2-way"):
        alg.adapt(torch.randn(3, 1, 2, 2), torch.arange(3), ways=3)


def test_gnn_learns_separable_classes():
    torch.manual_seed(0)
    # a small GNN (one hidden block of 16 features, one-layer adjacency MLPs) and a larger
    # learning rate than the paper's 1e-3 keep this test short
    alg = algorithms.build("gnn", models.build("conv4", hidden=16), ways=5, layers=1,
                           growth=16, adj_ratios=(1.0,))
    before, after = accuracy_before_after(alg, *separable_episodes(), steps=60, lr=5e-3)
    assert after >= 0.6 and after > before + 0.05, (before, after)


@pytest.mark.slow
def test_gnn_learns_glyphs_5way_1shot():
    torch.manual_seed(0)
    alg = algorithms.build("gnn", models.build("conv4", hidden=32), ways=5, layers=1,
                           growth=16, adj_ratios=(1.0,))
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=150, lr=3e-3)
    assert after >= 0.6 and after > before + 0.1, (before, after)
