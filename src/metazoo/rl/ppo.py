"""Proximal policy optimisation on whole trials: generalised advantage estimation and the
clipped surrogate objective.

Schulman, Moritz, Levine, Jordan, Abbeel. "High-Dimensional Continuous Control Using Generalized
Advantage Estimation". ICLR 2016, arXiv:1506.02438: delta_t = r_t + gamma V(t+1) - V(t) and
A_t = sum_l (gamma lambda)^l delta_{t+l} (Eq. 16), returns R_t = A_t + V(t) as value targets.
Schulman, Wolski, Dhariwal, Radford, Klimov. "Proximal Policy Optimization Algorithms".
arXiv:1707.06347: L^CLIP = E[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)] with
rho_t = pi(a_t) / pi_old(a_t) (Eq. 7), maximised with a squared-error value loss and an entropy
bonus (Eq. 9). For RL² the sequence is the whole trial: episode ends inside it do not cut the
advantage (the objective is the trial's return), V = 0 after its last step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
        ) -> tuple[Tensor, Tensor]:
    """Advantages and value targets of time-major trials (`[T, B]` each); steps with mask 0
    (after a trial ended) get 0 and cut the recursion."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    next_value = torch.zeros_like(values[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        m = mask[t]
        delta = rewards[t] + gamma * next_value * m - values[t]
        running = (delta + gamma * lam * running) * m
        adv[t] = running
        next_value = values[t] * m
    return adv, adv + values


def clipped_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor,
                 clip: float) -> tuple[Tensor, dict[str, Tensor]]:
    """-L^CLIP averaged over the unmasked steps, with the approximate KL(old || new) and the
    fraction of clipped ratios (for the log)."""
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.minimum(ratio * advantages,
                              ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    n = mask.sum().clamp(min=1.0)
    loss = -(surrogate * mask).sum() / n
    with torch.no_grad():
        kl = ((old_log_probs - log_probs) * mask).sum() / n
        clipped = (((ratio - 1.0).abs() > clip).float() * mask).sum() / n
    return loss, {"approx_kl": kl, "clip_fraction": clipped}


def normalized(advantages: Tensor, mask: Tensor) -> Tensor:
    """Advantages with zero mean and unit variance over the unmasked steps."""
    n = mask.sum().clamp(min=2.0)
    mean = (advantages * mask).sum() / n
    var = (((advantages - mean) * mask) ** 2).sum() / (n - 1)
    return (advantages - mean) / (var.sqrt() + 1e-8) * mask
