"""The linear feature baseline of Duan, Chen, Houthooft, Schulman, Abbeel, "Benchmarking Deep
Reinforcement Learning for Continuous Control", ICML 2016 (arXiv:1604.06778), as MAML-RL uses it
(Finn et al. 2017, Sec. 5.3: "fitted separately at each iteration for each sampled task").

The value of a state is a linear function of the features
    phi(s, t) = [clip(s, -10, 10), clip(s, -10, 10)^2, t/100, (t/100)^2, (t/100)^3, 1]
(rllab's `LinearFeatureBaseline`), fitted by ridge regression to the discounted returns of the
task's trajectories: w = (X^T X + c I)^{-1} X^T G, c = 1e-5, multiplied by 10 (at most 5 times)
until the solution is finite. It is fitted and then evaluated on the same trajectories, as the
reference code does; the advantages are then G_t - phi(s_t, t)^T w (GAE with lambda = 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

REG = 1e-5  # rllab LinearFeatureBaseline reg_coeff


def features(observations: Tensor) -> Tensor:
    """Features `[T, M, 2D + 4]` of observations `[T, M, D]` (time t = row index)."""
    t_len, m, _ = observations.shape
    o = observations.clamp(-10, 10)
    t = (torch.arange(t_len, dtype=o.dtype, device=o.device) / 100.0).view(t_len, 1, 1)
    t = t.expand(t_len, m, 1)
    return torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)


def fit(observations: Tensor, returns: Tensor, mask: Tensor, reg: float = REG) -> Tensor:
    """Ridge-regression weights `[2D + 4]` on the valid steps (`mask` `[T, M]` of 0/1).

    Args:
        observations: `[T, M, D]`, the trajectories of one task side by side.
        returns: discounted returns-to-go `[T, M]`.
        mask: 1 where the step exists (trajectories end at different times).
        reg: the first ridge coefficient; raised tenfold while the solution is not finite.
    """
    x = features(observations).double() * mask.double().unsqueeze(-1)  # [T, M, F], 0 if padded
    x = x.reshape(-1, x.shape[-1])
    y = (returns.double() * mask.double()).reshape(-1)
    xtx, xty = x.T @ x, x.T @ y
    eye = torch.eye(xtx.shape[0], dtype=xtx.dtype, device=xtx.device)
    w = torch.full_like(xty, float("nan"))
    for _ in range(5):
        w = torch.linalg.lstsq(xtx + reg * eye, xty.unsqueeze(-1)).solution.squeeze(-1)
        if bool(torch.isfinite(w).all()):
            break
        reg *= 10
    return w.to(observations.dtype)


def predict(weights: Tensor, observations: Tensor) -> Tensor:
    """Baseline values `[T, M]` of observations `[T, M, D]`."""
    return features(observations) @ weights
