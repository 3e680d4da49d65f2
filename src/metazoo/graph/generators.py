"""Generated and shipped graphs for attack runs without downloads.

`csbm`: a K-class contextual stochastic block model after Deshpande, Sen, Montanari & Mossel,
"Contextual Stochastic Block Models", NeurIPS 2018, arXiv:1807.09596: balanced shuffled
labels; an edge between u and v with probability p_in in the same class and p_out otherwise (the
paper's (d ± λ√d) / N), set here by expected neighbour counts, p_in = within_degree / (N/K − 1)
and p_out = between_degree / (N − N/K); features x_i = m_{y_i} + z_i with z_i ~ N(0, I_D) and
class means m_k ~ N(0, (μ / D) I_D), so ||m_k||² ≈ μ. Deviation: the paper's model has two
classes (±1) and one mean direction; K classes with independent means is its natural
generalisation, and weak features make the GCN lean on the structure.

`karate_club`: Zachary's karate club as networkx ships it (34 nodes, 78 edges; the `club`
attribute, "Mr. Hi" = 0 or "Officer" = 1, as labels; edge weights dropped), with one-hot
(identity) or degree features.
"""

from __future__ import annotations

import torch

from metazoo.errors import DataError
from metazoo.graph.graphs import Graph


def csbm(nodes: int, classes: int, within_degree: float, between_degree: float,
         feature_dim: int, feature_signal: float, *, seed: int) -> Graph:
    """A contextual SBM graph (float32), a pure function of its arguments and `seed`."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(nodes) % classes  # balanced classes, then shuffled
    labels = labels[torch.randperm(nodes, generator=g)]
    size = nodes / classes
    p_in = min(1.0, within_degree / max(size - 1.0, 1.0))
    p_out = min(1.0, between_degree / max(nodes - size, 1.0))
    same = labels[:, None] == labels[None, :]
    prob = torch.where(same, p_in, p_out)
    upper = torch.triu(torch.rand(nodes, nodes, generator=g) < prob, diagonal=1)
    adjacency = (upper | upper.T).float()
    means = torch.randn(classes, feature_dim, generator=g) * (feature_signal / feature_dim) ** 0.5
    features = means[labels] + torch.randn(nodes, feature_dim, generator=g)
    return Graph(adjacency, features, labels, f"csbm(n={nodes}, k={classes}, seed={seed})")


def karate_club(features: str = "identity") -> Graph:
    """Zachary's karate club from networkx; `features` "identity" or "degree"."""
    try:
        import networkx as nx
    except ImportError:
        raise DataError("the karate club graph comes from networkx: pip install networkx"
                        ) from None
    nxg = nx.karate_club_graph()
    n = nxg.number_of_nodes()
    adjacency = torch.zeros(n, n)
    for u, v in nxg.edges():
        if u != v:
            adjacency[u, v] = adjacency[v, u] = 1.0
    clubs = nx.get_node_attributes(nxg, "club")
    labels = torch.tensor([0 if clubs[i] == "Mr. Hi" else 1 for i in range(n)])
    x = torch.eye(n) if features == "identity" else adjacency.sum(dim=1, keepdim=True)
    return Graph(adjacency, x, labels, "karate")
