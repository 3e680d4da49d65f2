"""The graph a `GraphDataConfig` names, prepared as Metattack's protocol wants it (Sec. 5): the
largest connected component, then a stratified labeled/unlabeled split."""

from __future__ import annotations

from torch import Tensor

from metazoo.data.cache import resolve_root
from metazoo.graph.config import GraphDataConfig
from metazoo.graph.generators import csbm, karate_club
from metazoo.graph.graphs import Graph, labeled_split, largest_component
from metazoo.graph.planetoid import load_planetoid


def load_graph(cfg: GraphDataConfig) -> Graph:
    """The graph of `cfg.name` (its largest component when `cfg.largest_component`)."""
    if cfg.name == "csbm":
        graph = csbm(cfg.nodes, cfg.classes, cfg.within_degree, cfg.between_degree,
                     cfg.feature_dim, cfg.feature_signal, seed=cfg.graph_seed)
    elif cfg.name == "karate":
        graph = karate_club(cfg.karate_features)
    else:
        graph = load_planetoid(resolve_root(cfg.root), cfg.name)
    return largest_component(graph) if cfg.largest_component else graph


def prepared(cfg: GraphDataConfig) -> tuple[Graph, Tensor, Tensor]:
    """(graph, labeled node ids, unlabeled node ids)."""
    graph = load_graph(cfg)
    labeled, unlabeled = labeled_split(graph.labels, cfg.labeled_share, cfg.split_seed)
    return graph, labeled, unlabeled
