import math

import torch

from metazoo.graph.gcn import TrainSettings, gcn_logits, init_gcn, normalize_adjacency, train_gcn
from metazoo.graph.generators import csbm
from metazoo.graph.graphs import components, labeled_split, largest_component


def test_normalized_adjacency_of_a_path_by_hand():
    a = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])
    # A + I has degrees 2, 3, 2: entries (A + I)_ij / sqrt(d_i d_j)
    s6 = 1 / math.sqrt(6)
    expected = torch.tensor([[1 / 2, s6, 0], [s6, 1 / 3, s6], [0, s6, 1 / 2]])
    assert torch.allclose(normalize_adjacency(a), expected, atol=1e-7)


def test_gcn_logits_equal_the_two_layer_formula():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(6, 6, generator=g) < 0.4).float().triu(1)
    a = a + a.T
    x = torch.randn(6, 3, generator=g)
    p = init_gcn(3, 4, 2, generator=g)
    p = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in p.items()}
    a_hat = normalize_adjacency(a)
    ref = a_hat @ torch.relu(a_hat @ x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]
    assert torch.allclose(gcn_logits(p, a_hat, x), ref, atol=1e-6)
    lin = a_hat @ (a_hat @ x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]
    assert torch.allclose(gcn_logits(p, a_hat, x, relu=False), lin, atol=1e-6)


def test_gcn_learns_a_csbm_graph_from_ten_percent_labels():
    graph = largest_component(csbm(200, 3, 5.0, 1.0, 16, 1.0, seed=1))
    lab, unl = labeled_split(graph.labels, 0.1, seed=0)
    a_hat = normalize_adjacency(graph.adjacency)
    p = train_gcn(a_hat, graph.features, graph.labels, lab, TrainSettings(), seed=0)
    acc = (gcn_logits(p, a_hat, graph.features).argmax(1) == graph.labels)[unl].float().mean()
    assert acc > 0.8  # chance is 1/3


def test_components_and_split():
    a = torch.zeros(5, 5)
    a[0, 1] = a[1, 0] = a[2, 3] = a[3, 2] = a[3, 4] = a[4, 3] = 1.0
    assert components(a).tolist() == [0, 0, 2, 2, 2]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, -1])
    lab, unl = labeled_split(labels, 0.25, seed=3)
    assert sorted(labels[lab].tolist()) == [0, 1]  # round(0.25 * 4) = 1, round(0.25 * 5) = 1
    assert set(lab.tolist()).isdisjoint(unl.tolist()) and 9 not in unl.tolist()
    assert len(lab) + len(unl) == 9
