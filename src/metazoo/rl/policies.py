"""Gaussian MLP policy: the policy network of MAML-RL (Finn, Abbeel, Levine 2017, Sec. 5.3).

pi_theta(a | s) = N(a; mu_theta(s), diag(exp(log_std))^2), mu an MLP (two hidden layers of 100
ReLU units in the paper), log_std a state-independent learned vector (initial std 1.0, as rllab's
`GaussianMLPPolicy` that the reference code cbfinn/maml_rl builds on). Weights start Glorot-
uniform with zero biases (TensorFlow's default there). Every function here takes the
parameters explicitly (`metazoo.functional.call`), so adapted parameters never touch the module;
`stacked_*` run one parameter set per task under `torch.vmap`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metazoo.functional import call
from metazoo.types import Params


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy with an MLP mean and a learned state-independent log std.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer widths (the paper: (100, 100)).
        init_std: initial standard deviation of every action dimension.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (100, 100),
                 init_std: float = 1.0) -> None:
        super().__init__()
        widths = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.mean = nn.Linear(widths[-1], act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean `[..., A]` and log std `[A]` (broadcast over the batch) for `obs` `[..., D]`."""
        return self.mean(self.body(obs)), self.log_std


def mean_log_std(policy: nn.Module, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
    """The policy's mean `[..., A]` and log std with `params` in place of its weights."""
    out: tuple[Tensor, Tensor] = call(policy, params, obs)  # type: ignore[assignment]
    return out


def gaussian_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """log N(actions; mean, diag(exp(log_std))^2), summed over the last (action) axis."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean0: Tensor, log_std0: Tensor, mean1: Tensor, log_std1: Tensor) -> Tensor:
    """KL(N0 || N1) of two diagonal Gaussians, summed over the last axis (closed form)."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1).pow(2)) / (2 * var1) - 0.5).sum(-1)


def stacked_mean_log_std(policy: nn.Module, params: Params, obs: Tensor
                         ) -> tuple[Tensor, Tensor]:
    """Mean `[B, N, A]` and log std `[B, A]` of `B` parameter sets stacked `[B, ...]`, each on its
    own observations `obs` `[B, N, D]`, in one vmapped call."""
    def one(p: Params, o: Tensor) -> tuple[Tensor, Tensor]:
        return mean_log_std(policy, p, o)

    out: tuple[Tensor, Tensor] = torch.vmap(one)(params, obs)
    return out


def sample_actions(mean: Tensor, log_std: Tensor, generator: torch.Generator) -> Tensor:
    """Draw a ~ N(mean, exp(log_std)^2) with `generator` (same shape as `mean`); the noise is
    drawn where the generator lives (a CPU generator gives the same draws on every device)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                        device=generator.device).to(mean.device)
    return mean + torch.exp(log_std) * noise
