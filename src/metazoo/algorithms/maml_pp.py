"""MAML++: MAML with the stabilising fixes of "How to train your MAML".

Antoniou, Edwards, Storkey. "How to train your MAML". ICLR 2019. arXiv:1810.09502.

MAML (`metazoo.algorithms.maml`) with the paper's Sec. 4 changes, each switchable (all off: MAML).
1. Multi-step loss, MSL (`multi_step_loss`, Eq. 2): the meta-loss is sum_i v_i L_query(f_{theta_i})
   over the inner steps i = 1..S. As the reference code, v starts at 1/S, the non-final weights
   fall linearly by 1/S over `msl_iterations` to a floor of 0.03/S, v_S = 1 - the others; after
   `msl_iterations` only the final query loss is used.
2. Derivative-order annealing, DA (`derivative_order_annealing`): first order for the first
   `first_order_iterations` meta-iterations, then second (MSL and DA read `begin_step`'s step).
3. Per-step batch-norm running statistics, BNRS (`per_step_bn_stats`): see below.
4. Per-step batch-norm weights and biases, BNWB (`per_step_bn_weights`): set i serves step i's
   support pass and the query pass after it; meta-learned, not adapted (as the reference code).
5. Learned per-layer per-step learning rates, LSLR (`learned_step_sizes`): theta_{i+1} =
   theta_i - alpha_{i,l} * grad L_support, one alpha per parameter tensor l and step i,
   initialised to `inner_lr` and meta-learned with theta.
6. Cosine annealing of the meta-learning rate, CA (Eq. 3): the trainer's `train.schedule: cosine`.
Batch norm: batch statistics everywhere by default (`eval_bn="batch"`, as the reference code, so
BNRS changes no prediction); `eval_bn="running"` evaluates with running statistics updated by
`end_step` (momentum `bn_momentum`), one set per step with BNRS, one shared set without.
Deviations: the schedules move every meta-iteration, not once per 500-iteration epoch; conv4 is
conv-BN-ReLU-pool (reference: conv-leaky ReLU-BN-pool); evaluating with more steps than
`inner_steps` reuses the last step's learning rates and batch-norm sets.
Presets: maml_pp-omniglot-5w1s, -5w5s, -20w1s, -20w5s.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import (
    detached_unless_grad,
    first_order_now,
    inner_steps_now,
    loss_and_metrics,
    supervised_loss,
)
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import InnerLoopConfig, LinearHeadAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import SECOND_ORDER_LAYOUT, BatchNorm, call, params_of
from metazoo.inner_loop import LearningRate, sgd_steps
from metazoo.tasks import TaskBatch
from metazoo.types import Params, Predictor

# (params, x, step, stats_rows, memory_format) -> logits
Forward = Callable[[Params, Tensor, int, int | None, torch.memory_format | None], Tensor]
MSL_FLOOR = 0.03  # the reference code's floor of a non-final MSL weight, times 1/S


@dataclass(frozen=True)
class MAMLPPConfig(InnerLoopConfig):
    inner_lr: float = 0.1  # alpha, and LSLR's initial value (reference code, Omniglot)
    inner_steps: int = 5  # inner steps in training and evaluation (reference code, Omniglot)
    multi_step_loss: bool = True  # MSL (Sec. 4, Eq. 2)
    msl_iterations: int = 5000  # MSL annealing period: 10 epochs of 500 iterations (ref. code)
    derivative_order_annealing: bool = True  # DA (Sec. 4)
    first_order_iterations: int = 25000  # first order for 50 epochs of 500 iterations (Sec. 4)
    per_step_bn_weights: bool = True  # BNWB (Sec. 4)
    per_step_bn_stats: bool = True  # BNRS (Sec. 4): one running-statistics set per step
    learned_step_sizes: bool = True  # LSLR (Sec. 4)
    eval_bn: Literal["batch", "running"] = "batch"  # evaluation statistics; "batch" = ref. code
    bn_momentum: float = 0.1  # running-statistics momentum (F.batch_norm's, the reference's)

    def validate(self) -> None:
        super().validate()
        if self.msl_iterations < 1 or self.first_order_iterations < 0:
            raise ConfigError("maml_pp msl_iterations must be >= 1 and first_order_iterations "
                              f">= 0, got {self.msl_iterations} and {self.first_order_iterations}")
        if not 0 < self.bn_momentum <= 1:
            raise ConfigError(f"maml_pp bn_momentum must be in (0, 1], got {self.bn_momentum}")


def _bn_names(module: nn.Module, prefix: str) -> list[str]:
    """Full names of the batch-norm weights and biases inside `module`."""
    return [f"{prefix}{m}.{n}" for m, mod in module.named_modules()
            if isinstance(mod, BatchNorm | nn.modules.batchnorm._BatchNorm)
            for n, _ in mod.named_parameters(recurse=False)]


@register("maml_pp", display="MAML++", family="gradient", config=MAMLPPConfig,
          paper="Antoniou, Edwards, Storkey. How to train your MAML. ICLR 2019",
          tasks={"classification", "regression"})
class MAMLPlusPlus(LinearHeadAlgorithm):
    """MAML++: MAML with multi-step loss, annealed derivative order, per-step batch norm and
    per-layer per-step learned inner learning rates."""

    config: MAMLPPConfig
    running_mean: Tensor  # [sets, blocks, C] buffers, with eval_bn="running" only
    running_var: Tensor

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg, steps = self.config, self.config.inner_steps
        self.meta_step = 0  # set by begin_step; drives the MSL and DA schedules
        bn = _bn_names(backbone, "backbone.") if cfg.per_step_bn_weights else []
        self._step_bn_names = tuple(bn)  # per-step, not adapted in the inner loop (BNWB)
        self._inner_names = tuple(k for k, _ in self.named_parameters() if k not in bn)
        if cfg.learned_step_sizes:  # [step, parameter tensor] in the order of _inner_names
            self.step_sizes = nn.Parameter(torch.full((steps, len(self._inner_names)),
                                                      cfg.inner_lr))
        # step 0 uses the backbone's own gamma/beta; steps 1.. use copies [steps - 1, C]
        params = params_of(self)
        self.bn_steps = nn.ParameterDict({
            k.replace(".", "_"): nn.Parameter(params[k].detach().expand(steps - 1, -1).clone())
            for k in bn if steps > 1})
        if cfg.eval_bn == "running":
            forward_with = getattr(backbone, "forward_with", None)
            if forward_with is None or "norm" not in inspect.signature(forward_with).parameters:
                raise ConfigError("maml_pp eval_bn='running' needs a backbone whose forward_with "
                                  f"takes norm= (conv4), got {type(backbone).__name__}; use "
                                  "eval_bn='batch'")
            widths: tuple[int, ...] = getattr(backbone, "block_widths", ())
            shape = (steps if cfg.per_step_bn_stats else 1, len(widths), widths[0])
            self.register_buffer("running_mean", torch.zeros(shape))
            self.register_buffer("running_var", torch.ones(shape))

    def begin_step(self, step: int, total: int) -> None:
        self.meta_step = step

    def msl_weights(self) -> list[float]:
        """Importance v_1..v_S of the query loss after each inner step, at `meta_step`."""
        steps = self.config.inner_steps
        early = max((1 - self.meta_step / self.config.msl_iterations) / steps, MSL_FLOOR / steps)
        return [early] * (steps - 1) + [1 - (steps - 1) * early]

    def _msl_active(self) -> bool:
        cfg = self.config
        return cfg.multi_step_loss and self.training and self.meta_step < cfg.msl_iterations

    def _first_order(self) -> bool:
        cfg = self.config
        if first_order_now(self, cfg.first_order):
            return True
        return cfg.derivative_order_annealing and self.meta_step < cfg.first_order_iterations

    def _step(self, params: Params, step: int) -> tuple[LearningRate, Params]:
        """Learning rate(s) and batch-norm weights (BNWB) of inner step `step`."""
        s = min(step, self.config.inner_steps - 1)
        lr: LearningRate = self.config.inner_lr
        if self.config.learned_step_sizes:
            lr = {k: self.step_sizes[s, j] for j, k in enumerate(self._inner_names)}
        if s == 0:
            return lr, {k: params[k] for k in self._step_bn_names}
        return lr, {k: self.bn_steps[k.replace(".", "_")][s - 1] for k in self._step_bn_names}

    def _trajectory(self, support_x: Tensor, support_y: Tensor, forward: Forward
                    ) -> list[Params]:
        """The network's parameters after each inner step 1..steps (with that step's BN set)."""
        theta = params_of(self)
        p = {k: theta[k] for k in self._inner_names}
        first_order = self._first_order()
        layout = None if first_order else SECOND_ORDER_LAYOUT
        out = []
        for s in range(inner_steps_now(self, self.config.inner_steps,
                                       self.config.eval_inner_steps)):
            lr, fixed = self._step(theta, s)
            # first order: the BN sets are constants of the inner gradient too (torch.func.grad
            # under vmap would otherwise differentiate through them)
            inner = {k: v.detach() for k, v in fixed.items()} if first_order else fixed

            def support_loss(q: Params, inner: Params = inner, s: int = s) -> Tensor:
                return supervised_loss(forward({**q, **inner}, support_x, s, None, layout),
                                       support_y)

            p = sgd_steps(support_loss, p, steps=1, lr=lr, first_order=first_order)
            out.append({**p, **fixed})
        return out

    def _query(self, forward: Forward, params: Params, support_x: Tensor, query_x: Tensor,
               step: int) -> Tensor:
        if self.config.bn_mode == "transductive":
            return forward(params, query_x, step, None, None)
        n = support_x.shape[0]  # non-transductive: the support rows give the statistics
        return forward(params, torch.cat([support_x, query_x]), step, n, None)[n:]

    def _batch_forward(self, params: Params, x: Tensor, step: int, rows: int | None,
                       layout: torch.memory_format | None) -> Tensor:
        return call(self, params, x, stats_rows=rows, memory_format=layout)

    def _running_forward(self, params: Params, x: Tensor, step: int, rows: int | None,
                         layout: torch.memory_format | None, update: bool = False) -> Tensor:
        """The network normalised with running statistics set `step` (BNRS), or with batch
        statistics that update that set (`update`, in place, as `F.batch_norm` does)."""
        k = min(step, self.running_mean.shape[0] - 1)

        def norm(i: int, h: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
                 ) -> Tensor:
            return F.batch_norm(h, self.running_mean[k, i], self.running_var[k, i], weight, bias,
                                update, self.config.bn_momentum, eps)

        return call(self, params, x, memory_format=layout, norm=norm)

    def _outputs(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, forward: Forward
                 ) -> list[Tensor]:
        """Query logits after each step under MSL, else after the last step only."""
        trajectory = self._trajectory(support_x, support_y, forward)
        steps = range(len(trajectory)) if self._msl_active() else [len(trajectory) - 1]
        return [self._query(forward, trajectory[s], support_x, query_x, s) for s in steps]

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 2 for one task: the MSL-weighted query losses, or the final one."""
        self.check_ways(ways)
        outs = self._outputs(support_x, support_y, query_x, self._batch_forward)
        loss, metrics = loss_and_metrics(outs[-1], query_y)
        if len(outs) > 1:  # Eq. 2
            loss = torch.stack([w * supervised_loss(o, query_y)
                                for w, o in zip(self.msl_weights(), outs, strict=True)]).sum()
        return loss, metrics

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        forward = self._batch_forward
        if self.config.eval_bn == "running" and not self.training:
            forward = self._running_forward
        trajectory = self._trajectory(support_x, support_y, forward)
        params, last = detached_unless_grad(trajectory[-1]), len(trajectory) - 1
        return lambda query_x: self._query(forward, params, support_x, query_x, last)

    def end_step(self, batch: TaskBatch) -> None:
        """With `eval_bn="running"`, in training: update the running statistics from the
        training passes of `batch`."""
        if self.training and self.config.eval_bn == "running":
            self.track_bn_statistics(batch)

    @torch.no_grad()
    def track_bn_statistics(self, batch: TaskBatch) -> None:
        """Update the running statistics from the training passes of `batch`, task by task.

        A separate first-order rerun of the inner loop (the same activations as training's):
        the training pass itself may run tasks in threads or under `vmap`, where in-place
        updates of shared buffers would race or be impossible.
        """

        def tracking(params: Params, x: Tensor, step: int, rows: int | None,
                     layout: torch.memory_format | None) -> Tensor:
            return self._running_forward(params, x, step, rows, layout, update=True)

        for i in range(len(batch)):
            self._outputs(batch.support_x[i], batch.support_y[i], batch.query_x[i], tracking)
