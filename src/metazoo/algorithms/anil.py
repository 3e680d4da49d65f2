"""ANIL (Almost No Inner Loop): MAML that adapts only the network's head.

Raghu, Raghu, Bengio, Vinyals. "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML". ICLR 2020. arXiv:1909.09157.

The network is a body (backbone, theta_body) and a linear head (theta_head). MAML's inner loop
(its Eq. 1, here on the head alone) adapts only the head on the support loss, in training and
testing (Sec. 4, "ANIL"):
    h^(m) = h^(m-1) - alpha * grad_h L_support(theta_body, h^(m-1)),   h^(0) = theta_head
while the body stays at its meta-learned value (the paper: MAML works by feature reuse, Sec. 3).
The meta-loss is MAML's: the query loss at (theta_body, h^(steps)), differentiated w.r.t. both;
second order through the head steps. The body does not change in the inner loop, so the support
features are computed once per task and the inner steps run the linear head on them only.
Settings: MAML's (Sec. 4 reuses MAML's architectures; App. C.4). Batch norm and evaluation steps
as in `metazoo.algorithms.maml`.
Presets: anil-omniglot-5w1s, anil-omniglot-20w1s, anil-omniglot-20w5s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from metazoo.adaptation import first_order_now, supervised_loss
from metazoo.algorithms.networks import InnerLoopAlgorithm, InnerLoopConfig
from metazoo.algorithms.registry import register
from metazoo.functional import call, split_params, strip_prefix
from metazoo.inner_loop import sgd_steps
from metazoo.types import Params


@dataclass(frozen=True)
class ANILConfig(InnerLoopConfig):
    """MAML's fields and defaults: inner_lr = alpha of the head's steps (0.4 for 5-way
    Omniglot), inner_steps (1), eval_inner_steps, first_order, bn_mode."""


@register("anil", display="ANIL", family="gradient", config=ANILConfig,
          paper="Raghu, Raghu, Bengio, Vinyals. Rapid Learning or Feature Reuse? Towards "
                "Understanding the Effectiveness of MAML. ICLR 2020",
          tasks={"classification", "regression"})
class ANIL(InnerLoopAlgorithm):
    """ANIL: meta-learn body and head; adapt only the head, on features computed once."""

    config: ANILConfig

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`params` with the head after `steps` SGD steps; the body's tensors pass unchanged."""
        head, body = split_params(params, "head.")
        features = call(self.backbone, strip_prefix(body, "backbone."), support_x)  # [N*K, D]
        first_order = first_order_now(self, self.config.first_order)
        if first_order:  # the inner gradients are constants: under vmap `grads` would keep the
            features = features.detach()  # graph of captured tensors, so cut it here
        head = sgd_steps(lambda p: supervised_loss(F.linear(features, p["head.weight"],
                                                            p["head.bias"]), support_y),
                         head, steps=steps, lr=self.config.inner_lr, first_order=first_order)
        return {**body, **head}
