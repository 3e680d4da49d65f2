"""The network shared by the gradient family: backbone plus a linear head, run with given
parameters; and the shape of the algorithms that adapt it by an inner loop (MAML, ANIL, Meta-SGD).

Not an algorithm itself: public building blocks the algorithm files import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import (
    BNMode,
    detached_unless_grad,
    inner_steps_now,
    predictor,
)
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.errors import ConfigError
from metazoo.functional import call, params_of, strip_prefix
from metazoo.types import Params, Predictor

Head = Literal["linear", "backbone"]
""""linear": the algorithm adds a linear head of `ways` outputs to the backbone; "backbone": the
backbone's output is the logits (a user's whole classifier, its own head included)."""


class LinearHeadAlgorithm(Algorithm):
    """An algorithm whose network is the backbone plus a linear head of `ways` outputs, run with
    given parameters through `forward_with` (the gradient family: MAML, iMAML, Reptile...).

    Where the config's `head` is "backbone" (algorithms with `own_head_allowed`, which adapt
    every parameter alike), there is no added head: the backbone, whose `feature_dim` must be
    `ways`, is the whole network."""

    fixed_ways = True
    adapts_with_gradients = True
    own_head_allowed = False  # True where nothing reads `head.*` by name (MAML, Meta-SGD)

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.head: nn.Linear | None = nn.Linear(dim, ways)
        if getattr(config, "head", "linear") == "backbone":
            name = self.spec.name
            if not self.own_head_allowed:
                raise ConfigError(f"{name} adapts a head of its own; algorithm.head=backbone "
                                  "is for maml, fomaml and meta_sgd")
            if dim != ways:
                raise ConfigError(f"algorithm.head=backbone: the backbone's output is the "
                                  f"logits, so its feature_dim must be the ways ({ways}), got "
                                  f"{dim}")
            self.head = None

    def forward(self, x: Tensor) -> Tensor:
        """The network at the meta-parameters: `[M, *x]` -> `[M, ways]`."""
        features = self.backbone(x)
        return features if self.head is None else self.head(features)

    def forward_with(self, params: Params, x: Tensor, **options: Any) -> Tensor:
        """`forward` with `params` in place of the parameters they name; `options` (batch-norm
        rows, layout, extension points) go to the backbone (see `metazoo.functional.call`)."""
        features = call(self.backbone, strip_prefix(params, "backbone."), x, **options)
        if self.head is None:
            return features
        return F.linear(features, params.get("head.weight", self.head.weight),
                        params.get("head.bias", self.head.bias))


@dataclass(frozen=True)
class InnerLoopConfig(AlgorithmConfig):
    """What every inner-loop algorithm is configured by (MAML's fields; defaults MAML's)."""

    inner_lr: float = 0.4  # alpha of MAML's Eq. 1; 0.4 for 5-way Omniglot (Sec. 5.2)
    inner_steps: int = 1  # SGD steps while meta-training; 1 for 5-way Omniglot (Sec. 5.2)
    eval_inner_steps: int | None = None  # steps at evaluation; None = inner_steps
    first_order: bool = False  # FOMAML (Sec. 5.2): ignore second derivatives
    bn_mode: BNMode = "transductive"  # statistics of each batch, as the paper's code

    def validate(self) -> None:
        if self.inner_lr <= 0:
            raise ConfigError(f"inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 1 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 1):
            raise ConfigError("inner_steps and eval_inner_steps must be >= 1, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")


class InnerLoopAlgorithm(LinearHeadAlgorithm):
    """Adapts the network by steps from the meta-parameters:
    `adapt = predictor(inner_loop(start_params(), support, steps))`.

    A subclass writes `inner_loop`. `metazoo.batching`'s "first_step" strategy relies on this
    shape: every task's first step starts from the same `start_params()`.
    """

    config: InnerLoopConfig

    def start_params(self) -> Params:
        """The parameters the inner loop starts from (the meta-learned initialisation)."""
        return params_of(self)

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` inner steps on the support set from `params`."""
        raise NotImplementedError(f"{type(self).__name__} must define inner_loop()")

    def steps(self) -> int:
        """Inner steps now: `inner_steps` in training, `eval_inner_steps` in evaluation."""
        return inner_steps_now(self, self.config.inner_steps, self.config.eval_inner_steps)

    def predictor(self, params: Params, support_x: Tensor) -> Predictor:
        """The network at adapted `params`, batch norm per `bn_mode`."""
        return predictor(self, params, support_x, self.config.bn_mode)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        params = self.inner_loop(self.start_params(), support_x, support_y, self.steps())
        return self.predictor(detached_unless_grad(params), support_x)
