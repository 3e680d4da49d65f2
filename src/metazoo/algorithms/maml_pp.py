"""MAML++: MAML with the stabilising fixes of "How to train your MAML".

Antoniou, Edwards, Storkey. "How to train your MAML". ICLR 2019. arXiv:1810.09502.

MAML (`metazoo.algorithms.maml`) with the paper's Sec. 4 changes, each switchable so that its
effect can be measured alone; with all of them off this is MAML exactly (tested).
1. Multi-step loss, MSL (`multi_step_loss`, Eq. 2): the meta-loss of a task is
   sum_i v_i L_query(f_{theta_i}), the query loss after every inner step i = 1..S weighted by v.
   v starts uniform (1/S) and, as the reference code does, the non-final weights fall linearly
   by 1/S over `msl_iterations` to a floor of 0.03/S while the final one takes the rest
   (v_S = 1 - sum of the others); after `msl_iterations` only the final query loss is used.
2. Derivative-order annealing, DA (`derivative_order_annealing`): first-order meta-gradients for
   the first `first_order_iterations` meta-iterations, second order after.
3. Per-step batch-norm running statistics, BNRS (`per_step_bn_stats`): see below.
4. Per-step batch-norm weights and biases, BNWB (`per_step_bn_weights`): one gamma/beta set per
   inner step; step i's support pass and the query pass after step i use set i. As in the
   reference code they are meta-learned but not adapted in the inner loop; without BNWB the one
   set is adapted like every other parameter, as MAML does here.
5. Learned per-layer per-step learning rates, LSLR (`learned_step_sizes`): theta_{i+1} =
   theta_i - alpha_{i,l} * grad L_support, one learnable alpha per parameter tensor l and step i,
   initialised to `inner_lr` and meta-learned with theta.
6. Cosine annealing of the meta-learning rate, CA (Eq. 3): the trainer's `train.schedule:
   cosine` (set in the presets); nothing here.
The schedules of MSL and DA read the meta-iteration that the trainer passes to `begin_step`.

Batch norm. The reference code keeps per-step running statistics but normalises with batch
statistics everywhere, evaluation included (`F.batch_norm(..., training=True)`): its BNRS changes
no prediction. `eval_bn="batch"` (default) does the same (transductive, `bn_mode`); no running
statistics are kept. `eval_bn="running"` makes BNRS measurable: `meta_backward` then updates
running mean/variance buffers (momentum `bn_momentum`, from every training pass, like
`F.batch_norm`), one set per step with BNRS and one shared set without, and evaluation
normalises step i's passes with set i (conv4 only). `meta_loss` alone never updates them.

Deviations: the schedules move every meta-iteration, not once per 500-iteration epoch; conv4 is
conv-BN-ReLU-pool (the reference: conv-leaky ReLU-BN-pool); evaluating with more steps than
`inner_steps` reuses the last step's learning rates and batch-norm sets.
Presets: maml_pp-omniglot-5w1s, -5w5s, -20w1s, -20w5s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig, register
from metazoo.algorithms.maml import MAML, MAMLConfig, _loss, _query_loss
from metazoo.errors import ConfigError
from metazoo.functional import BatchNorm, call, cpu_layout, params_of
from metazoo.inner_loop import LearningRate, sgd_steps
from metazoo.models.conv4 import Conv4
from metazoo.tasks import TaskBatch
from metazoo.types import Params, Predictor

Forward = Callable[[Params, Tensor, int, int | None], Tensor]  # (params, x, step, stats_rows)
MSL_FLOOR = 0.03  # the reference code's floor of a non-final MSL weight, times 1/S


@dataclass(frozen=True)
class MAMLPPConfig(MAMLConfig):
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
        if self.eval_bn not in ("batch", "running"):
            raise ConfigError(f"maml_pp eval_bn must be 'batch' or 'running', got '{self.eval_bn}'")
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
class MAMLPlusPlus(MAML):
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
            if not isinstance(backbone, Conv4):
                raise ConfigError("maml_pp eval_bn='running' needs the conv4 backbone, got "
                                  f"{type(backbone).__name__}; use eval_bn='batch'")
            shape = (steps if cfg.per_step_bn_stats else 1, len(backbone.features),
                     backbone.features[0][0].out_channels)  # type: ignore[index]
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
        if cfg.first_order or not (self.training and torch.is_grad_enabled()):
            return True  # evaluation needs no meta-gradient
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
        # batch norm's double backward is ~2x slower channels-last: second order runs NCHW
        layout = torch.channels_last if first_order else torch.contiguous_format
        out = []
        for s in range(self._steps()):
            lr, fixed = self._step(theta, s)
            # first order: the BN sets are constants of the inner gradient too (torch.func.grad
            # under vmap would otherwise differentiate through them)
            inner = {k: v.detach() for k, v in fixed.items()} if first_order else fixed

            def support_loss(q: Params, inner: Params = inner, s: int = s) -> Tensor:
                return _loss(forward({**q, **inner}, support_x, s, None), support_y)

            with cpu_layout(layout):
                p = sgd_steps(support_loss, p, steps=1, lr=lr, first_order=first_order)
            out.append({**p, **fixed})
        return out

    def _query(self, forward: Forward, params: Params, support_x: Tensor, query_x: Tensor,
               step: int) -> Tensor:
        if self.config.bn_mode == "transductive":
            return forward(params, query_x, step, None)
        n = support_x.shape[0]  # non-transductive: the support rows give the statistics
        return forward(params, torch.cat([support_x, query_x]), step, n)[n:]

    def _batch_forward(self, params: Params, x: Tensor, step: int, rows: int | None) -> Tensor:
        return call(self, params, x, stats_rows=rows)

    def _running_forward(self, params: Params, x: Tensor, step: int, rows: int | None,
                         update: bool = False) -> Tensor:
        """conv4 + head normalised with running statistics set `step` (BNRS), or with batch
        statistics that update that set (`update`, in place, as `F.batch_norm` does)."""
        conv4: Conv4 = self.backbone  # type: ignore[assignment]
        k = min(step, self.running_mean.shape[0] - 1)
        for i, block in enumerate(conv4.features):
            conv, bn, p = block[0], block[1], f"backbone.features.{i}."  # type: ignore[index]
            x = F.conv2d(x, params[p + "0.weight"], params[p + "0.bias"], conv.stride,
                         conv.padding, conv.dilation, conv.groups)
            x = torch.relu(F.batch_norm(x, self.running_mean[k, i], self.running_var[k, i],
                                        params[p + "1.weight"], params[p + "1.bias"], update,
                                        self.config.bn_momentum, bn.eps))
            x = F.max_pool2d(x, 2) if i < conv4.pools else x
        return F.linear(x.flatten(1), params["head.weight"], params["head.bias"])

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
        loss, metrics = _query_loss(outs[-1], query_y)
        if len(outs) > 1:  # Eq. 2
            loss = torch.stack([w * _loss(o, query_y)
                                for w, o in zip(self.msl_weights(), outs, strict=True)]).sum()
        return loss, metrics

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        forward = self._batch_forward
        if self.config.eval_bn == "running" and not self.training:
            forward = self._running_forward
        params = self._trajectory(support_x, support_y, forward)[-1]
        if not torch.is_grad_enabled():  # evaluation: keep no graph alive in the predictor
            params = {k: v.detach() for k, v in params.items()}
        last = self._steps() - 1
        return lambda query_x: self._query(forward, params, support_x, query_x, last)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The base class's mean of `task_loss` (MAML's "first_step" strategy runs as a loop)."""
        return Algorithm.meta_loss(self, batch)

    def meta_backward(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """MAML's, then (with `eval_bn="running"`, in training) the running-statistics update."""
        out = super().meta_backward(batch)
        if self.training and self.config.eval_bn == "running":
            self.track_bn_statistics(batch)
        return out

    @torch.no_grad()
    def track_bn_statistics(self, batch: TaskBatch) -> None:
        """Update the running statistics from the training passes of `batch`, task by task.

        A separate first-order rerun of the inner loop (the same activations as training's):
        the training pass itself may run tasks in threads or under `vmap`, where in-place
        updates of shared buffers would race or be impossible.
        """

        def tracking(params: Params, x: Tensor, step: int, rows: int | None) -> Tensor:
            return self._running_forward(params, x, step, rows, update=True)

        for i in range(len(batch)):
            self._outputs(batch.support_x[i], batch.support_y[i], batch.query_x[i], tracking)
