"""MetaGAN on MAML: an (N+1)-way MAML classifier against a task-conditioned generator.

Zhang, Che, Ghahramani, Bengio, Song. "MetaGAN: An Adversarial Approach to Few-Shot Learning".
NeurIPS 2018 (MAML: Finn et al. 2017, arXiv:1703.03400).

The network (backbone + linear head of N+1 outputs, the last "fake") is MAML's discriminator. For
a task, G(z, T) draws `fakes` (default: as many as the support's rows); the inner loop adapts the
network by SGD on L_D over the support and those fakes (`metazoo.algorithms.metagan_parts`):
    theta' = theta - alpha grad [ -log p(y|x, y<=N) - w log p(y<=N|x) - w log p(N+1|G(z)) ]
and the meta-loss is L_D at theta' over the query and new fakes (as many by default). G learns by
feature matching on the adapted network's backbone features of [query; fakes] (one pass), the
network's weights held fixed; L_D never moves G. One optimiser takes both: the meta-loss is
L_D + (L_G - sg(L_G)), whose gradient is L_D's for the classifier and L_G's for G.
Predictions are the N real logits; with `fake_weight` 0 there is no generator and the method is
MAML (the same loss and gradients). Settings: MAML's (5-way Omniglot: alpha 0.4, 1 step).
Deviations: the paper's generator architecture and optimiser settings are not reproduced (see
`metazoo.algorithms.metagan_parts`); evaluation adapts with fakes too (draws seeded by the episode).
Presets: metagan_maml-omniglot-5w1s, -20w1s, metagan_maml-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.adaptation import first_order_now, predictor
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.maml import MAML, MAMLConfig
from metazoo.algorithms.metagan_parts import (
    GANConfig,
    draw_fakes,
    feature_matching,
    generator_for,
    real_fake_loss,
    supervised_loss,
)
from metazoo.algorithms.registry import register
from metazoo.functional import SECOND_ORDER_LAYOUT, call, strip_prefix
from metazoo.inner_loop import sgd_steps
from metazoo.metrics import accuracy
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class MetaGANMAMLConfig(MAMLConfig, GANConfig):
    """MAML's fields (inner_lr, inner_steps, ...) and the generator's (fake_weight, ...)."""

    def validate(self) -> None:
        MAMLConfig.validate(self)
        GANConfig.validate(self)


@register("metagan_maml", display="MetaGAN (MAML)", family="hybrid", config=MetaGANMAMLConfig,
          paper="Zhang, Che, Ghahramani, Bengio, Song. MetaGAN: An Adversarial Approach to "
                "Few-Shot Learning. NeurIPS 2018 (on MAML)", tasks={"classification"})
class MetaGANMAML(MAML):
    """MAML whose classifier also tells real rows from a task-conditioned generator's fakes."""

    own_head_allowed = False  # it adds an N+1-way head of its own

    config: MetaGANMAMLConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        self.head = nn.Linear(int(backbone.feature_dim), ways + 1)  # type: ignore[arg-type]
        self.generator = generator_for(backbone, cfg)
        self.step = 0  # meta-iteration, set by begin_step: seeds the training draws

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def can_vmap(self) -> bool:
        """Not with a generator: its draws come from a generator seeded by the episode's bytes."""
        return self.generator is None

    def fakes(self, support_x: Tensor, rows: int, tag: str) -> Tensor | None:
        """`fakes` (default `rows`) fakes for the task, None without a generator; evaluation
        draws at step -1."""
        if self.generator is None:
            return None
        return draw_fakes(self.generator, support_x, self.config.fakes or rows, tag=tag,
                          seed=self.config.sample_seed, step=self.step if self.training else -1)

    def start_params(self) -> Params:
        """The classifier's parameters (G is not adapted)."""
        return {k: v for k, v in super().start_params().items()
                if not k.startswith("generator.")}

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` SGD steps on L_D over the support set and its fakes (constants for G)."""
        cfg, ways = self.config, self.ways
        first_order = first_order_now(self, cfg.first_order)
        layout = None if first_order else SECOND_ORDER_LAYOUT
        fakes = self.fakes(support_x, support_x.shape[0], "support")
        fakes = None if fakes is None else fakes.detach()

        def loss(p: Params) -> Tensor:
            real = call(self, p, support_x, memory_format=layout)  # [N*K, N+1]
            if fakes is None:
                return supervised_loss(real, support_y, ways)
            fake = call(self, p, fakes, memory_format=layout)
            return supervised_loss(real, support_y, ways) + cfg.fake_weight * real_fake_loss(
                real, fake)

        return sgd_steps(loss, params, steps=steps, lr=cfg.inner_lr, first_order=first_order)

    def logits_with_fake(self, params: Params, support_x: Tensor) -> Predictor:
        """The adapted network's N+1 logits (the last: fake), batch norm per `bn_mode`."""
        return predictor(self, params, support_x, self.config.bn_mode)

    def predictor(self, params: Params, support_x: Tensor) -> Predictor:
        """The N real classes' logits."""
        full = self.logits_with_fake(params, support_x)
        return lambda query_x: full(query_x)[..., : self.ways]

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D over the query and its fakes at the adapted parameters, plus G's surrogate."""
        self.check_ways(ways)
        params = self.inner_loop(self.start_params(), support_x, support_y, self.steps())
        real = self.logits_with_fake(params, support_x)(query_x)  # [N*Q, N+1]
        loss = supervised_loss(real, query_y, ways)
        metrics = {"acc": accuracy(real[:, :ways].detach(), query_y)}
        fakes = self.fakes(support_x, query_x.shape[0], "query")
        if fakes is None:
            return loss, metrics
        fake_term = real_fake_loss(real, call(self, params, fakes.detach()))
        body = {k: v.detach() for k, v in strip_prefix(params, "backbone.").items()}
        feats = call(self.backbone, body, torch.cat([query_x, fakes]))  # [2 N*Q, D]
        m = query_x.shape[0]
        gen = feature_matching(feats[:m], feats[m:])
        total = loss + self.config.fake_weight * fake_term + (gen - gen.detach())
        return total, metrics  # the log has fixed columns (engine/log.py): acc only
