"""ANIL (Almost No Inner Loop): MAML that adapts only the network's head.

Raghu, Raghu, Bengio, Vinyals. "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML". ICLR 2020. arXiv:1909.09157.

The network is a body (backbone, theta_body) and a linear head (theta_head). MAML's inner loop
(its Eq. 1, here on the head alone) adapts only the head on the support loss, during training and
testing (Sec. 4, "ANIL"):
    h^(m) = h^(m-1) - alpha * grad_h L_support(theta_body, h^(m-1)),   h^(0) = theta_head
while the body stays at its meta-learned value: the paper finds MAML works by feature reuse, not
rapid learning of the body (Sec. 3). The meta-loss is MAML's: the query loss at (theta_body,
h^(steps)), differentiated w.r.t. both; second order through the head steps.

Speed, the point of ANIL: the body does not change in the inner loop, so the support features are
computed ONCE per task and the inner steps run the linear head on them only (their second-order
graph is a few small matrix products); the query features once more, in the predictor.
Hyper-parameters: MAML's (Sec. 4 reuses MAML's architectures; the paper's settings are in its
App. C.4).
Deviations: batch norm and evaluation steps as in `metazoo.algorithms.maml`; MAML's "first_step"
strategy (which adapts every parameter) is refused.
Presets: anil-omniglot-5w1s, anil-omniglot-20w1s, anil-omniglot-20w5s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.algorithms.base import register
from metazoo.algorithms.maml import MAML, MAMLConfig, _loss
from metazoo.errors import ConfigError
from metazoo.functional import call, split_params
from metazoo.inner_loop import sgd_steps
from metazoo.tasks import TaskBatch
from metazoo.types import Params


@dataclass(frozen=True)
class ANILConfig(MAMLConfig):
    # MAML's fields and defaults (Sec. 4 uses MAML's architectures, details in App. C.4):
    # inner_lr = alpha of the head's steps (0.4 for 5-way Omniglot), inner_steps (1),
    # eval_inner_steps, first_order, bn_mode

    def validate(self) -> None:
        if self.inner_lr <= 0:
            raise ConfigError(f"anil inner_lr must be > 0, got {self.inner_lr}")
        for name in ("inner_steps", "eval_inner_steps"):
            steps = getattr(self, name)
            if steps is not None and steps < 1:
                raise ConfigError(f"anil {name} must be >= 1, got {steps}")
        if self.bn_mode not in ("transductive", "non_transductive"):
            raise ConfigError(f"anil bn_mode must be 'transductive' or 'non_transductive', "
                              f"got '{self.bn_mode}'")
        super().validate()


@register("anil", display="ANIL", family="gradient", config=ANILConfig,
          paper="Raghu, Raghu, Bengio, Vinyals. Rapid Learning or Feature Reuse? Towards "
                "Understanding the Effectiveness of MAML. ICLR 2020",
          tasks={"classification", "regression"})
class ANIL(MAML):
    """ANIL: meta-learn body and head; adapt only the head, on features computed once."""

    config: ANILConfig

    def _adapted(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int) -> Params:
        """`params` with the head after `steps` SGD steps; the body's tensors pass unchanged."""
        head, body = split_params(params, "head.")
        features = call(self.backbone, {k.removeprefix("backbone."): v for k, v in body.items()},
                        support_x)  # [N*K, D]: once, the inner steps do not change the body
        # evaluation needs no meta-gradient: no second-order graph there (as MAML)
        first_order = self.config.first_order or not (self.training and torch.is_grad_enabled())
        if first_order:  # the inner gradients are constants: under vmap `grads` would keep the
            features = features.detach()  # graph of captured tensors, so cut it here
        head = sgd_steps(lambda p: _loss(F.linear(features, p["head.weight"], p["head.bias"]),
                                         support_y),
                         head, steps=steps, lr=self.config.inner_lr, first_order=first_order)
        return {**body, **head}

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """MAML's meta-loss with the head-only inner loop, in every strategy but "first_step"."""
        if self.resolved_strategy() == "first_step":
            raise ConfigError("anil cannot run strategy 'first_step' (it adapts every "
                              "parameter); use 'loop', 'threads' or 'vmap'")
        return super().meta_loss(batch)
