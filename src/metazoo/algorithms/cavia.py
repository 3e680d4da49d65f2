"""Fast Context Adaptation via Meta-Learning (CAVIA).

Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson. "Fast Context Adaptation via Meta-Learning".
ICML 2019. arXiv:1810.03642.

The parameters are split into context parameters phi (a vector of `context_dim`, an extra input
of the network) and shared parameters theta (everything else). For each task phi starts at zero
(phi_0 = 0, Algorithm 1) and only phi takes the inner SGD steps on the support loss (Eq. 3):
    phi_i = phi_0 - alpha * grad_phi L_{T_i}^{support}(f_{phi_0, theta})
theta is meta-learned in the outer loop only, on the query loss at the adapted context (Eq. 4):
    min_theta  sum_{T_i} L_{T_i}^{query}(f_{phi_i, theta})
Second order by default: the meta-gradient flows through the context updates (their gradients
depend on theta); `first_order=True` treats each inner gradient as a constant.
phi enters through the backbone's `modulation` extension point (Sec. 3, Sec. 5):
* vector inputs (the MLP, regression, Sec. 5.1): phi is concatenated to the first layer's input,
  here as a bias-free linear map of phi added to the first layer's pre-activation;
* image inputs (conv4, classification, Sec. 5.2): FiLM (Perez et al. 2018). A linear map of
  phi, part of theta, gives per-channel (gamma, beta); a modulated block runs conv -> batch
  norm -> max-pool -> gamma * h + beta -> ReLU, in the third of four blocks (`film_blocks`).

Deviations: the FiLM generator's bias starts at gamma = 1, beta = 0 (reference code: gamma ~ 0);
backbone and head keep torch's default initialisation; the trainer clips the global gradient
norm (`train.grad_clip`), not each entry to [-10, 10]. Batch norm is transductive (batch
statistics), as the reference code. Details: docs/algorithms.md.
Presets: cavia-sinusoid, cavia-omniglot-5w1s, cavia-omniglot-20w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.adaptation import (
    detached_unless_grad,
    first_order_now,
    inner_steps_now,
    supervised_loss,
)
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import call
from metazoo.inner_loop import grads
from metazoo.models import modulated_widths
from metazoo.types import Predictor


@dataclass(frozen=True)
class CAVIAConfig(AlgorithmConfig):
    context_dim: int = 100  # |phi|: 100 for images (Sec. 5.2, code num_context_params); 5 sine
    inner_lr: float = 1.0  # alpha of Eq. 3: 1.0 in every experiment of the reference code
    inner_steps: int = 2  # context updates in training: 2 images (Sec. 5.2), 1 sinusoid (5.1)
    eval_inner_steps: int | None = None  # steps at evaluation; None = inner_steps (code: same)
    first_order: bool = False  # drop the second-order terms of the meta-gradient
    film_blocks: tuple[int, ...] = (3,)  # conv4 blocks (1 = first) FiLM modulates; code: third

    def validate(self) -> None:
        if self.context_dim < 1:
            raise ConfigError(f"cavia context_dim must be >= 1, got {self.context_dim}")
        if not self.inner_lr > 0:
            raise ConfigError(f"cavia inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 1 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 1):
            raise ConfigError("cavia inner_steps and eval_inner_steps must be >= 1, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")
        if not self.film_blocks or min(self.film_blocks) < 1:
            raise ConfigError(f"cavia film_blocks must be a non-empty list of conv block numbers "
                              f">= 1 (1 = first block), got {list(self.film_blocks)}")


@register("cavia", display="CAVIA", family="gradient", config=CAVIAConfig,
          paper="Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson. Fast Context Adaptation via "
                "Meta-Learning. ICML 2019", tasks={"classification", "regression"})
class CAVIA(Algorithm):
    """CAVIA: adapt a small context vector per task; meta-learn the network around it."""

    config: CAVIAConfig
    fixed_ways = True
    adapts_with_gradients = True

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        self.head = nn.Linear(int(backbone.feature_dim), ways)  # type: ignore[arg-type]
        widths = modulated_widths(backbone, "cavia")
        shape: tuple[int, ...] = getattr(backbone, "input_shape", ())
        self.context_at_input = len(shape) == 1
        if self.context_at_input:
            # W_phi: the context columns of the first layer's weight on [x; phi]; drawn with the
            # bound torch gives that concatenated layer, 1/sqrt(fan_in + context_dim)
            self.context_in = nn.Linear(cfg.context_dim, widths[0], bias=False)
            bound = 1 / math.sqrt(math.prod(shape) + cfg.context_dim)
            nn.init.uniform_(self.context_in.weight, -bound, bound)
            return
        if max(cfg.film_blocks) > len(widths):
            raise ConfigError(f"cavia film_blocks {list(cfg.film_blocks)} name a block past the "
                              f"backbone's {len(widths)}; use numbers 1 to {len(widths)}")
        self.film = nn.ModuleDict()
        for b in sorted(set(cfg.film_blocks)):
            channels = widths[b - 1]
            film = nn.Linear(cfg.context_dim, 2 * channels)  # -> [gamma; beta]
            nn.init.kaiming_uniform_(film.weight, nonlinearity="linear")  # reference code
            with torch.no_grad():  # gamma = 1, beta = 0 at phi = 0: identity at the start
                film.bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels)]))
            self.film[str(b)] = film

    def forward(self, x: Tensor) -> Tensor:
        """The network before adaptation (phi = 0): `[M, *x]` -> `[M, ways]`."""
        return self.network(self.head.weight.new_zeros(self.config.context_dim), x)

    def network(self, phi: Tensor, x: Tensor) -> Tensor:
        """f_{phi, theta}(x): the network with context `phi` (`[context_dim]`) on `[M, *x]`."""
        if self.context_at_input:  # a shift of the first layer's pre-activation
            modulation = {0: (None, self.context_in(phi))}
        else:  # FiLM after batch norm and pooling, before ReLU (reference code)
            modulation = {int(b) - 1: tuple(film(phi).view(2, -1).unbind(0))
                          for b, film in self.film.items()}
        return self.head(call(self.backbone, {}, x, modulation=modulation))

    def adapted_context(self, support_x: Tensor, support_y: Tensor,
                        steps: int | None = None) -> Tensor:
        """phi after `steps` SGD steps of Eq. 3 from phi_0 = 0 on the support loss."""
        cfg = self.config
        first_order = first_order_now(self, cfg.first_order)
        phi = self.head.weight.new_zeros(cfg.context_dim)  # reset for every task

        def support_loss(p: dict[str, Tensor]) -> Tensor:
            return supervised_loss(self.network(p["phi"], support_x), support_y)

        if steps is None:
            steps = inner_steps_now(self, cfg.inner_steps, cfg.eval_inner_steps)
        for _ in range(steps):
            g = grads(support_loss, {"phi": phi}, first_order)["phi"]
            # under vmap the gradient still carries theta's graph (theta is closed over, not an
            # input of torch.func.grad): cut it so first order means first order there too
            phi = phi - cfg.inner_lr * (g.detach() if first_order else g)
        return phi

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        phi = detached_unless_grad({"phi": self.adapted_context(support_x, support_y)})["phi"]
        return lambda query_x: self.network(phi, query_x)
