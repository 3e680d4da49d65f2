"""Trials of a recurrent policy on many tasks at once (RL²'s unit of experience).

A trial is `episodes` consecutive episodes on ONE task; the policy's hidden state starts at zero
with the trial and is carried across its episode boundaries, never reset inside it (Duan et al.
2016, Sec. 2.2, Fig. 1). The environments of the tasks step together through Gymnasium's
`SyncVectorEnv` with same-step autoreset: an episode that ends hands back the next episode's
first observation in the same step, and the `done` flag goes to the policy as an input. An
environment that has finished its trial keeps stepping (its steps are masked out), so episodes
of different lengths are allowed. Each step's `info` may carry `regret` (bandits), summed per
trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import Tensor

from metazoo.rl.base import TaskFamily


class RecurrentPolicy(Protocol):
    """What `run_trials` needs of a policy: inputs from raw steps, one recurrent step."""

    def initial_state(self, batch: int) -> Tensor: ...

    def inputs(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor,
               prev_done: Tensor) -> Tensor: ...

    def step(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


@dataclass
class Trials:
    """Steps of `B` trials, time-major (`[T, B]`); `mask` is 0 after a trial has ended."""

    inputs: Tensor  # [T, B, D] the policy's inputs phi(s_t, a_{t-1}, r_{t-1}, d_{t-1})
    actions: Tensor  # [T, B]
    log_probs: Tensor  # [T, B] log pi(a_t | history) when the action was drawn
    values: Tensor  # [T, B] the value head's estimate at step t
    rewards: Tensor  # [T, B]
    dones: Tensor  # [T, B] 1 where an episode ended at step t
    mask: Tensor  # [T, B] 1 while the trial lasts
    regret: Tensor  # [T, B] max_a E r - E r(a_t) where the environment reports it, else 0
    episode: Tensor  # [T, B] index of the episode of the trial that step t belongs to
    reports_regret: bool = False  # whether the environments put `regret` in their info

    def per_episode(self, values: Tensor, episodes: int) -> Tensor:
        """Sums of `values` [T, B] over each episode of each trial: `[B, episodes]`."""
        out = torch.zeros(values.shape[1], episodes, dtype=values.dtype)
        index = self.episode.clamp(max=episodes - 1).T  # [B, T]
        return out.scatter_add_(1, index, (values * self.mask).T)


def vector_env(family: TaskFamily, tasks: Sequence[Any]) -> SyncVectorEnv:
    """One environment per task, stepping together, resetting on the step an episode ends."""
    return SyncVectorEnv([partial(family.make_env, t) for t in tasks],
                         autoreset_mode=AutoresetMode.SAME_STEP)


def _as_tensor(space: gym.Space, obs: Any) -> Tensor:
    if isinstance(space, gym.spaces.Discrete):
        return torch.as_tensor(np.asarray(obs), dtype=torch.long) - int(space.start)
    return torch.as_tensor(np.asarray(obs, dtype=np.float32)).flatten(1)


def _info_value(info: dict[str, Any], key: str, b: int) -> tuple[np.ndarray, bool]:
    """`key` of each environment's step info (`[b]`, 0 where absent): of the ending step, which
    same-step autoreset moves to `final_info`, else of the step itself."""
    out, found = np.zeros(b), False
    for part in (info, info.get("final_info", {})):
        if key in part:
            has = part[f"_{key}"]
            out = np.where(has, part[key], out)
            found = True
    return out, found


@torch.no_grad()
def run_trials(policy: RecurrentPolicy, family: TaskFamily, tasks: Sequence[Any],
               episodes: int, generator: torch.Generator, env_seed: int) -> Trials:
    """One trial of `episodes` episodes on each of `tasks` (actions drawn with `generator`,
    the environments seeded from `env_seed`); the hidden state starts at zero for each trial."""
    envs = vector_env(family, tasks)
    space = envs.single_observation_space
    b = len(tasks)
    obs, _ = envs.reset(seed=[env_seed + i for i in range(b)])
    h = policy.initial_state(b)
    prev_a = torch.full((b,), -1, dtype=torch.long)  # no action yet: an all-zero one-hot
    prev_r, prev_d = torch.zeros(b), torch.ones(b)  # the trial starts as after an episode end
    finished = torch.zeros(b, dtype=torch.long)
    steps: dict[str, list[Tensor]] = {k: [] for k in (
        "inputs", "actions", "log_probs", "values", "rewards", "dones", "mask", "regret",
        "episode")}
    reports_regret = False
    while bool((finished < episodes).any()):
        x = policy.inputs(_as_tensor(space, obs), prev_a, prev_r, prev_d)
        logits, value, h = policy.step(x, h)
        logits, value, x = logits.cpu(), value.cpu(), x.cpu()
        action = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        obs, reward, term, trunc, info = envs.step(action.numpy())
        done = torch.as_tensor(np.logical_or(term, trunc), dtype=torch.float32)
        regret, reported = _info_value(info, "regret", b)
        reports_regret = reports_regret or reported
        for key, v in (("inputs", x), ("actions", action), ("values", value),
                       ("log_probs", torch.log_softmax(logits, -1).gather(
                           1, action[:, None])[:, 0]),
                       ("rewards", torch.as_tensor(reward, dtype=torch.float32)),
                       ("dones", done), ("mask", (finished < episodes).float()),
                       ("regret", torch.as_tensor(regret, dtype=torch.float32)),
                       ("episode", finished.clone())):
            steps[key].append(v)
        finished += done.long()
        prev_a, prev_r, prev_d = action, steps["rewards"][-1], done
    envs.close()
    return Trials(**{k: torch.stack(v) for k, v in steps.items()}, reports_regret=reports_regret)
