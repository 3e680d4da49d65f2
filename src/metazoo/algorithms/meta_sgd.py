"""Meta-SGD: MAML with a meta-learned learning rate for every parameter entry.

Li, Zhou, Chen, Li. "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning". 2017.
arXiv:1707.09835.

The learner f_theta (backbone + linear head) adapts to a task with ONE step of SGD on the support
loss whose step is an elementwise product with alpha, a tensor of theta's shape (Eq. 1):
    theta'_i = theta - alpha o grad_theta L_{train(T_i)}(theta)
theta and alpha are meta-learned together on the query loss at the adapted parameters (Eq. 2,
Algorithm 1) with Adam (Sec. 4):
    min_{theta, alpha}  E_{T_i ~ p(T)} L_{test(T_i)}(theta - alpha o grad L_{train(T_i)}(theta))
alpha is a meta-parameter only: the inner loop adapts theta, never alpha. Each entry starts
uniform in [0.005, 0.1] (Sec. 4.1).
Deviations: `inner_steps > 1` repeats Eq. 1 with the same alpha (the paper uses one step);
`inner_lr_init=None` starts every entry of alpha at `inner_lr`. Batch norm as in MAML.
Presets: meta_sgd-omniglot-5w1s, -5w5s, -20w1s, -20w5s, meta_sgd-sinusoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.adaptation import first_order_now, support_loss
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import Head, InnerLoopAlgorithm, InnerLoopConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.inner_loop import sgd_steps
from metazoo.types import Params


@dataclass(frozen=True)
class MetaSGDConfig(InnerLoopConfig):
    # alpha ~ U[low, high] entrywise: [0.005, 0.1] (Sec. 4.1); None: every entry = inner_lr
    inner_lr_init: tuple[float, float] | None = (0.005, 0.1)
    # inner_lr (MAML's scalar alpha) is only used as alpha's start when inner_lr_init is None;
    # inner_steps = 1: the paper adapts in a single step (Sec. 3); first_order: FOMAML-style
    head: Head = "linear"  # "backbone": a user's classifier as the whole network (its logits)

    def validate(self) -> None:
        super().validate()
        init = self.inner_lr_init
        if init is not None and not (0 <= init[0] <= init[1] and init[1] > 0):
            raise ConfigError(f"meta_sgd inner_lr_init must be [low, high] with 0 <= low <= high "
                              f"and high > 0, e.g. [0.005, 0.1]; got {list(init)}")


def _key(name: str) -> str:
    """A parameter name as a `ParameterDict` key, which may not hold dots."""
    return name.replace(".", ":")


@register("meta_sgd", display="Meta-SGD", family="gradient", config=MetaSGDConfig,
          paper="Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. "
                "arXiv:1707.09835, 2017", tasks={"classification", "regression"})
class MetaSGD(InnerLoopAlgorithm):
    """Meta-SGD: meta-learn the initialisation theta and a per-entry step alpha (Eq. 1)."""

    own_head_allowed = True

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

    def start_params(self) -> Params:
        """theta: the network's parameters (alpha is not adapted)."""
        alpha = self.learning_rates()
        return {k: v for k, v in super().start_params().items() if k in alpha}

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` steps of Eq. 1 from `params`; alpha is read, never adapted."""
        first_order = first_order_now(self, self.config.first_order)
        return sgd_steps(support_loss(self, support_x, support_y, first_order=first_order),
                         params, steps=steps, lr=self.learning_rates(), first_order=first_order)
