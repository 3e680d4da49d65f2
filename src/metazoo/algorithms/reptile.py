"""Reptile: move the initialisation toward the weights that training on each task reaches.

Nichol, Achiam, Schulman. "On First-Order Meta-Learning Algorithms". arXiv:1803.02999, 2018.

A task's predictor is the network (backbone + linear head) after k steps of an ordinary optimiser
on mini-batches of its support set, W = U^k_tau(phi), from the meta-learned phi: Adam with
beta1 = 0 as in the experiments (Sec. 6.1), or plain SGD. The outer update is Algorithm 2
(batched) over the n tasks of a meta-batch, and Algorithm 1 (serial) when meta_batch_size = 1:
    phi <- phi + epsilon * (1/n) sum_i (W_i - phi)
`meta_loss` is a surrogate whose VALUE is the mean query loss after adaptation (logged only) and
whose GRADIENT is phi - mean_i(W_i), the "gradient" of Sec. 3. So the trainer with
`train.optimizer: sgd`, `train.outer_lr: epsilon`, `train.schedule: linear` takes exactly the
paper's meta-step, annealed linearly to 0 (App. A).
Inner mini-batches are the reference code's `_mini_batches`, shuffled with (`shuffle_seed`,
meta-iteration) in training and `shuffle_seed` alone in `adapt`. Adam's state carries over
from task to task in training, as in the reference code; `adapt` starts from it and leaves it
unchanged; `end_step` stores it (design note 13); `inner_adam_state: reset` restarts it.
Deviations: Adam as PyTorch computes it (epsilon added to the bias-corrected sqrt(v)). Test-time
batch norm: `bn_mode` "transductive" and "per_query" are the reference code's two evaluations
(Table 2's "Reptile + Transduction" and "Reptile"), "non_transductive" the project's usual one.
Details: docs/algorithms.md.
Presets: reptile-omniglot-5w1s, -5w5s, -20w1s, -20w5s, reptile-sinusoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from metazoo.adaptation import metrics_of, predictor, supervised_loss
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import LinearHeadAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import call, params_of
from metazoo.functional_adam import AdamState, adam_step
from metazoo.inner_loop import grads, mini_batch_orders
from metazoo.tasks import TaskBatch
from metazoo.types import Params, Predictor

BNMode = Literal["transductive", "non_transductive", "per_query"]


@dataclass(frozen=True)
class ReptileConfig(AlgorithmConfig):
    inner_optimizer: Literal["adam", "sgd"] = "adam"  # U of Alg. 1: Adam in Sec. 6.1
    inner_lr: float = 0.001  # Adam step size: 0.001 5-way, 0.0005 20-way Omniglot (App. A)
    inner_steps: int = 5  # k, inner iterations in training: 5 (20-way: 10) (App. A)
    inner_batch_size: int = 10  # support examples per inner step: 10 (20-way: 20) (App. A)
    eval_inner_steps: int = 50  # inner iterations at evaluation: 50 (App. A)
    eval_inner_batch_size: int = 5  # inner batch at evaluation: 5 (20-way: 10) (App. A)
    adam_beta1: float = 0.0  # no momentum: it hurt in every experiment (Sec. 6.1)
    adam_beta2: float = 0.999  # Adam's default
    shuffle_seed: int = 0  # seeds the order of the inner mini-batches
    inner_adam_state: Literal["carry", "reset"] = "carry"  # carry: the reference code
    # transductive: statistics of the query batch (the reference's "+ Transduction" rows);
    # per_query: of the support plus that one query (the reference's other rows);
    # non_transductive: of the support alone (as MAML's option here)
    bn_mode: BNMode = "transductive"

    def validate(self) -> None:
        if not self.inner_lr > 0:
            raise ConfigError(f"reptile inner_lr must be > 0, got {self.inner_lr}")
        for name in ("inner_steps", "inner_batch_size", "eval_inner_steps",
                     "eval_inner_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"reptile {name} must be >= 1, got {getattr(self, name)}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ConfigError("reptile adam_beta1 and adam_beta2 must be in [0, 1), got "
                              f"{self.adam_beta1} and {self.adam_beta2}")


@register("reptile", display="Reptile", family="gradient", config=ReptileConfig,
          paper="Nichol, Achiam, Schulman. On First-Order Meta-Learning Algorithms. "
                "arXiv:1803.02999, 2018", tasks={"classification", "regression"})
class Reptile(LinearHeadAlgorithm):
    """Reptile: pull the initialisation toward each task's trained weights (Alg. 1 and 2)."""

    config: ReptileConfig
    # Tasks run as a loop, in order: each starts from the Adam state the one before left. (Also,
    # a conv bias right before batch norm does not change the output, so its support gradient
    # is rounding noise that Adam scales up to steps of about inner_lr; vmap or threads, which
    # round differently, would give different noise. The loop is the one reproducible order.)
    vmappable = False

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        self.step = 0  # meta-iteration, set by begin_step: seeds the inner shuffles
        # Adam's state carried from task to task: buffers, so checkpoints hold it
        for k, p in params_of(self).items():
            self.register_buffer(_moment_name("m", k), torch.zeros_like(p))
            self.register_buffer(_moment_name("v", k), torch.zeros_like(p))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        self._next_adam_state: AdamState | None = None  # set by meta_loss, stored by end_step

    def _adam_state(self) -> AdamState:
        """The carried state, or a fresh one with `inner_adam_state: reset`. The carried one
        holds the buffers themselves: `adam_step` makes new tensors and never writes to them."""
        names = params_of(self)
        if self.config.inner_adam_state == "reset":
            zeros = {k: torch.zeros_like(p.detach()) for k, p in names.items()}
            return AdamState(zeros, dict(zeros), 0)
        buffers = dict(self.named_buffers())
        return AdamState({k: buffers[_moment_name("m", k)] for k in names},
                         {k: buffers[_moment_name("v", k)] for k in names},
                         int(buffers["adam_steps"]))

    @torch.no_grad()
    def end_step(self, batch: TaskBatch) -> None:
        """Store the Adam state the last training `meta_loss` left (see `Algorithm.end_step`)."""
        state, self._next_adam_state = self._next_adam_state, None
        if state is None:
            return
        buffers = dict(self.named_buffers())
        for k in state.m:
            buffers[_moment_name("m", k)].copy_(state.m[k])
            buffers[_moment_name("v", k)].copy_(state.v[k])
        buffers["adam_steps"].fill_(state.t)

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def _orders(self, n: int, tasks: int) -> Tensor:
        """Inner mini-batches `[tasks, steps, batch]` for the current mode (train or eval)."""
        cfg = self.config
        if self.training:
            return mini_batch_orders(n, cfg.inner_steps, cfg.inner_batch_size, tasks,
                                     f"reptile/{cfg.shuffle_seed}/train/{self.step}")
        return mini_batch_orders(n, cfg.eval_inner_steps, cfg.eval_inner_batch_size, tasks,
                                 f"reptile/{cfg.shuffle_seed}/adapt")

    def _adapted(self, support_x: Tensor, support_y: Tensor, order: Tensor, state: AdamState
                 ) -> tuple[Params, AdamState]:
        """W = U^k(phi): one inner step per row of `order` (`[k, batch]`), first order, no
        graph, from Adam's `state`; returns W and the state after the k steps."""
        cfg = self.config
        params = {k: v.detach() for k, v in params_of(self).items()}
        m, v2, t0 = state.m, state.v, state.t
        for t in range(order.shape[0]):
            x, y = support_x[order[t]], support_y[order[t]]  # [batch, *x], [batch]
            g = grads(partial(self._batch_loss, x=x, y=y), params, True)
            if cfg.inner_optimizer == "sgd":
                params = {k: p - cfg.inner_lr * g[k] for k, p in params.items()}
            else:
                params, m, v2 = adam_step(params, g, m, v2, t0 + t + 1, cfg.inner_lr,
                                          cfg.adam_beta1, cfg.adam_beta2)
        steps = order.shape[0] if cfg.inner_optimizer == "adam" else 0
        return params, AdamState(m, v2, t0 + steps)

    def _batch_loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        return supervised_loss(call(self, params, x), y)

    def _predictor(self, params: Params, support_x: Tensor) -> Predictor:
        if self.config.bn_mode != "per_query":
            return predictor(self, params, support_x, self.config.bn_mode)
        n = support_x.shape[0]  # one pass per query: support + that query
        return lambda query_x: torch.stack([
            call(self, params, torch.cat([support_x, q[None]]))[n] for q in query_x])

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        order = self._orders(support_x.shape[0], 1)[0].to(support_x.device)  # [k, batch]
        adapted, _ = self._adapted(support_x, support_y, order, self._adam_state())
        return self._predictor(adapted, support_x)

    def _task(self, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, order: Tensor,
              state: AdamState) -> tuple[Params, Tensor, dict[str, Tensor], AdamState]:
        """One task: adapted weights W_i, its query loss and metric at W_i, and Adam's state."""
        w, state = self._adapted(sx, sy, order, state)
        with torch.no_grad():  # the value is logged only: no graph
            out = self._predictor(w, sx)(qx)
            loss = supervised_loss(out, qy)
        return w, loss, metrics_of(loss, out, qy), state

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean query loss after adaptation, with gradient phi - mean_i(W_i) (Alg. 2)."""
        self.check_ways(batch.ways)
        tasks = len(batch)
        # task i's orders are row first + i however the meta-batch is split (engine.distributed)
        orders = self._orders(batch.support_x.shape[1], batch.first + tasks)[batch.first:]
        orders = orders.to(batch.support_x.device)
        args = (batch.support_x, batch.support_y, batch.query_x, batch.query_y, orders)
        state, outs = self._adam_state(), []
        carry = self.config.inner_adam_state == "carry"
        for i in range(tasks):  # in order: each task starts from the Adam state the last left
            sx, sy, qx, qy, order = (a[i] for a in args)
            outs.append(self._task(sx, sy, qx, qy, order, state=state))
            state = outs[-1][3] if carry else self._adam_state()
        # kept by end_step, after the meta-update: meta_loss itself stores nothing, and a
        # validation pass (not training) leaves the training state as it was
        self._next_adam_state = state if self.training else None
        w = {k: torch.stack([o[0][k] for o in outs]) for k in outs[0][0]}  # [B, *shape]
        losses = torch.stack([o[1] for o in outs])  # [B]
        metrics = {k: torch.stack([o[2][k] for o in outs]) for k in outs[0][2]}
        theta = params_of(self)
        # d/d phi of sum(phi * sg(phi - mean W)) is phi - mean_i W_i: SGD with lr epsilon is Alg. 2
        surrogate = torch.stack([(p * (p.detach() - w[k].mean(0))).sum()
                                 for k, p in theta.items()]).sum()
        loss = losses.mean() + (surrogate - surrogate.detach())  # value: the mean query loss
        return loss, {k: v.mean() for k, v in metrics.items()}


def _moment_name(moment: str, param: str) -> str:
    """Buffer name of Adam's `moment` ("m" or "v") for parameter `param` (no dots allowed)."""
    return f"adam_{moment}__{param.replace('.', '__')}"
