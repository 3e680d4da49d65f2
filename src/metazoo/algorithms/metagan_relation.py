"""MetaGAN on Relation Networks: relation scores with a fake class, against a task's generator.

Zhang, Che, Ghahramani, Bengio, Song. "MetaGAN: An Adversarial Approach to Few-Shot Learning".
NeurIPS 2018 (Relation Net: Sung et al., CVPR 2018, arXiv:1711.06025).

Relation Net's embedding and relation module (`relation.py`) are the discriminator. A row's N
relation outputs before the sigmoid are its class logits l_1..l_N and the fake class has the
constant logit 0 (as Salimans et al. 2016, Sec. 5, fix it for a softmax classifier), so
p(fake | x) = 1 / (1 + sum_n exp(l_n)). The meta-loss is Relation Net's Eq. 2 (squared error of
sigmoid(l) to the one-hot label) plus `fake_weight` times L_D's real/fake terms over the query and
`fakes` fakes G(z, T) (default: as many), each scored against the support's class maps:
    L = sum (sigmoid(l) - 1[y])^2 - w E_query log p(y<=N|x) - w E_{x~G} log p(N+1|x)
G is trained by feature matching on the embedding's maps of [query; fakes] (one pass), the
embedding's weights held fixed; L_D never moves G: the meta-loss is L + (L_G - sg(L_G)). With
`fake_weight` 0 there is no generator and the method is Relation Net (same loss and gradients).
Settings: Relation Net's (Adam 1e-3, 19 queries per class for 5-way 1-shot Omniglot).
Deviations: the generator is ours (see `metazoo.algorithms.metagan_parts`); the fake logit is
the fixed 0 of Salimans et al., the paper's exact scoring of the fake class for Relation Net is
not known here.
Presets: metagan_relation-omniglot-5w1s, metagan_relation-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.metagan_parts import (
    GANConfig,
    draw_fakes,
    feature_matching,
    generator_for,
    real_fake_loss,
)
from metazoo.algorithms.registry import register
from metazoo.algorithms.relation import RelationConfig, RelationNet, class_maps
from metazoo.functional import call
from metazoo.metrics import accuracy


@dataclass(frozen=True)
class MetaGANRelationConfig(RelationConfig, GANConfig):
    """Relation Net's fields (hidden, fc_hidden) and the generator's (fake_weight, ...)."""

    def validate(self) -> None:
        RelationConfig.validate(self)
        GANConfig.validate(self)


def with_fake_column(logits: Tensor) -> Tensor:
    """`[M, N]` class logits -> `[M, N+1]`, the fake class's logit fixed at 0."""
    return torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)


@register("metagan_relation", display="MetaGAN (Relation Net)", family="hybrid",
          config=MetaGANRelationConfig,
          paper="Zhang, Che, Ghahramani, Bengio, Song. MetaGAN: An Adversarial Approach to "
                "Few-Shot Learning. NeurIPS 2018 (on Relation Net)", tasks={"classification"})
class MetaGANRelation(RelationNet):
    """Relation Net whose scores also tell real rows from a task-conditioned generator's fakes."""

    config: MetaGANRelationConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        self.generator = generator_for(backbone, cfg)
        self.step = 0  # meta-iteration, set by begin_step: seeds the training draws

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def can_vmap(self) -> bool:
        """Not while training with a generator (draws seeded by the episode's bytes)."""
        return self.generator is None or not self.training

    def relation_logits(self, classes: Tensor, maps: Tensor) -> Tensor:
        """Scores before the sigmoid of rows `[M, C, H, W]` against class maps `[N, C, H, W]`."""
        return self.relation.pair_logits(classes, maps)

    def logits_with_fake(self, support_x: Tensor, support_y: Tensor, x: Tensor, ways: int
                         ) -> Tensor:
        """The N+1 logits of rows `x` (the last, 0: fake), as one pass of [support; x]."""
        maps = self.backbone(torch.cat([support_x, x])).view(-1, *self.map_shape)
        s = support_x.shape[0]
        return with_fake_column(self.relation_logits(class_maps(maps[:s], support_y, ways),
                                                     maps[s:]))

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Relation Net's Eq. 2 plus L_D's real/fake terms, plus G's surrogate."""
        s, m = support_x.shape[0], query_x.shape[0]
        maps = self.backbone(torch.cat([support_x, query_x])).view(-1, *self.map_shape)
        classes = class_maps(maps[:s], support_y, ways)  # [N, C, H, W]
        logits = self.relation_logits(classes, maps[s:])  # [M, N]
        scores = torch.sigmoid(logits)
        loss = F.mse_loss(scores, F.one_hot(query_y, ways).to(scores.dtype))
        metrics = {"acc": accuracy(scores.detach(), query_y)}
        if self.generator is None:
            return loss, metrics
        fakes = draw_fakes(self.generator, support_x, self.config.fakes or m, tag="query",
                           seed=self.config.sample_seed,
                           step=self.step if self.training else -1)
        fake_maps = self.backbone(fakes.detach()).view(-1, *self.map_shape)
        fake_term = real_fake_loss(with_fake_column(logits),
                                   with_fake_column(self.relation_logits(classes, fake_maps)))
        body = {k: v.detach() for k, v in self.backbone.named_parameters()}
        feats = call(self.backbone, body, torch.cat([query_x, fakes]))  # [2M, D]
        gen = feature_matching(feats[:m], feats[m:])
        total = loss + self.config.fake_weight * fake_term + (gen - gen.detach())
        return total, metrics  # the log has fixed columns (engine/log.py): acc only
