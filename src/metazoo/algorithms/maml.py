"""Model-Agnostic Meta-Learning (MAML) and its first-order approximation (FOMAML).

Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks".
ICML 2017. arXiv:1703.03400.

A task's predictor is the network f_theta (backbone + linear head) after a few SGD steps on the
support loss, starting from the meta-learned theta (Eq. 1, one step):
    theta'_i = theta - alpha * grad_theta L_{T_i}^{support}(f_theta)
The meta-loss is the query loss at the adapted parameters, averaged over the meta-batch
(Algorithm 2, line 10; the objective of Eq. 3 with the query set as D'_i):
    min_theta  sum_{T_i ~ p(T)} L_{T_i}^{query}(f_{theta'_i})
Second order by default: the meta-gradient flows through the inner gradients (Hessian-vector
products). `first_order=True` (FOMAML, Sec. 5.2) drops them: the meta-gradient is the query-loss
gradient at theta'_i. Cross-entropy for classification, MSE for regression (Sec. 3.2).

Deviations: batch norm uses batch statistics only, as the paper's code does ("transductive",
support and query each normalised with their own statistics); `bn_mode="non_transductive"`
normalises the query with the support's statistics instead (`metazoo.functional`).
Evaluation may use more inner steps than training (`eval_inner_steps`; the reference code tests
Omniglot with 3 steps for 5-way and 5 for 20-way, sinusoid with up to 10).
Presets: maml-omniglot-5w1s, -5w5s, -20w1s, -20w5s, fomaml-omniglot-5w1s, maml-sinusoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.algorithms.base import AlgorithmConfig, LinearHeadAlgorithm, register
from metazoo.errors import ConfigError
from metazoo.functional import call, cpu_layout, params_of
from metazoo.inner_loop import grads, sgd_steps
from metazoo.metrics import accuracy
from metazoo.tasks import TaskBatch
from metazoo.types import Params, Predictor

BNMode = Literal["transductive", "non_transductive"]
STRATEGIES = ("loop", "threads", "vmap", "first_step")  # how meta_loss maps tasks; all tested equal


@dataclass(frozen=True)
class MAMLConfig(AlgorithmConfig):
    inner_lr: float = 0.4  # alpha of Eq. 1; 0.4 for 5-way Omniglot (Sec. 5.2), 0.01 sinusoid
    inner_steps: int = 1  # SGD steps while meta-training; 1 for 5-way Omniglot (Sec. 5.2)
    eval_inner_steps: int | None = None  # steps at evaluation; None = inner_steps
    first_order: bool = False  # FOMAML (Sec. 5.2): ignore second derivatives
    bn_mode: BNMode = "transductive"  # statistics of each batch, as the paper's code

    def validate(self) -> None:
        if self.inner_lr <= 0:
            raise ConfigError(f"maml inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 1 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 1):
            raise ConfigError("maml inner_steps and eval_inner_steps must be >= 1, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")
        if self.bn_mode not in ("transductive", "non_transductive"):
            raise ConfigError(f"maml bn_mode must be 'transductive' or 'non_transductive', "
                              f"got '{self.bn_mode}'")


def _loss(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy for labels `[M]`, MSE for targets `[M, d_out]`."""
    return F.mse_loss(out, y) if y.is_floating_point() else F.cross_entropy(out, y)


def _query_loss(out: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss and metrics of `Algorithm.task_loss`, for the strategies that bypass it."""
    loss = _loss(out, y)
    if y.is_floating_point():
        return loss, {"mse": loss.detach()}
    return loss, {"acc": accuracy(out.detach(), y)}


@register("fomaml", display="FOMAML", family="gradient", config=MAMLConfig,
          paper="Finn, Abbeel, Levine. Model-Agnostic Meta-Learning. ICML 2017 (first order)",
          tasks={"classification", "regression"}, defaults={"first_order": True})
@register("maml", display="MAML", family="gradient", config=MAMLConfig,
          paper="Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep "
                "Networks. ICML 2017", tasks={"classification", "regression"})
class MAML(LinearHeadAlgorithm):
    """MAML: meta-learn the initialisation that SGD on a support set adapts best."""

    config: MAMLConfig
    fixed_ways = True
    adapts_with_gradients = True
    threads_by_default = True  # 1.08-1.68x the loop on 2 cores; Meta-SGD, ANIL, MAML++ inherit it
                               # (1.22-1.67x; docs/benchmarks.md, benchmarks/task_threads.py)

    def _steps(self) -> int:
        cfg = self.config
        return cfg.inner_steps if self.training else (cfg.eval_inner_steps or cfg.inner_steps)

    def _adapted(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int) -> Params:
        """`steps` SGD steps of Eq. 1 on the support loss from `params`."""
        # evaluation needs no meta-gradient: skip the second-order graph there
        first_order = self.config.first_order or not (self.training and torch.is_grad_enabled())
        # batch norm's double backward is ~2x slower channels-last: second order runs NCHW
        layout = torch.channels_last if first_order else torch.contiguous_format
        with cpu_layout(layout):
            return sgd_steps(lambda p: _loss(call(self, p, support_x), support_y), params,
                             steps=steps, lr=self.config.inner_lr, first_order=first_order)

    def _predictor(self, params: Params, support_x: Tensor) -> Predictor:
        if self.config.bn_mode == "transductive":
            return lambda query_x: call(self, params, query_x)
        n = support_x.shape[0]
        return lambda query_x: call(self, params, torch.cat([support_x, query_x]),
                                    stats_rows=n)[n:]  # [N*Q, ways]

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        params = self._adapted(params_of(self), support_x, support_y, self._steps())
        if not torch.is_grad_enabled():  # evaluation: keep no graph alive in the predictor
            params = {k: v.detach() for k, v in params.items()}
        return self._predictor(params, support_x)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean query loss after adaptation (Algorithm 2, line 10), run by `strategy`.

        "auto" is the fastest strategy measured (`benchmarks/maml_vs_peers.py`): for conv
        backbones on CPU "threads" (the task loop split over the intra-op threads, see
        `metazoo.task_threads`), or "loop" with one thread; "vmap" otherwise. "first_step"
        batches the first inner step of all tasks into one vmapped call (they all start from
        theta), then loops.
        """
        if self.resolved_strategy() != "first_step" or len(batch) == 1:
            return super().meta_loss(batch)
        self.check_ways(batch.ways)
        params, cfg = params_of(self), self.config
        first_order = cfg.first_order or not torch.is_grad_enabled()

        def first_grad(sx: Tensor, sy: Tensor) -> Params:
            return grads(lambda p: _loss(call(self, p, sx), sy), params, first_order)

        g = torch.vmap(first_grad)(batch.support_x, batch.support_y)  # {name: [B, *shape]}
        outs = []
        for i in range(len(batch)):
            p = {k: v - cfg.inner_lr * g[k][i] for k, v in params.items()}  # Eq. 1, step 1
            p = self._adapted(p, batch.support_x[i], batch.support_y[i], self._steps() - 1)
            out = self._predictor(p, batch.support_x[i])(batch.query_x[i])
            outs.append(_query_loss(out, batch.query_y[i]))
        losses = torch.stack([o[0] for o in outs])
        return losses.mean(), {k: torch.stack([o[1][k] for o in outs]).mean() for k in outs[0][1]}

    def meta_backward(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Task by task (one task's graph alive at a time) unless the strategy batches tasks."""
        if self.resolved_strategy() in ("loop", "threads") or len(batch) == 1:
            return self._backward_per_task(batch)
        return self._backward_whole(batch)
