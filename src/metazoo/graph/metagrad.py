"""Meta-gradients of an attacker's loss with respect to the adjacency matrix.

Zügner & Günnemann, "Adversarial Attacks on Graph Neural Networks via Meta Learning", ICLR 2019,
arXiv:1902.08412, Sec. 4. The graph is the hyper-parameter of training: with
θ_{t+1} = θ_t − α ∇_θ L_train(f_θt(A)) unrolled for T steps, the meta-gradient is
∇_A^meta = ∇_A L_atk(f_θT(A)), differentiated through all T steps (Sec. 4). Their code trains
the surrogate (linearised two-layer GCN without biases) with momentum SGD, v ← μ v + g,
θ ← θ − α v, α = 0.1, μ = 0.9, T = 100 from one fixed initialisation θ₀; so does `meta_gradient`.
The attacker's loss is the cross-entropy on the unlabeled nodes against self-training labels
(Meta-Self, their L_self) or on the labeled nodes (Meta-Train).

The approximation of Sec. 4 (A-Meta-Self/-Train/-Both) treats every θ_t as independent of A
and sums the plain gradients along the training trajectory,
∇_A^meta ≈ Σ_t ∇_A [λ L_train(f_θt(A)) + (1 − λ) L_self(f_θt(A))], θ trained by Adam (0.01, their
code) from a fresh initialisation each time: `approx_meta_gradient`.

A is symmetric, so a flip of the pair (u, v) moves a_uv and a_vu together; both functions return
G + Gᵀ with G the gradient for independent entries (zero on the diagonal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.graph.gcn import gcn_logits, normalize_adjacency
from metazoo.types import Params


def _pair_gradient(g: Tensor) -> Tensor:
    pair = g + g.T
    return pair.fill_diagonal_(0.0)


def meta_gradient(adjacency: Tensor, x: Tensor, labels: Tensor, labeled: Tensor,
                  attacked: Tensor, theta0: Params, *, steps: int, lr: float,
                  momentum: float) -> Tensor:
    """∇_A L_atk(f_θT(A)) through `steps` momentum-SGD steps of training (Sec. 4).

    Args:
        adjacency: `[N, N]` current graph.
        x: `[N, D]` features.
        labels: `[N]` labels used by both losses (true on `labeled`, self-training elsewhere).
        labeled: node indices of L_train.
        attacked: node indices of L_atk (unlabeled: Meta-Self; labeled: Meta-Train).
        theta0: the surrogate's initial weights `w0`, `w1` (no biases).
        steps, lr, momentum: T, α and μ of the unrolled training.

    Returns:
        `[N, N]` symmetric pair gradient (zero diagonal).
    """
    a = adjacency.detach().clone().requires_grad_(True)
    a_hat = normalize_adjacency(a)
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta0.items()}
    velocity = {k: torch.zeros_like(v) for k, v in theta.items()}
    names = list(theta)
    for _ in range(steps):
        logits = gcn_logits(theta, a_hat, x, relu=False)
        loss = F.cross_entropy(logits[labeled], labels[labeled])
        grads = torch.autograd.grad(loss, [theta[k] for k in names], create_graph=True)
        velocity = {k: momentum * velocity[k] + g for k, g in zip(names, grads, strict=True)}
        theta = {k: theta[k] - lr * velocity[k] for k in names}
    logits = gcn_logits(theta, a_hat, x, relu=False)
    attack_loss = F.cross_entropy(logits[attacked], labels[attacked])
    (g,) = torch.autograd.grad(attack_loss, a)
    return _pair_gradient(g)


def approx_meta_gradient(adjacency: Tensor, x: Tensor, labels: Tensor, labeled: Tensor,
                         unlabeled: Tensor, theta0: Params, *, steps: int, lr: float,
                         lam: float) -> Tensor:
    """Σ_t ∇_A [λ L_train + (1 − λ) L_self](f_θt(A)) with θ_t trained by Adam (Sec. 4).

    λ = 0 is A-Meta-Self, λ = 1 A-Meta-Train, λ = 0.5 A-Meta-Both. Arguments as in
    `meta_gradient`; `lr` is Adam's learning rate. Returns the `[N, N]` pair gradient.
    """
    a = adjacency.detach().clone().requires_grad_(True)
    a_hat = normalize_adjacency(a)
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta0.items()}
    opt = torch.optim.Adam(list(theta.values()), lr=lr)
    total = torch.zeros_like(adjacency)
    for _ in range(steps):
        logits = gcn_logits(theta, a_hat, x, relu=False)
        train = F.cross_entropy(logits[labeled], labels[labeled])
        self_loss = F.cross_entropy(logits[unlabeled], labels[unlabeled])
        attack = lam * train + (1.0 - lam) * self_loss
        (g_a,) = torch.autograd.grad(attack, a, retain_graph=True)
        total += g_a
        opt.zero_grad()
        train.backward(inputs=list(theta.values()))
        opt.step()
    return _pair_gradient(total)
