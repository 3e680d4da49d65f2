"""Conditional class-Aware Meta-Learning (CAML).

Jiang, Havaei, Varno, Chartrand, Chapados, Matwin. "Learning to Learn with Conditional Class
Dependencies". ICLR 2019. OpenReview BJfOXnActQ.

A metric space f_phi, an embedding network trained to place related classes near each other,
conditions a base learner g_theta (backbone + linear head) that is adapted as in MAML. Each
input's embedding e = f_phi(x) sets a conditional transformation (CT, conditional batch norm /
FiLM) of the maps h of every modulated base-learner block, per channel c:
    h'_c = gamma_c(e) h_c + beta_c(e),   [gamma - 1; beta] = W_b e + b_b
after batch norm and pooling, before the ReLU (the backbone's `modulation` point). Inner loop:
theta' = theta - alpha grad_theta L_support(g_theta, CT(f_phi)) with phi and the CT fixed;
outer loop: the query loss at theta' over theta, phi and the W_b, b_b, second order.
Auxiliary co-training (`aux_weight`): the metric space also minimises a prototypical loss
(query embeddings against the support's class means, squared Euclidean) on every task, the metric
loss that keeps it a metric space while it is meta-trained.
Switches: `conditional_transform` (False: the "without CT" ablation, MAML on the base learner),
`aux_weight` (0: no co-training), `bn_mode`, `film_blocks`.
Deviations: the metric space is a copy of the backbone (`model.*`, and `model.pretrained` when
given: there classification pre-training, not the paper's metric loss); the CT starts at
identity (W_b = 0, b_b = 0), so CAML starts as MAML. No copy of the paper's body was reachable
while this was written: the CT form, its per-example conditioning and the co-training loss follow
our reading of Sec. 3, and the presets use MAML's settings (the paper's own could not be
checked). Presets: caml-miniimagenet-5w1s, caml-omniglot-5w1s, caml-glyphs-5w1s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import (
    BNMode,
    detached_unless_grad,
    first_order_now,
    inner_steps_now,
    loss_and_metrics,
    supervised_loss,
)
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.protonet import prototypes, sq_distances
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import call, strip_prefix
from metazoo.inner_loop import sgd_steps
from metazoo.models import modulated_widths
from metazoo.models.conv4 import Modulation
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class CAMLConfig(AlgorithmConfig):
    inner_lr: float = 0.01  # alpha of the base learner's steps (MAML's miniImageNet value)
    inner_steps: int = 5  # steps in meta-training (MAML's miniImageNet value)
    eval_inner_steps: int | None = 10  # steps at test (MAML: 10 on miniImageNet)
    first_order: bool = False  # drop the second-order terms of the meta-gradient
    bn_mode: BNMode = "transductive"  # batch statistics of each pass (MAML's code)
    conditional_transform: bool = True  # the CT; False is the "without CT" ablation
    film_blocks: tuple[int, ...] | None = None  # base-learner blocks the CT modulates; None: all
    aux_weight: float = 1.0  # weight of the metric space's co-training loss (0: off; CT only)

    def validate(self) -> None:
        if not self.inner_lr > 0:
            raise ConfigError(f"caml inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 1 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 1):
            raise ConfigError("caml inner_steps and eval_inner_steps must be >= 1, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")
        if self.film_blocks is not None and (not self.film_blocks or min(self.film_blocks) < 1):
            raise ConfigError(f"caml film_blocks must be block numbers >= 1 (1 = first) or "
                              f"null for all, got {list(self.film_blocks)}")
        if not self.aux_weight >= 0:
            raise ConfigError(f"caml aux_weight must be >= 0 (0 = off), got {self.aux_weight}")


@register("caml", display="CAML", family="hybrid", config=CAMLConfig,
          paper="Jiang, Havaei, Varno, Chartrand, Chapados, Matwin. Learning to Learn with "
                "Conditional Class Dependencies. ICLR 2019", tasks={"classification"})
class CAML(Algorithm):
    """CAML: MAML on a base learner whose blocks a metric-space embedding modulates."""

    config: CAMLConfig
    fixed_ways = True
    adapts_with_gradients = True

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        self.head = nn.Linear(int(backbone.feature_dim), ways)  # type: ignore[arg-type]
        if not cfg.conditional_transform:
            return
        widths = modulated_widths(backbone, "caml")
        blocks = cfg.film_blocks or tuple(range(1, len(widths) + 1))
        if max(blocks) > len(widths):
            raise ConfigError(f"caml film_blocks {list(blocks)} name a block past the "
                              f"backbone's {len(widths)}; use numbers 1 to {len(widths)}")
        self.metric = copy.deepcopy(backbone)  # f_phi
        self.film = nn.ModuleDict()
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        for b in sorted(set(blocks)):
            layer = nn.Linear(dim, 2 * widths[b - 1])  # e -> [gamma - 1; beta]
            nn.init.zeros_(layer.weight)  # identity at the start
            nn.init.zeros_(layer.bias)
            self.film[str(b)] = layer

    def learner_params(self) -> Params:
        """theta: the base learner's parameters (backbone and head), what the inner loop adapts."""
        return {k: v for k, v in self.named_parameters() if k.startswith(("backbone.", "head."))}

    def embed(self, x: Tensor, stats_rows: int | None = None) -> Tensor | None:
        """e = f_phi(x), `[M, D]`; None without the CT."""
        if not self.config.conditional_transform:
            return None
        return call(self.metric, {}, x, stats_rows=stats_rows)

    def modulation(self, e: Tensor | None) -> dict[int, Modulation] | None:
        """The CT of each modulated block (0-based) from embeddings `[M, D]`: `[M, C]` each."""
        if e is None:
            return None
        out: dict[int, Modulation] = {}
        for b, layer in self.film.items():
            gamma, beta = layer(e).chunk(2, dim=-1)
            out[int(b) - 1] = (1 + gamma, beta)
        return out

    def network(self, params: Params, x: Tensor, e: Tensor | None,
                stats_rows: int | None = None) -> Tensor:
        """g_theta with base-learner `params` on `[M, *x]`, conditioned on embeddings `e`."""
        features = call(self.backbone, strip_prefix(params, "backbone."), x,
                        stats_rows=stats_rows, modulation=self.modulation(e))
        return F.linear(features, params["head.weight"], params["head.bias"])

    def forward(self, x: Tensor) -> Tensor:
        """The conditioned base learner before adaptation: `[M, *x]` -> `[M, ways]`."""
        return self.network(self.learner_params(), x, self.embed(x))

    def adapted_params(self, support_x: Tensor, support_y: Tensor) -> Params:
        """theta' after the inner SGD steps on the support loss; f_phi and the CT fixed."""
        cfg = self.config
        e = self.embed(support_x)  # once: phi does not change in the inner loop
        return sgd_steps(lambda p: supervised_loss(self.network(p, support_x, e), support_y),
                         self.learner_params(),
                         steps=inner_steps_now(self, cfg.inner_steps, cfg.eval_inner_steps),
                         lr=cfg.inner_lr, first_order=first_order_now(self, cfg.first_order))

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        params = detached_unless_grad(self.adapted_params(support_x, support_y))
        if self.config.bn_mode == "transductive":
            return lambda query_x: self.network(params, query_x, self.embed(query_x))
        n = support_x.shape[0]

        def predict(query_x: Tensor) -> Tensor:  # support rows give every statistic
            x = torch.cat([support_x, query_x])
            return self.network(params, x, self.embed(x, n), n)[n:]

        return predict

    def metric_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                    query_y: Tensor, ways: int) -> Tensor:
        """The co-training loss: prototypical cross-entropy in the metric space, one pass over
        `[support; query]` (non-transductive: support statistics)."""
        n = support_x.shape[0]
        stats = None if self.config.bn_mode == "transductive" else n
        e = call(self.metric, {}, torch.cat([support_x, query_x]), stats_rows=stats)
        logits = -sq_distances(e[n:], prototypes(e[:n], support_y, ways))
        return F.cross_entropy(logits, query_y)

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The base learner's query loss plus `aux_weight` times the metric space's."""
        loss, metrics = loss_and_metrics(self.adapt(support_x, support_y, ways=ways)(query_x),
                                         query_y)
        weight = self.config.aux_weight
        if not (self.config.conditional_transform and weight):
            return loss, metrics
        aux = self.metric_loss(support_x, support_y, query_x, query_y, ways)
        return loss + weight * aux, metrics  # the log's columns: loss and acc
