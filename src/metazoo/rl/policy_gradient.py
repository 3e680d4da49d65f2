"""Trajectories and vanilla policy gradient (REINFORCE; Williams 1992), the inner loop of MAML-RL
(Finn, Abbeel, Levine 2017, Sec. 5.3 and Eq. 4: L(f_phi) = -E[sum_t R(x_t, a_t)]).

`sample_episodes` runs one trajectory in every sub-environment of a Gymnasium vector environment
(`trajectories` per task, task-major), with one policy or with one parameter set per task. The
REINFORCE loss is the likelihood-ratio estimator of -grad J (Williams 1992; Sutton et al. 2000):
-(1/|valid steps|) sum_{i,t} log pi(a_t^i | s_t^i) A_t^i, the advantages A_t = G_t - b(s_t)
from the discounted returns-to-go G_t and the per-task linear baseline (`linear_baseline`), then
centred and scaled per task (rllab's `center_adv`, on in the reference code cbfinn/maml_rl).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from metazoo.errors import ConfigError
from metazoo.rl import linear_baseline
from metazoo.rl.base import TaskFamily
from metazoo.rl.policies import (
    gaussian_log_prob,
    mean_log_std,
    sample_actions,
    stacked_mean_log_std,
)
from metazoo.types import Params

MAX_STEPS = 100_000  # a vector env whose episodes never end is an error, not a hang


@dataclass(frozen=True)
class Episodes:
    """`M = tasks * per_task` trajectories side by side, task-major, padded to the longest.

    observations `[T, M, D]`, actions `[T, M, A]` (as sampled, before any clipping by the env),
    rewards `[T, M]` (0 after a trajectory's end), mask `[T, M]` (1 on the steps that exist).
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    per_task: int

    @property
    def num_tasks(self) -> int:
        return self.mask.shape[1] // self.per_task

    def task(self, i: int) -> Episodes:
        """The trajectories of task `i`."""
        cols = slice(i * self.per_task, (i + 1) * self.per_task)
        return Episodes(self.observations[:, cols], self.actions[:, cols], self.rewards[:, cols],
                        self.mask[:, cols], self.per_task)

    def returns(self) -> Tensor:
        """Undiscounted return of every trajectory `[M]` (what the papers report)."""
        return self.rewards.sum(0)


def vector_env(family: TaskFamily, tasks: Sequence[Any], per_task: int
               ) -> tuple[gym.vector.VectorEnv, bool]:
    """A vector env with `per_task` sub-envs per task (task-major), and whether the caller
    owns it (must close it). A family with `make_vector_env(tasks)` gives its own (batched
    dynamics or pooled simulators, kept by the family); else Gymnasium's `SyncVectorEnv`."""
    repeated = [t for t in tasks for _ in range(per_task)]
    make_vector = getattr(family, "make_vector_env", None)
    if make_vector is not None:
        return make_vector(repeated), False
    return gym.vector.SyncVectorEnv([partial(family.make_env, t) for t in repeated]), True


def sample_episodes(policy: nn.Module, params: Params, env: gym.vector.VectorEnv,
                    per_task: int, seed: int, *, stacked: bool = False) -> Episodes:
    """One trajectory per sub-env of `env`, actions drawn from the policy with `params`: one
    set for all, or with `stacked` one per task (`[B, ...]`, B = num_envs / per_task).

    Every sub-env runs until it terminates or is truncated; later steps of a finished one
    (Gymnasium's autoreset) are masked out. `seed` seeds the env's reset and the action noise.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(iter(params.values())).device  # trajectories live with the policy
    obs, _ = env.reset(seed=seed)
    alive = np.ones(env.num_envs, dtype=bool)
    rows: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    while alive.any():
        if len(rows) >= MAX_STEPS:
            raise ConfigError(f"episodes did not end within {MAX_STEPS} steps: give the task "
                              "family's environments a time limit")
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)  # [M, D]
        with torch.no_grad():
            if not stacked:
                mean, log_std = mean_log_std(policy, params, o)
            else:
                b = o.shape[0] // per_task
                mean, log_std = stacked_mean_log_std(policy, params, o.view(b, per_task, -1))
                mean = mean.reshape(o.shape[0], -1)  # [M, A]
                log_std = log_std.repeat_interleave(per_task, 0)  # [M, A]
            a = sample_actions(mean, log_std, gen)
        obs, r, terminated, truncated, _ = env.step(a.cpu().numpy())
        live = torch.as_tensor(alive, dtype=torch.float32, device=device)
        reward = torch.as_tensor(np.asarray(r), dtype=torch.float32, device=device)
        rows.append((o, a, reward * live, live))
        alive &= ~(np.asarray(terminated) | np.asarray(truncated))
    o_s, a_s, r_s, m_s = (torch.stack(x) for x in zip(*rows, strict=True))
    return Episodes(o_s, a_s, r_s, m_s, per_task)


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """G_t = sum_{l >= 0} gamma^l r_{t+l} along axis 0 of `rewards` `[T, M]` (padding is 0)."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def advantages(episodes: Episodes, gamma: float, normalize: bool = True) -> Tensor:
    """G_t - b(s_t) `[T, M]`, the linear baseline fitted per task on that task's trajectories;
    with `normalize`, centred and scaled to unit std per task over the valid steps."""
    out = torch.zeros_like(episodes.rewards)
    for i in range(episodes.num_tasks):
        ep = episodes.task(i)
        g = discounted_returns(ep.rewards, gamma)
        w = linear_baseline.fit(ep.observations, g, ep.mask)
        adv = (g - linear_baseline.predict(w, ep.observations)) * ep.mask
        if normalize:
            n = ep.mask.sum()
            mu = adv.sum() / n
            std = (((adv - mu) * ep.mask).pow(2).sum() / n).sqrt()
            adv = (adv - mu) / (std + 1e-8) * ep.mask
        out[:, i * ep.per_task:(i + 1) * ep.per_task] = adv
    return out


@dataclass(frozen=True)
class PerTask:
    """One round of trajectories regrouped by task: `[B, N, ...]`, N = T * per_task steps."""

    observations: Tensor  # [B, N, D]
    actions: Tensor  # [B, N, A]
    advantages: Tensor  # [B, N]
    mask: Tensor  # [B, N]

    @classmethod
    def of(cls, episodes: Episodes, adv: Tensor) -> PerTask:
        """`episodes` (`[T, B * n, ...]`, task-major) and their advantages `[T, B * n]`."""
        t, b, n = episodes.mask.shape[0], episodes.num_tasks, episodes.per_task

        def group(x: Tensor) -> Tensor:  # [T, B*n, ...] -> [B, T*n, ...]
            x = x.reshape(t, b, n, *x.shape[2:]).transpose(0, 1)
            return x.reshape(b, t * n, *x.shape[3:])

        return cls(group(episodes.observations), group(episodes.actions), group(adv),
                   group(episodes.mask))


def reinforce_losses(policy: nn.Module, params: Params, batch: PerTask) -> Tensor:
    """Per task `[B]`: -(1/#valid) sum_{t,i} log pi(a_t^i | s_t^i) A_t^i, with one parameter
    set per task (`params` stacked `[B, ...]`); its gradient estimates -grad J of each task."""
    mean, log_std = stacked_mean_log_std(policy, params, batch.observations)  # [B,N,A], [B,A]
    logp = gaussian_log_prob(mean, log_std.unsqueeze(1), batch.actions)  # [B, N]
    return -(logp * batch.advantages * batch.mask).sum(-1) / batch.mask.sum(-1)


def surrogate_loss(logp_new: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """TRPO's importance-sampled surrogate -E[ratio * A] (Schulman et al. 2015, Eq. 14), ratio =
    pi_new / pi_old, a mean over the valid steps of each row of the last axis, then over rows;
    its gradient at pi_new = pi_old is REINFORCE's."""
    ratio = torch.exp(logp_new - logp_old)
    return (-(ratio * adv * mask).sum(-1) / mask.sum(-1)).mean()
