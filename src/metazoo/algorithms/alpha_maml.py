"""Alpha MAML: MAML whose inner and outer learning rates adapt online by hypergradient descent.

Behl, Baydin, Torr. "Alpha MAML: Adaptive Model-Agnostic Meta-Learning". 6th ICML Workshop on
Automated Machine Learning (AutoML 2019). arXiv:1905.07435.

MAML (Finn et al. 2017, Eq. 1: theta'_i = theta - alpha grad L_i^support(theta)) whose inner
rate alpha and outer rate beta take one hypergradient-descent (HD) step per meta-iteration
(Algorithm 2; HD is Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate
Adaptation with Hypergradient Descent", ICLR 2018, Sec. 2):
    alpha <- alpha - eta * dL/dalpha,  dL/dalpha = -mean_i grad L_i^query(theta'_i) . grad
             L_i^support(theta)  (one inner step: the support gradient reused)
    beta  <- beta - mu * dL(theta_t)/dbeta,  dL(theta_t)/dbeta = -g_t . u_{t-1}
where g_t is the meta-gradient at theta_t and u_{t-1} the direction of the previous outer step
(theta_t = theta_{t-1} - beta u_{t-1}): the gradient itself for SGD (SGD-HD), the moment ratio
for Adam (Adam-HD). Here u_{t-1} = (theta_{t-1} - theta_t) / beta, read off the parameters, so the
rule holds for the trainer's SGD, momentum or Adam, clipping and weight decay included.
alpha is a meta-parameter that only HD moves: autograd gives dL/dalpha exactly (every inner step
for inner_steps > 1); `end_step` applies it and hides it from the optimiser. beta starts at the
trainer's `train.outer_lr` and replaces its schedule (`Algorithm.outer_lr`).
Deviations: one alpha step per meta-batch (mean over its tasks); the paper's hyper-rates eta, mu
for Omniglot are not known here: eta 1e-4 and mu 1e-8 (Adam-HD's default in Baydin's code) are
ours. Presets: alpha_maml-omniglot-5w1s, alpha_maml-sinusoid, alpha_maml-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.adaptation import first_order_now, support_loss
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.maml import MAML, MAMLConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.inner_loop import sgd_steps
from metazoo.tasks import TaskBatch
from metazoo.types import Params


@dataclass(frozen=True)
class AlphaMAMLConfig(MAMLConfig):
    # inner_lr is alpha's start (MAML: 0.4 for 5-way Omniglot); the other fields are MAML's
    inner_hyper_lr: float = 1e-4  # eta: HD rate of alpha; ours (the paper's value not known)
    outer_hyper_lr: float = 1e-8  # mu: HD rate of beta; Adam-HD's default (Baydin's code); 0: fixed

    def validate(self) -> None:
        super().validate()
        if self.inner_hyper_lr < 0 or self.outer_hyper_lr < 0:
            raise ConfigError(f"alpha_maml inner_hyper_lr and outer_hyper_lr must be >= 0 (0 = "
                              f"fixed), got {self.inner_hyper_lr} and {self.outer_hyper_lr}")


@register("alpha_maml", display="Alpha MAML", family="gradient", config=AlphaMAMLConfig,
          paper="Behl, Baydin, Torr. Alpha MAML: Adaptive Model-Agnostic Meta-Learning. "
                "ICML 2019 AutoML workshop", tasks={"classification", "regression"})
class AlphaMAML(MAML):
    """MAML with its inner rate alpha and outer rate beta adapted by hypergradient descent."""

    config: AlphaMAMLConfig
    outer_rate: Tensor  # beta; 0 until the trainer first asks for it
    previous: Tensor  # theta before the last outer step, flat `[P]`
    hd_steps: Tensor  # end_step calls so far

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        size = sum(p.numel() for p in self.parameters())
        self.alpha = nn.Parameter(torch.tensor(float(self.config.inner_lr)))
        self.register_buffer("outer_rate", torch.zeros(()))
        self.register_buffer("previous", torch.zeros(size))
        self.register_buffer("hd_steps", torch.zeros((), dtype=torch.long))

    def theta(self) -> list[nn.Parameter]:
        """The network's parameters: every meta-parameter but alpha."""
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def start_params(self) -> Params:
        """theta (alpha is not adapted by the inner loop)."""
        return {k: v for k, v in super().start_params().items() if k != "alpha"}

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` steps of MAML's Eq. 1 with the current alpha, in the graph (for dL/dalpha)."""
        first_order = first_order_now(self, self.config.first_order)
        return sgd_steps(support_loss(self, support_x, support_y, first_order=first_order),
                         params, steps=steps, lr=self.alpha, first_order=first_order)

    @torch.no_grad()
    def end_step(self, batch: TaskBatch) -> None:
        """HD steps of alpha (from its meta-gradient) and of beta (from g_t . u_{t-1})."""
        cfg = self.config
        if self.alpha.grad is not None:
            self.alpha.sub_(cfg.inner_hyper_lr * self.alpha.grad)
            self.alpha.grad = None  # the trainer's optimiser never moves alpha
        theta = self.theta()
        flat = torch.cat([p.detach().reshape(-1) for p in theta])
        if self.hd_steps > 0 and self.outer_rate != 0 and cfg.outer_hyper_lr > 0:
            g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                           for p in theta])
            # dL(theta_t)/dbeta = g_t . d theta_t / d beta = g_t . (theta_t - theta_{t-1}) / beta
            self.outer_rate -= cfg.outer_hyper_lr * (g @ (flat - self.previous)) / self.outer_rate
        self.previous.copy_(flat)
        self.hd_steps += 1

    def outer_lr(self, scheduled: float) -> float:
        """beta: the trainer's first scheduled rate, then HD's; the schedule when mu is 0."""
        if self.config.outer_hyper_lr == 0:
            return scheduled
        if self.outer_rate == 0:  # the first step: beta_0, kept in the buffer's precision
            self.outer_rate.fill_(scheduled)
            return scheduled
        return float(self.outer_rate)
