"""Meta-Transfer Learning (MTL): a frozen pre-trained backbone, meta-learned scaling and shifting.

Sun, Liu, Chua, Schiele. "Meta-Transfer Learning for Few-Shot Learning". CVPR 2019.
arXiv:1812.02391.

A feature extractor Theta, pre-trained on all meta-training classes (Eq. 1: `metazoo pretrain`,
`model.pretrained`), is frozen (buffers). Meta-training learns, per convolution, a scaling
Phi_S1 (init 1) of each k x k kernel and a shifting Phi_S2 (init 0) (Eq. 5):
    SS(X; W, b; Phi_S{1,2}) = (W (.) Phi_S1) X + (b + Phi_S2)
and the initialisation of a linear head theta, which each task adapts by SGD on its support loss
(Eq. 2); Phi_S{1,2} and theta minimise the query loss at theta' (Eq. 3, 4), second order.
Not a per-channel FiLM after each block: Phi_S1 has one scalar per (output, input) channel pair,
which no per-channel map of the output equals, so SS scales the frozen weights (`forward_with`).
Batch norm (batch statistics) after a conv cancels b and any per-channel scale: Phi_S2 goes to
the unit's bias, BN's beta, and a conv on a one-channel input gets no Phi_S1.
HT meta-batch (Sec. 4.2), `hard_tasks` > 0: each task's classes rank by query accuracy (ties:
higher loss); every task's failure class first, then the next hardest, re-compose their data in
the batch into N-way hard tasks whose loss joins the meta-batch's.
Settings (reference TF code): 20 head steps of 0.01 on sum(CE)/K (0.05 on the mean, 5-way), 100
at test, meta-batch 2, Adam 1e-3 halved every 5000 steps.
Deviations: hard tasks share their meta-batch's update (the paper: a further update) and reuse
its samples (new images of the failure classes would need the dataset); the frozen backbone runs
in eval mode (no dropout, as the reference meta phase); SS also scales ResNet-12's shortcut.
Presets: mtl-miniimagenet-5w1s, -5w5s, mtl-omniglot-5w1s, mtl-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo import batching
from metazoo.adaptation import (
    BNMode,
    detached_unless_grad,
    first_order_now,
    inner_steps_now,
    supervised_loss,
)
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.freezing import freeze
from metazoo.functional import BatchNorm, call
from metazoo.inner_loop import sgd_steps
from metazoo.tasks import TaskBatch
from metazoo.tasks.hard import class_scores, hard_task_batch
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class MTLConfig(AlgorithmConfig):
    inner_lr: float = 0.05  # beta of Eq. 2 on the mean support loss (code: 0.01 on N x mean)
    inner_steps: int = 20  # head steps in meta-training (code train_base_epoch_num = 20)
    eval_inner_steps: int | None = 100  # head steps at test (code test_base_epoch_num = 100)
    first_order: bool = False  # drop the second-order terms (the PyTorch port's choice)
    bn_mode: BNMode = "transductive"  # batch statistics of each pass, as the reference code
    hard_tasks: int = 1  # HT meta-batch (Sec. 4.2): hard tasks per meta-batch; 0 = off

    def validate(self) -> None:
        if not self.inner_lr > 0:
            raise ConfigError(f"mtl inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 1 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 1):
            raise ConfigError("mtl inner_steps and eval_inner_steps must be >= 1, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")
        if self.hard_tasks < 0:
            raise ConfigError(f"mtl hard_tasks must be >= 0 (0 = off), got {self.hard_tasks}")


def ss_units(backbone: nn.Module) -> list[tuple[str, bool, str | None]]:
    """(convolution weight, whether Phi_S1 scales it, the bias reaching the unit's output) for
    every conv of `backbone`. The bias is that of the batch norm right after the conv, else the
    conv's own, else None. A kernel scale on a one-channel input is one scale per output channel,
    which that batch norm cancels: no Phi_S1 there (it would learn only through eps)."""
    modules = list(backbone.named_modules())
    units = []
    for i, (name, m) in enumerate(modules):
        if isinstance(m, nn.Conv2d):
            after = modules[i + 1][1] if i + 1 < len(modules) else None
            normed = isinstance(after, BatchNorm) and after.bias is not None
            bias = (f"{modules[i + 1][0]}.bias" if normed
                    else f"{name}.bias" if m.bias is not None else None)
            units.append((f"{name}.weight", not (normed and m.weight.shape[1] == 1), bias))
    return units


@register("mtl", display="MTL", family="hybrid", config=MTLConfig,
          paper="Sun, Liu, Chua, Schiele. Meta-Transfer Learning for Few-Shot Learning. "
                "CVPR 2019", tasks={"classification"})
class MTL(Algorithm):
    """MTL: scale and shift a frozen backbone's kernels; adapt a linear head per task."""

    config: MTLConfig
    fixed_ways = True
    adapts_with_gradients = True

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(freeze(backbone), config, ways=ways)  # Theta: buffers, same names
        self.units = ss_units(backbone)
        if not self.units:
            raise ConfigError(f"mtl scales convolution kernels and needs a conv backbone "
                              f"(conv4, resnet12); got {type(backbone).__name__}")
        self.ss_scale, self.ss_shift = nn.ParameterDict(), nn.ParameterDict()
        for weight, scaled, bias in self.units:
            w = backbone.get_buffer(weight)
            key = weight.removesuffix(".weight").replace(".", "_")
            if scaled:
                self.ss_scale[key] = nn.Parameter(w.new_ones(*w.shape[:2], 1, 1))  # Phi_S1
            if bias is not None:
                self.ss_shift[key] = nn.Parameter(w.new_zeros(w.shape[0]))  # Phi_S2
        self.head = nn.Linear(int(backbone.feature_dim), ways)  # type: ignore[arg-type]
        nn.init.xavier_uniform_(self.head.weight)  # theta: the reference code's init
        nn.init.zeros_(self.head.bias)
        self.backbone.eval()

    def train(self, mode: bool = True) -> MTL:
        """Train mode for the algorithm; the frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def ss_weights(self) -> Params:
        """The backbone's weights after SS (Eq. 5): W * Phi_S1, and beta (or b) + Phi_S2."""
        out = {}
        for weight, scaled, bias in self.units:
            key = weight.removesuffix(".weight").replace(".", "_")
            if scaled:
                out[weight] = self.backbone.get_buffer(weight) * self.ss_scale[key]
            if bias is not None:
                out[bias] = self.backbone.get_buffer(bias) + self.ss_shift[key]
        return out

    def features(self, x: Tensor, stats_rows: int | None = None) -> Tensor:
        """SS(Theta) features of `[M, *x]`: `[M, D]`."""
        return call(self.backbone, self.ss_weights(), x, stats_rows=stats_rows)

    def forward(self, x: Tensor) -> Tensor:
        """The network before adaptation: SS features and the meta-learned head theta."""
        return self.head(self.features(x))

    def adapted_head(self, support_x: Tensor, support_y: Tensor) -> Params:
        """theta' of Eq. 2: SGD steps on the support loss of the head, from theta."""
        first_order = first_order_now(self, self.config.first_order)
        features = self.features(support_x)  # [N*K, D], once: Theta and Phi are fixed here
        if first_order:  # constants under vmap too (see metazoo.inner_loop.grads)
            features = features.detach()
        steps = inner_steps_now(self, self.config.inner_steps, self.config.eval_inner_steps)
        return sgd_steps(lambda p: supervised_loss(F.linear(features, p["weight"], p["bias"]),
                                                   support_y),
                         {"weight": self.head.weight, "bias": self.head.bias}, steps=steps,
                         lr=self.config.inner_lr, first_order=first_order)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        head = detached_unless_grad(self.adapted_head(support_x, support_y))
        if self.config.bn_mode == "transductive":
            return lambda query_x: F.linear(self.features(query_x), head["weight"], head["bias"])
        n = support_x.shape[0]
        return lambda query_x: F.linear(
            self.features(torch.cat([support_x, query_x]), stats_rows=n)[n:], head["weight"],
            head["bias"])

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Query loss of the meta-batch's tasks and, with `hard_tasks`, of its hard tasks
        (Sec. 4.2), every task weighted alike; the accuracy of the meta-batch's own tasks."""
        count = self.config.hard_tasks
        if not count:
            return batching.mean_task_loss(self, batch)
        if count > len(batch):
            raise ConfigError(f"mtl hard_tasks={count} draws on the classes of {count} tasks "
                              f"but the meta-batch has {len(batch)}; raise "
                              "train.meta_batch_size or lower algorithm.hard_tasks")
        out = batching.predict(self, batch.support_x, batch.support_y, batch.query_x)
        losses, accs = class_scores(out, batch.query_y)  # [B, N] each
        hard = hard_task_batch(batch, losses, accs, count)
        hard_out = batching.predict(self, hard.support_x, hard.support_y, hard.query_x)
        task_losses = torch.cat([losses.mean(1), class_scores(hard_out, hard.query_y)[0]
                                 .mean(1)])  # classes have Q queries each: means agree
        return task_losses.mean(), {"acc": accs.mean()}  # the log's columns: acc only
