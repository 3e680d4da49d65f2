"""Meta-SGD: MAML with a meta-learned learning rate for every parameter entry.

Li, Zhou, Chen, Li. "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning". 2017.
arXiv:1707.09835.

The learner f_theta (backbone + linear head) adapts to a task with ONE step of SGD on the support
loss whose step is an elementwise product with alpha, a vector of the same shape as theta (Eq. 1):
    theta'_i = theta - alpha o grad_theta L_{train(T_i)}(theta)
alpha sets both the learning rate and the direction of each update. theta and alpha are
meta-learned together on the query loss at the adapted parameters (Eq. 2; Algorithm 1):
    min_{theta, alpha}  E_{T_i ~ p(T)} L_{test(T_i)}(theta - alpha o grad L_{train(T_i)}(theta))
with Adam as the meta-optimiser (Sec. 4). alpha is a meta-parameter only: the inner loop adapts
theta, never alpha. It starts random, each entry uniform in [0.005, 0.1] (Sec. 4.1).

Built on `metazoo.algorithms.maml.MAML` (same network, `forward_with`, batch-norm modes and task
strategies); only the inner step differs: `sgd_steps` gets alpha as a per-parameter `lr` dict.
Deviations: `inner_steps > 1` repeats Eq. 1 with the same alpha (the paper uses one step);
`inner_lr_init=None` starts every entry of alpha at `inner_lr` instead of at random; MAML's
"first_step" strategy (which hard-codes a scalar step) is refused. Batch norm as in MAML.
Presets: meta_sgd-omniglot-5w1s, -5w5s, -20w1s, -20w5s, meta_sgd-sinusoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.algorithms.base import AlgorithmConfig, register
from metazoo.algorithms.maml import MAML, MAMLConfig, _loss
from metazoo.errors import ConfigError
from metazoo.functional import call, cpu_layout
from metazoo.inner_loop import sgd_steps
from metazoo.tasks import TaskBatch
from metazoo.types import Params


@dataclass(frozen=True)
class MetaSGDConfig(MAMLConfig):
    # alpha ~ U[low, high] entrywise: [0.005, 0.1] (Sec. 4.1); None: every entry = inner_lr
    inner_lr_init: tuple[float, float] | None = (0.005, 0.1)
    # inner_lr (MAML's scalar alpha) is only used as alpha's start when inner_lr_init is None;
    # inner_steps = 1: the paper adapts in a single step (Sec. 3); first_order: FOMAML-style

    def validate(self) -> None:
        if self.inner_steps < 1:
            raise ConfigError(f"meta_sgd inner_steps must be >= 1, got {self.inner_steps}")
        init = self.inner_lr_init
        if init is not None and (len(init) != 2 or not 0 <= init[0] <= init[1] or init[1] <= 0):
            raise ConfigError(f"meta_sgd inner_lr_init must be [low, high] with 0 <= low <= high "
                              f"and high > 0, e.g. [0.005, 0.1]; got {list(init)}")
        if self.inner_lr <= 0 or self.bn_mode not in ("transductive", "non_transductive"):
            raise ConfigError(f"meta_sgd needs inner_lr > 0 and bn_mode 'transductive' or "
                              f"'non_transductive'; got {self.inner_lr} and '{self.bn_mode}'")
        super().validate()


def _key(name: str) -> str:
    """A parameter name as a `ParameterDict` key, which may not hold dots."""
    return name.replace(".", ":")


@register("meta_sgd", display="Meta-SGD", family="gradient", config=MetaSGDConfig,
          paper="Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. "
                "arXiv:1707.09835, 2017", tasks={"classification", "regression"})
class MetaSGD(MAML):
    """Meta-SGD: meta-learn the initialisation theta and a per-entry step alpha (Eq. 1)."""

    config: MetaSGDConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        init = self.config.inner_lr_init or (self.config.inner_lr, self.config.inner_lr)
        # one alpha tensor per network parameter, same shape; key = its name with ':' for '.'
        self.inner_lrs = nn.ParameterDict({
            _key(name): nn.Parameter(torch.empty_like(p).uniform_(*init))
            for name, p in self.named_parameters()})

    def learning_rates(self) -> Params:
        """alpha by parameter name (`backbone.features.0.0.weight`, ..., `head.bias`)."""
        return {k.replace(":", "."): v for k, v in self.inner_lrs.items()}

    def _adapted(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int) -> Params:
        """`steps` steps of Eq. 1 from `params`; alpha is read, never adapted."""
        alpha = self.learning_rates()
        theta = {k: v for k, v in params.items() if k in alpha}  # drops the inner_lrs.* entries
        # as in MAML: no second-order graph where no meta-gradient is wanted, NCHW for it
        first_order = self.config.first_order or not (self.training and torch.is_grad_enabled())
        layout = torch.channels_last if first_order else torch.contiguous_format
        with cpu_layout(layout):
            return sgd_steps(lambda p: _loss(call(self, p, support_x), support_y), theta,
                             steps=steps, lr=alpha, first_order=first_order)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """MAML's meta-loss (Eq. 2), in every task strategy but "first_step"."""
        if self.resolved_strategy() == "first_step":
            raise ConfigError("meta_sgd cannot run strategy 'first_step' (it steps by MAML's "
                              "scalar inner_lr); use 'loop', 'threads' or 'vmap'")
        return super().meta_loss(batch)
