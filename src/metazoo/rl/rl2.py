"""RL²: a recurrent policy whose hidden state is the fast learner, trained by slow RL.

Duan, Schulman, Chen, Bartlett, Sutskever, Abbeel. "RL²: Fast Reinforcement Learning via Slow
Reinforcement Learning". arXiv:1611.02779, 2016. A GRU reads, at each step of a trial (n
episodes on one MDP drawn from the family), phi(s_t, a_{t-1}, r_{t-1}, d_{t-1}): the observation
(one-hot where discrete), the previous action one-hot, reward and episode-end flag (Sec. 2.2);
its state persists across the episodes of a trial and is reset between trials (Fig. 1), and the
slow RL objective is the expected total discounted reward of the whole trial (Sec. 2.2).
Settings (Sec. 4, appendix): GRU of 256 units, discount 0.99, GAE lambda 0.3 (as reported in a
replication of the paper; the authors' released bandit launcher used 1.0), 250,000 steps a batch
(`train.meta_batch_size` trials of n episodes; presets rl2-*).
Deviations: PPO's clipped objective (`metazoo.rl.ppo`; the issue allows PPO, and the authors'
released bandit code also trained with a clipped-ratio PPO-SGD) instead of TRPO: it needs no
Fisher-vector products through a recurrent net and is one Adam loop; the value function is a
linear head on the policy's GRU (the paper: a separate recurrent baseline); phi is the plain
concatenation of the inputs. Discrete action spaces only (bandits, tabular MDPs).
evaluate: per-task `return` (the trial's total reward, Table 1's and 2's quantity), `regret`
where the environment reports it (bandits), and `<metric>_after_<i>` after i episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import AlgorithmConfig
from metazoo.errors import ConfigError
from metazoo.rl import ppo
from metazoo.rl.base import (
    MetaRLAlgorithm,
    TaskFamily,
    curve_points,
    env_spaces,
    register_algorithm,
)
from metazoo.rl.trials import Trials, run_trials


@dataclass(frozen=True)
class RL2Config(AlgorithmConfig):
    hidden: int = 256  # GRU units (Sec. 4)
    discount: float = 0.99  # gamma over the whole trial (appendix)
    gae_lambda: float = 0.3  # GAE lambda (appendix, as a replication reports it)
    lr: float = 3e-4  # Adam learning rate of the PPO epochs (Schulman et al. 2017's default)
    clip: float = 0.2  # PPO ratio clip epsilon (Schulman et al. 2017, Eq. 7)
    epochs: int = 5  # passes over a batch of trials per meta-iteration
    minibatches: int = 4  # splits of a batch's trials per pass (each a whole trial, BPTT)
    value_coef: float = 0.5  # weight of the value loss (Schulman et al. 2017, Eq. 9)
    entropy_coef: float = 0.0  # entropy bonus (the authors' bandit runs: 0)
    max_grad_norm: float | None = 1.0  # clip the gradient's global norm per minibatch
    trial_episodes: int | None = None  # n, episodes a trial (None: the family's)

    def validate(self) -> None:
        if min(self.hidden, self.epochs, self.minibatches) < 1:
            raise ConfigError("hidden, epochs and minibatches must be >= 1; got "
                              f"{self.hidden}, {self.epochs}, {self.minibatches}")
        if not (0 < self.discount <= 1 and 0 <= self.gae_lambda <= 1):
            raise ConfigError(f"discount must be in (0, 1] and gae_lambda in [0, 1]; got "
                              f"{self.discount}, {self.gae_lambda}")
        if self.lr <= 0 or self.clip <= 0 or self.value_coef < 0 or self.entropy_coef < 0:
            raise ConfigError("lr and clip must be > 0, value_coef and entropy_coef >= 0")
        if (self.max_grad_norm is not None and self.max_grad_norm <= 0) or \
                (self.trial_episodes is not None and self.trial_episodes < 1):
            raise ConfigError("max_grad_norm must be > 0 and trial_episodes >= 1 (or null)")


class GRUPolicy(nn.Module):
    """GRU over phi(s, a_prev, r_prev, d_prev) -> action logits and a value."""

    def __init__(self, obs_space: gym.Space, actions: int, hidden: int) -> None:
        super().__init__()
        self.discrete_obs = isinstance(obs_space, gym.spaces.Discrete)
        if isinstance(obs_space, gym.spaces.Discrete):
            self.obs_dim = int(obs_space.n)
        else:
            self.obs_dim = int(np.prod(obs_space.shape or (1,)))
        self.actions = actions
        self.gru = nn.GRU(self.obs_dim + actions + 2, hidden)
        self.logits = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(1, batch, self.gru.hidden_size, device=self.logits.weight.device)

    def inputs(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor,
               prev_done: Tensor) -> Tensor:
        """`[B, D]` from a step's raw values (`prev_action` -1: none yet, a zero one-hot)."""
        o = F.one_hot(obs, self.obs_dim).float() if self.discrete_obs else obs.float()
        a = F.one_hot(prev_action.clamp(min=0), self.actions).float()
        a = a * (prev_action >= 0).float()[:, None]
        x = torch.cat([o, a, prev_reward[:, None].float(), prev_done[:, None].float()], 1)
        return x.to(self.logits.weight.device)

    def step(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step for `B` trials: `x` [B, D], `h` [1, B, H] -> logits, values, next `h`."""
        out, h = self.gru(x[None], h)
        return self.logits(out[0]), self.value(out[0])[:, 0], h

    def sequence(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Whole trials from a zero state: `x` [T, B, D] -> logits [T, B, A], values [T, B]."""
        out, _ = self.gru(x, self.initial_state(x.shape[1]))
        return self.logits(out), self.value(out)[..., 0]


@register_algorithm("rl2", config=RL2Config, display="RL²", curve="episodes of the trial",
                    paper="Duan et al. 2016, arXiv:1611.02779")
class RL2(MetaRLAlgorithm):
    def __init__(self, family: TaskFamily, config: RL2Config) -> None:
        super().__init__()
        obs_space, act_space = env_spaces(family)
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ConfigError(f"rl2 here takes discrete actions; family '{family.name}' has "
                              f"{type(act_space).__name__} actions")
        self.config = config
        self.episodes = config.trial_episodes or int(getattr(family, "episodes_per_trial", 0))
        if self.episodes < 1:
            raise ConfigError(f"family '{family.name}' sets no trial length: set "
                              "algorithm.trial_episodes")
        self.policy = GRUPolicy(obs_space, int(act_space.n), config.hidden)
        self.adam = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.optimizer = self.adam  # checkpointed by the engine

    def trials(self, family: TaskFamily, tasks: Sequence[Any], rng: np.random.Generator
               ) -> Trials:
        """One trial on each task, drawn with seeds from `rng`."""
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return run_trials(self.policy, family, tasks, self.episodes, g,
                          int(rng.integers(2**31 - 2**20)))

    def meta_update(self, family: TaskFamily, tasks: Sequence[Any],
                    rng: np.random.Generator) -> dict[str, float]:
        c = self.config
        data = self.trials(family, tasks, rng)
        dev = self.policy.logits.weight.device
        mask, actions, old = data.mask.to(dev), data.actions.to(dev), data.log_probs.to(dev)
        adv, returns = ppo.gae(data.rewards, data.values, data.mask, c.discount, c.gae_lambda)
        adv, returns = ppo.normalized(adv, data.mask).to(dev), returns.to(dev)
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(c.epochs):
            for idx in torch.randperm(len(tasks), generator=g).chunk(c.minibatches):
                idx = idx.to(dev)
                logits, values = self.policy.sequence(data.inputs.to(dev)[:, idx])
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(2, actions[:, idx, None])[..., 0]
                m = mask[:, idx]
                pg, info = ppo.clipped_loss(logp, old[:, idx], adv[:, idx], m, c.clip)
                n = m.sum().clamp(min=1.0)
                v_loss = (((values - returns[:, idx]) ** 2) * m).sum() / n
                entropy = (-(logp_all.exp() * logp_all).sum(-1) * m).sum() / n
                loss = pg + c.value_coef * v_loss - c.entropy_coef * entropy
                self.adam.zero_grad(set_to_none=True)
                loss.backward()
                if c.max_grad_norm:
                    nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.adam.step()
                for k, v in {"loss": loss, "policy_loss": pg, "value_loss": v_loss,
                             "entropy": entropy, **info}.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                updates += 1
        out = {k: v / updates for k, v in sums.items()}
        out["return"] = float((data.rewards * data.mask).sum(0).mean())
        if data.reports_regret:
            out["regret"] = float((data.regret * data.mask).sum(0).mean())
        return out

    @torch.no_grad()
    def evaluate(self, family: TaskFamily, tasks: Sequence[Any],
                 rng: np.random.Generator) -> dict[str, list[float]]:
        data = self.trials(family, tasks, rng)
        out: dict[str, list[float]] = {}
        metrics = {"return": data.rewards} | ({"regret": data.regret}
                                              if data.reports_regret else {})
        for name, values in metrics.items():
            cumulative = data.per_episode(values, self.episodes).cumsum(1)  # [B, n]
            out[name] = cumulative[:, -1].tolist()
            for i in curve_points(self.episodes):
                out[f"{name}_after_{i}"] = cumulative[:, i - 1].tolist()
        return out

