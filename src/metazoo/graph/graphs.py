"""An attributed graph for node classification, its largest connected component, and the
labeled/unlabeled split that Metattack uses.

`Graph` holds a dense symmetric 0/1 adjacency without self-loops (the attack differentiates with
respect to every entry, so dense is the natural form; Cora's largest component is 2485 nodes, 25 MB
in float32), node features and integer labels (-1 where a published file gives none). Zügner &
Günnemann (ICLR 2019, Sec. 5) attack the largest connected component and label 10% of its nodes,
stratified by class; the other 90% are unlabeled and give the misclassification rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metazoo.errors import ShapeError


@dataclass(frozen=True)
class Graph:
    """An undirected attributed graph.

    Args:
        adjacency: `[N, N]` float, symmetric, entries 0 or 1, zero diagonal.
        features: `[N, D]` float node attributes.
        labels: `[N]` int64 classes, -1 for a node without a label.
        name: what to call it in messages and results.
        train, val, test: a published split (node indices), or None.
    """

    adjacency: Tensor
    features: Tensor
    labels: Tensor
    name: str
    train: Tensor | None = None
    val: Tensor | None = None
    test: Tensor | None = None

    def __post_init__(self) -> None:
        a, n = self.adjacency, self.adjacency.shape[0]
        if a.dim() != 2 or a.shape != (n, n):
            raise ShapeError(f"{self.name}: adjacency must be square, got {tuple(a.shape)}")
        if self.features.dim() != 2 or self.features.shape[0] != n or self.labels.shape != (n,):
            raise ShapeError(f"{self.name}: {n} nodes but features {tuple(self.features.shape)} "
                             f"and labels {tuple(self.labels.shape)}")
        if not torch.equal(a, a.T) or bool(a.diagonal().any()) or bool(((a != 0) & (a != 1)).any()):
            raise ShapeError(f"{self.name}: adjacency must be symmetric 0/1 without self-loops")

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.adjacency.shape[0])

    @property
    def num_edges(self) -> int:
        """Undirected edges (each counted once)."""
        return int(self.adjacency.sum().item()) // 2

    @property
    def num_classes(self) -> int:
        """1 + the largest label."""
        return int(self.labels.max().item()) + 1

    def subgraph(self, nodes: Tensor) -> Graph:
        """The graph induced by `nodes` (sorted indices); a published split is dropped."""
        return Graph(self.adjacency[nodes][:, nodes], self.features[nodes], self.labels[nodes],
                     self.name)


def components(adjacency: Tensor) -> Tensor:
    """`[N]` component id of every node (label propagation of the smallest index; exact)."""
    n = adjacency.shape[0]
    linked = (adjacency > 0) | torch.eye(n, dtype=torch.bool, device=adjacency.device)
    comp = torch.arange(n, device=adjacency.device)
    while True:  # each node takes the smallest id among itself and its neighbours
        new = torch.where(linked, comp[None, :], n).min(dim=1).values
        if torch.equal(new, comp):
            return comp
        comp = new


def largest_component(graph: Graph) -> Graph:
    """The subgraph of the largest connected component (ties: the one with the smallest node)."""
    comp = components(graph.adjacency)
    sizes = torch.bincount(comp, minlength=graph.num_nodes)
    keep = torch.nonzero(comp == int(sizes.argmax())).flatten()
    return graph if len(keep) == graph.num_nodes else graph.subgraph(keep)


def labeled_split(labels: Tensor, share: float, seed: int) -> tuple[Tensor, Tensor]:
    """Stratified split into labeled and unlabeled nodes (sorted index tensors).

    Each class gives `round(share * size)` of its nodes, at least one; nodes with label -1 are
    never labeled and are not in the unlabeled set either (they have nothing to score).
    """
    g = torch.Generator().manual_seed(seed)
    labeled = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == c).flatten()
        take = max(1, round(share * len(members)))
        labeled.append(members[torch.randperm(len(members), generator=g)[:take]])
    lab = torch.sort(torch.cat(labeled)).values
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[lab] = False
    rest &= labels >= 0
    return lab, torch.nonzero(rest).flatten()
