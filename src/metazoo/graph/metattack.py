"""Metattack: a global poisoning attack on node classification by greedy meta-gradient flips.

Zügner & Günnemann, "Adversarial Attacks on Graph Neural Networks via Meta Learning", ICLR 2019,
arXiv:1902.08412 (their Appendix A gives the algorithm). Each of Δ iterations computes the
meta-gradient of the attacker's loss with respect to the adjacency matrix
(`metazoo.graph.metagrad`), scores every node pair by S(u, v) = ∇_{a_uv} · (−2 a_uv + 1) (Sec. 4:
the first-order gain of flipping it) and flips the admissible pair of largest score
(`metazoo.graph.constraints`: no singletons, the degree test, each pair at most once).
Self-training labels (Sec. 4) are the predictions of the linearised surrogate trained on the
clean graph, the true labels on labeled nodes. Δ = ⌊budget × |E|⌋ (Sec. 5: 5%). Variants:
Meta-Self, Meta-Train (exact) and A-Meta-Self/-Train/-Both (approximate, Sec. 4). The baseline
`random_flips` flips Δ uniformly drawn admissible pairs under the same constraints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from metazoo.graph.config import MetattackConfig, Variant
from metazoo.graph.constraints import admissible
from metazoo.graph.gcn import TrainSettings, init_gcn, normalize_adjacency, predict, train_gcn
from metazoo.graph.graphs import Graph
from metazoo.graph.metagrad import approx_meta_gradient, meta_gradient

LAMBDA = {"a_meta_self": 0.0, "a_meta_both": 0.5, "a_meta_train": 1.0}  # λ of their code


@dataclass(frozen=True)
class AttackResult:
    """A perturbed graph: `adjacency [N, N]`, the flipped pairs in order, the attack's seconds."""

    adjacency: Tensor
    flips: list[tuple[int, int]]
    seconds: float


def budget(graph: Graph, share: float) -> int:
    """Δ = ⌊share × |E|⌋ flips."""
    return int(share * graph.num_edges)


def self_training_labels(graph: Graph, labeled: Tensor, settings: TrainSettings, *,
                         seed: int) -> Tensor:
    """`[N]` predictions of the linearised surrogate trained on the clean graph, true labels on
    the labeled nodes (Sec. 4, self-training)."""
    a_hat = normalize_adjacency(graph.adjacency)
    surrogate = TrainSettings(**{**settings.__dict__, "relu": False})
    params = train_gcn(a_hat, graph.features, graph.labels, labeled, surrogate, seed=seed)
    out = predict(params, a_hat, graph.features, relu=False)
    out[labeled] = graph.labels[labeled]
    return out


def scores(pair_gradient: Tensor, adjacency: Tensor) -> Tensor:
    """S = ∇ ∘ (1 − 2A): positive where flipping the pair raises the attacker's loss."""
    return pair_gradient * (1.0 - 2.0 * adjacency)


def greedy_flip(adjacency: Tensor, score: Tensor, allowed: Tensor) -> tuple[int, int] | None:
    """Flip, in place and symmetrically, the allowed pair u < v of largest score; None when no
    pair is allowed."""
    upper = torch.ones_like(allowed).triu(diagonal=1)
    masked = torch.where(allowed & upper, score, -torch.inf)
    u, v = divmod(int(masked.argmax()), adjacency.shape[0])
    if masked[u, v] == -torch.inf:
        return None
    adjacency[u, v] = adjacency[v, u] = 1.0 - adjacency[u, v]
    return u, v


def _device(cfg: MetattackConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def metattack(graph: Graph, labeled: Tensor, unlabeled: Tensor, targets: Tensor,
              variant: Variant, cfg: MetattackConfig, *, seed: int) -> AttackResult:
    """Run one variant for Δ flips; `targets` are the self-training labels."""
    start = time.perf_counter()
    dev, dtype = _device(cfg), getattr(torch, cfg.dtype)
    clean = graph.adjacency.to(dev, dtype)
    adj, x, y = clean.clone(), graph.features.to(dev, dtype), targets.to(dev)
    lab, unl = labeled.to(dev), unlabeled.to(dev)
    g = torch.Generator().manual_seed(seed)

    def theta() -> dict[str, Tensor]:
        w = init_gcn(x.shape[1], cfg.hidden, int(y.max()) + 1, generator=g, dtype=dtype,
                     bias=False)
        return {k: v.to(dev) for k, v in w.items()}

    theta0 = theta()  # exact variants: one initialisation for every iteration (their code)
    flips: list[tuple[int, int]] = []
    for _ in range(budget(graph, cfg.budget)):
        if variant in ("meta_self", "meta_train"):
            attacked = unl if variant == "meta_self" else lab
            grad = meta_gradient(adj, x, y, lab, attacked, theta0, steps=cfg.train_iters,
                                 lr=cfg.lr, momentum=cfg.momentum)
        else:
            grad = approx_meta_gradient(adj, x, y, lab, unl, theta(), steps=cfg.train_iters,
                                        lr=cfg.approx_lr, lam=LAMBDA[variant])
        allowed = admissible(clean, adj, ll_constraint=cfg.ll_constraint,
                             ll_cutoff=cfg.ll_cutoff)
        pair = greedy_flip(adj, scores(grad, adj), allowed)
        if pair is None:
            break
        flips.append(pair)
    return AttackResult(adj.cpu().float(), flips, time.perf_counter() - start)


def random_flips(graph: Graph, cfg: MetattackConfig, *, seed: int) -> AttackResult:
    """Δ admissible pairs drawn uniformly, one at a time, under the same constraints."""
    start = time.perf_counter()
    clean = graph.adjacency.double()
    adj = clean.clone()
    g = torch.Generator().manual_seed(seed)
    flips: list[tuple[int, int]] = []
    for _ in range(budget(graph, cfg.budget)):
        allowed = admissible(clean, adj, ll_constraint=cfg.ll_constraint,
                             ll_cutoff=cfg.ll_cutoff)
        pair = greedy_flip(adj, torch.rand(adj.shape, generator=g, dtype=adj.dtype), allowed)
        if pair is None:
            break
        flips.append(pair)
    return AttackResult(adj.float(), flips, time.perf_counter() - start)
