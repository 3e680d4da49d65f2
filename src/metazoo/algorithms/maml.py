"""Model-Agnostic Meta-Learning (MAML) and its first-order approximation (FOMAML).

Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks".
ICML 2017. arXiv:1703.03400.

A task's predictor is the network f_theta (backbone + linear head) after a few SGD steps on the
support loss, starting from the meta-learned theta (Eq. 1, one step):
    theta'_i = theta - alpha * grad_theta L_{T_i}^{support}(f_theta)
The meta-loss is the query loss at the adapted parameters, averaged over the meta-batch
(Algorithm 2, line 10; Eq. 3 with the query set as D'_i):
    min_theta  sum_{T_i ~ p(T)} L_{T_i}^{query}(f_{theta'_i})
Second order by default: the meta-gradient flows through the inner gradients. `first_order=True`
(FOMAML, Sec. 5.2) drops them. Cross-entropy for classification, MSE for regression (Sec. 3.2).
Settings: alpha 0.4, 1 step (5-way Omniglot), 0.01 and 1 step (sinusoid), Sec. 5.

Deviations: batch norm uses batch statistics only, as the paper's code ("transductive");
`bn_mode="non_transductive"` normalises the query with the support's statistics instead.
`head="backbone"` adapts a user's whole classifier (its own last layer) instead of backbone +
a new linear head. Evaluation may take more inner steps than training (`eval_inner_steps`; the
reference code tests Omniglot with 3 steps for 5-way and 5 for 20-way).
Presets: maml-omniglot-5w1s, -5w5s, -20w1s, -20w5s, fomaml-omniglot-5w1s, maml-sinusoid.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from metazoo.adaptation import first_order_now, support_loss
from metazoo.algorithms.networks import Head, InnerLoopAlgorithm, InnerLoopConfig
from metazoo.algorithms.registry import register
from metazoo.inner_loop import sgd_steps
from metazoo.types import Params


@dataclass(frozen=True)
class MAMLConfig(InnerLoopConfig):
    """inner_lr (alpha), inner_steps, eval_inner_steps, first_order, bn_mode: see the base."""

    head: Head = "linear"  # "backbone": a user's classifier as the whole network (its logits)


@register("fomaml", display="FOMAML", family="gradient", config=MAMLConfig,
          paper="Finn, Abbeel, Levine. Model-Agnostic Meta-Learning. ICML 2017 (first order)",
          tasks={"classification", "regression"}, defaults={"first_order": True})
@register("maml", display="MAML", family="gradient", config=MAMLConfig,
          paper="Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep "
                "Networks. ICML 2017", tasks={"classification", "regression"})
class MAML(InnerLoopAlgorithm):
    """MAML: meta-learn the initialisation that SGD on a support set adapts best."""

    config: MAMLConfig
    own_head_allowed = True

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` SGD steps of Eq. 1 on the support loss from `params`."""
        first_order = first_order_now(self, self.config.first_order)
        return sgd_steps(support_loss(self, support_x, support_y, first_order=first_order),
                         params, steps=steps, lr=self.config.inner_lr, first_order=first_order)
