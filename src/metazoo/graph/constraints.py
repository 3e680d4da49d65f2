"""Which edge flips an attacker may make: no singleton nodes, and an unnoticeable change of the
degree distribution.

Zügner & Günnemann (ICLR 2019, arXiv:1902.08412, the admissible perturbations) keep the attacked
graph free of singleton nodes (a flip that removes the last edge of a node is refused) and reuse
Nettack's test (Zügner, Akbarnejad & Günnemann, "Adversarial Attacks on Neural Networks for
Graph Data", KDD 2018, arXiv:1805.07984, "unnoticeable perturbations"): fit a power law to the
degrees d >= d_min = 2 of the clean graph G⁰, of the perturbed graph G' and of both together,
with the approximate maximum-likelihood exponent
    α_x = 1 + n_x [Σ_i log d_i − n_x log(d_min − 1/2)]^{-1},
and log-likelihood  l(D_x) = n_x log α_x + n_x α_x log d_min − (α_x + 1) Σ_i log d_i;
the flip is admissible when Λ = −2 l(D_comb) + 2 (l(D_G⁰) + l(D_G')) < τ = 0.004 (about the 5%
quantile of χ² with one degree of freedom, as their code). Λ is computed for every candidate
pair at once from the degree changes it would cause. Their published code writes the last term
as `+ (α + 1) Σ log d`; this file follows the paper's formula.
"""

from __future__ import annotations

import torch
from torch import Tensor


def no_singleton_mask(adjacency: Tensor) -> Tensor:
    """`[N, N]` bool: False where flipping would leave a node without edges (removing the only
    edge of a degree-one endpoint)."""
    deg = adjacency.sum(dim=1)
    one = deg == 1
    lonely = (adjacency > 0) & (one[:, None] | one[None, :])
    return ~lonely


def _power_law_ll(n: Tensor, sum_log: Tensor, d_min: float) -> Tensor:
    """l(D) from the count `n` and the sum of log-degrees of the degrees >= d_min."""
    alpha = 1.0 + n / (sum_log - n * torch.log(torch.as_tensor(d_min - 0.5, dtype=n.dtype)))
    log_dmin = torch.log(torch.as_tensor(d_min, dtype=n.dtype))
    return n * torch.log(alpha) + n * alpha * log_dmin - (alpha + 1) * sum_log


def _counts(deg: Tensor, d_min: float) -> tuple[Tensor, Tensor]:
    """(n, Σ log d) over the degrees >= d_min (summed over the last dimension)."""
    kept = deg >= d_min
    return kept.sum(dim=-1).to(deg.dtype), torch.where(kept, deg, 1.0).log().sum(dim=-1)


def likelihood_ratio(clean: Tensor, perturbed: Tensor, d_min: float = 2.0) -> Tensor:
    """Λ between the degree distributions of two graphs (a scalar)."""
    n0, s0 = _counts(clean.sum(dim=1).double(), d_min)
    n1, s1 = _counts(perturbed.sum(dim=1).double(), d_min)
    ll = _power_law_ll
    return -2 * ll(n0 + n1, s0 + s1, d_min) + 2 * (ll(n0, s0, d_min) + ll(n1, s1, d_min))


def likelihood_ratio_after_flip(clean: Tensor, current: Tensor, d_min: float = 2.0) -> Tensor:
    """`[N, N]` Λ(G⁰, G' ⊕ (u, v)) for flipping each pair (u, v) of the current graph G'."""
    deg0 = clean.sum(dim=1).double()
    deg = current.sum(dim=1).double()
    delta = 1.0 - 2.0 * current.double()  # +1 adds an edge, -1 removes it
    n0, s0 = _counts(deg0, d_min)
    n, s = _counts(deg, d_min)

    def contribution(d: Tensor) -> tuple[Tensor, Tensor]:
        kept = d >= d_min
        return kept.to(d.dtype), torch.where(kept, d, 1.0).log()

    n_u, s_u = contribution(deg)  # what node u counts now, [N]
    n_new_u, s_new_u = contribution(deg[:, None] + delta)  # u after the flip (u, v), [N, N]
    n_new_v, s_new_v = contribution(deg[None, :] + delta)
    n1 = n - n_u[:, None] - n_u[None, :] + n_new_u + n_new_v
    s1 = s - s_u[:, None] - s_u[None, :] + s_new_u + s_new_v
    ll = _power_law_ll
    return -2 * ll(n0 + n1, s0 + s1, d_min) + 2 * (ll(n0, s0, d_min) + ll(n1, s1, d_min))


def admissible(clean: Tensor, current: Tensor, *, ll_constraint: bool, ll_cutoff: float,
               d_min: float = 2.0) -> Tensor:
    """`[N, N]` bool, symmetric: pairs u != v whose flip keeps every constraint, and that have
    not been flipped already (the budget counts changed pairs, ||A' − A||₀ <= 2Δ)."""
    n = current.shape[0]
    ok = no_singleton_mask(current) & (current == clean)
    ok &= ~torch.eye(n, dtype=torch.bool, device=current.device)
    if ll_constraint:
        ok &= (likelihood_ratio_after_flip(clean, current, d_min) < ll_cutoff).to(ok.device)
    return ok
