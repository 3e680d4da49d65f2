"""MAML for reinforcement learning (MAML-RL).

Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks".
ICML 2017. arXiv:1703.03400. Sec. 5.3, Algorithm 3, Appendix A.2.

A task's policy is the Gaussian MLP policy after one vanilla policy-gradient step on K
trajectories sampled with the meta-parameters (Alg. 3 lines 5-7; Eq. 4 with REINFORCE and a
per-task linear baseline, `policy_gradient`):  theta'_i = theta - alpha grad L_{T_i}(f_theta).
The meta-objective is the return of fresh trajectories of theta'_i (Alg. 3 lines 8-10), optimised
by TRPO (`trpo`): the surrogate -E[pi_{theta'_i(theta)} / pi_{theta'_i(theta_old)} A] averaged
over the tasks, under mean KL(pi_{theta'_i(theta_old)} || pi_{theta'_i(theta)}) <= 0.01, both
differentiated through the inner step (second order). As in the paper and its code, the inner
loss's dependence on theta through the sampling distribution is not differentiated.
Settings (Sec. 5.3, A.2): 2 x 100 ReLU, alpha = 0.1, 20 trajectories per step, meta-batch 20
(2D navigation) or 40 (locomotion), 1 inner step in training; at test up to 3 steps, alpha = 0.1
then 0.05, 40 trajectories each. `objective="pretrained"` is the paper's baseline (a): one policy
trained by TRPO on all tasks jointly (no inner step), fine-tuned by the same evaluation; an
untrained model is baseline (b) "random". Deviations: exact Hessian-vector products instead of
finite differences (`trpo`); the evaluation tasks are the engine's fixed ones, and the paper's
"best model during training" selection is left to the engine's validation.
Presets: maml_rl-navigation, maml_rl-navigation-quick, maml_rl-cheetah-vel, maml_rl-cheetah-dir.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from metazoo.algorithms.base import AlgorithmConfig
from metazoo.errors import ConfigError
from metazoo.inner_loop import sgd_steps
from metazoo.rl.base import MetaRLAlgorithm, TaskFamily, env_spaces, register_algorithm
from metazoo.rl.policies import (
    GaussianMLPPolicy,
    gaussian_kl,
    gaussian_log_prob,
    stacked_mean_log_std,
)
from metazoo.rl.policy_gradient import (
    Episodes,
    PerTask,
    advantages,
    reinforce_losses,
    sample_episodes,
    surrogate_loss,
    vector_env,
)
from metazoo.rl.trpo import trpo_step
from metazoo.types import Params

EVAL_ENVS = 800  # sub-envs at once in evaluation (tasks in chunks): a cheetah meta-batch


@dataclass(frozen=True)
class MAMLRLConfig(AlgorithmConfig):
    hidden: tuple[int, ...] = (100, 100)  # two hidden layers of 100 ReLU units (Sec. 5.3)
    init_std: float = 1.0  # initial policy std (rllab GaussianMLPPolicy init_std, ref. code)
    inner_lr: float = 0.1  # alpha = 0.1 in training and the first test step (App. A.2)
    inner_steps: int = 1  # a single policy-gradient step in training (App. A.2)
    trajectories: int = 20  # trajectories per task per step: 20 (Sec. 5.3)
    gamma: float = 0.99  # discount (rllab BatchPolopt default in the reference code)
    normalize_advantages: bool = True  # centre/scale per task (rllab center_adv, ref. code)
    first_order: bool = False  # drop the second-order terms of the meta-gradient (Sec. 5.2)
    objective: Literal["maml", "pretrained"] = "maml"  # "pretrained": baseline (a), Sec. 5.3
    max_kl: float = 0.01  # TRPO step size (meta_step_size = 0.01, ref. code maml_trpo_*.py)
    cg_iters: int = 10  # conjugate-gradient iterations (rllab ConjugateGradientOptimizer)
    cg_damping: float = 1e-5  # damping of the Fisher-vector product (rllab reg_coeff)
    backtrack_ratio: float = 0.8  # line-search shrink factor (rllab)
    max_backtracks: int = 15  # line-search trials (rllab)
    eval_steps: int = 3  # test-time gradient steps reported: 0..3 (Fig. 4, Fig. 5)
    eval_trajectories: int = 40  # trajectories per test step: "each with 40 samples" (Sec. 5.3)
    eval_inner_lr: float | None = None  # first test step size (None: inner_lr; App. A.2)
    eval_later_lr: float = 0.05  # later test steps: alpha halved to 0.05 (App. A.2)

    def validate(self) -> None:
        """Ranges; one-line `ConfigError`s."""
        positive = {"inner_lr": self.inner_lr, "max_kl": self.max_kl,
                    "eval_later_lr": self.eval_later_lr, "init_std": self.init_std,
                    "backtrack_ratio": self.backtrack_ratio}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.eval_inner_lr is not None and not self.eval_inner_lr > 0:
            raise ConfigError(f"eval_inner_lr must be > 0, got {self.eval_inner_lr}")
        if self.backtrack_ratio >= 1:
            raise ConfigError(f"backtrack_ratio must be < 1, got {self.backtrack_ratio}")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("trajectories", "eval_trajectories", "cg_iters", "max_backtracks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 1 or self.eval_steps < 0:
            raise ConfigError(f"need inner_steps >= 1 and eval_steps >= 0, got "
                              f"{self.inner_steps} and {self.eval_steps}")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must be positive widths, got {self.hidden}")


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


@register_algorithm("maml_rl", config=MAMLRLConfig, display="MAML-RL",
                    curve="policy-gradient steps", paper="Finn, Abbeel, Levine. Model-Agnostic "
                    "Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017 (Sec. 5.3)")
class MAMLRL(MetaRLAlgorithm):
    """MAML-RL: meta-learn a Gaussian policy that one policy-gradient step adapts to a task.

    Args:
        family: the task family (its Box observation and action spaces size the policy).
        config: see `MAMLRLConfig`.
    """

    def __init__(self, family: TaskFamily, config: MAMLRLConfig) -> None:
        super().__init__()
        config.validate()
        obs, act = env_spaces(family)
        if not (isinstance(obs, gym.spaces.Box) and isinstance(act, gym.spaces.Box)):
            raise ConfigError(f"maml_rl needs Box observation and action spaces (a Gaussian "
                              f"policy), got {type(obs).__name__} and {type(act).__name__}")
        self.config = config
        self.policy = GaussianMLPPolicy(int(np.prod(obs.shape)), int(np.prod(act.shape)),
                                        config.hidden, config.init_std)

    def adapt(self, params: Params, batch: PerTask, lr: float, differentiable: bool) -> Params:
        """One REINFORCE step of every task at once (Alg. 3, line 7): `params` stacked `[B, ...]`
        (one set per task; the sum of the task losses has each task's gradient in its row)."""
        def loss(p: Params) -> Tensor:
            return reinforce_losses(self.policy, p, batch).sum()

        return sgd_steps(loss, params, steps=1, lr=lr,
                         first_order=not differentiable or self.config.first_order)

    def _sample(self, params: Params, env: gym.vector.VectorEnv, n: int,
                rng: np.random.Generator) -> tuple[Episodes, PerTask]:
        """Trajectories of the stacked `params` and their per-task view with advantages."""
        detached = {k: v.detach() for k, v in params.items()}
        eps = sample_episodes(self.policy, detached, env, n, _seed(rng), stacked=True)
        adv = advantages(eps, self.config.gamma, self.config.normalize_advantages)
        return eps, PerTask.of(eps, adv)

    def meta_update(self, family: TaskFamily, tasks: Sequence[Any],
                    rng: np.random.Generator) -> dict[str, float]:
        """Alg. 3 for one meta-batch: inner steps on fresh trajectories, then one TRPO step."""
        cfg, n, b = self.config, self.config.trajectories, len(tasks)
        steps = 0 if cfg.objective == "pretrained" else cfg.inner_steps
        env, owned = vector_env(family, tasks, n)
        theta = {k: v.detach() for k, v in self.policy.named_parameters()}
        adapted, inner, before = _expand(theta, b), [], None
        for _ in range(steps):  # trajectories of theta (then of theta'), and the adapted params
            eps, batch = self._sample(adapted, env, n, rng)
            before = eps.returns() if before is None else before
            inner.append(batch)
            adapted = self.adapt(adapted, batch, cfg.inner_lr, False)
        valid_eps, valid = self._sample(adapted, env, n, rng)
        if owned:
            env.close()
        with torch.no_grad():  # the old post-update policies, fixed during the TRPO step
            mean0, log_std0 = stacked_mean_log_std(self.policy, adapted, valid.observations)
            log_std0 = log_std0.unsqueeze(1)  # [B, 1, A]
            logp0 = gaussian_log_prob(mean0, log_std0, valid.actions)  # [B, N]

        def surrogate(params: Params, differentiable: bool) -> tuple[Tensor, Tensor]:
            with torch.set_grad_enabled(differentiable):
                p = _expand(params, b)
                for batch in inner:
                    p = self.adapt(p, batch, cfg.inner_lr, differentiable)
                mean, log_std = stacked_mean_log_std(self.policy, p, valid.observations)
                log_std = log_std.unsqueeze(1)
                logp = gaussian_log_prob(mean, log_std, valid.actions)
                loss = surrogate_loss(logp, logp0, valid.advantages, valid.mask)
                kl = gaussian_kl(mean0, log_std0, mean, log_std)  # [B, N]
                kl = ((kl * valid.mask).sum(-1) / valid.mask.sum(-1)).mean()
            return loss, kl

        new, stats = trpo_step(theta, surrogate, max_kl=cfg.max_kl, cg_iters=cfg.cg_iters,
                               damping=cfg.cg_damping, backtrack_ratio=cfg.backtrack_ratio,
                               max_backtracks=cfg.max_backtracks)
        with torch.no_grad():
            for k, v in self.policy.named_parameters():
                v.copy_(new[k])
        before = valid_eps.returns() if before is None else before
        return {"return_before": float(before.mean()),
                "return_after": float(valid_eps.returns().mean()), **stats}

    def evaluate(self, family: TaskFamily, tasks: Sequence[Any],
                 rng: np.random.Generator) -> dict[str, list[float]]:
        """`return_after_k` per task, k = 0..eval_steps: the mean return of `eval_trajectories`
        fresh trajectories after k policy-gradient steps (step sizes of App. A.2)."""
        cfg, n = self.config, self.config.eval_trajectories
        out: dict[str, list[float]] = {f"return_after_{k}": [] for k in range(cfg.eval_steps + 1)}
        theta = {k: v.detach() for k, v in self.policy.named_parameters()}
        chunk = max(1, EVAL_ENVS // n)
        for start in range(0, len(tasks), chunk):
            part = list(tasks[start:start + chunk])
            env, owned = vector_env(family, part, n)
            params = _expand(theta, len(part))
            for k in range(cfg.eval_steps + 1):
                eps, batch = self._sample(params, env, n, rng)
                out[f"return_after_{k}"] += eps.returns().view(len(part), n).mean(1).tolist()
                if k < cfg.eval_steps:
                    lr = (cfg.eval_inner_lr or cfg.inner_lr) if k == 0 else cfg.eval_later_lr
                    params = {name: v.detach() for name, v in
                              self.adapt(params, batch, lr, False).items()}
            if owned:
                env.close()
        return out


def _expand(params: Params, b: int) -> Params:
    """`params` repeated for `b` tasks `[b, ...]` (a view: gradients sum back into them)."""
    return {k: v.expand(b, *v.shape) for k, v in params.items()}
