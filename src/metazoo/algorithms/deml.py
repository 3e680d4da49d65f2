"""Deep Meta-Learning (DEML): a meta-learner that learns to learn in a learned concept space.

Zhou, Wu, Li. "Deep Meta-Learning: Learning to Learn in the Concept Space". arXiv:1802.03596,
2018.

Three modules learned jointly (Sec. 3): a concept generator G (the backbone) maps each image to a
concept G(x); a meta-learner (MAML by default; Meta-SGD or Matching Nets, the paper's three)
adapts and predicts on concepts only: its own network M (`learner_hidden` ReLU layers and a
linear head) adapts to G(support) and is scored on G(query), so the meta-gradient trains M's
initialisation and, through the concepts, G; a concept discriminator D (a linear classifier)
recognises the concepts of labelled images. The joint objective (Sec. 3):
    min_{G, M, D}  E_T L_meta(T; G, M) + lambda E_(x,y) CE(D(G(x)), y)
The paper's D learns a large external set (ImageNet classes), which is not here: D recognises the
meta-training classes, on each meta-batch's support and query images under their split-wide
labels (`TaskBatch.classes`, which `EpisodeSampler` sets; `concept_classes` must cover the
train split's classes: 4400 for Omniglot, 1600 for glyphs).
`concept_generator: identity` freezes G at the identity (concepts = the raw, flattened inputs):
DEML is then its meta-learner on raw features (the same meta-loss, and with lambda 0 the same
loss). Deviations: one optimiser for the three modules; the paper's ResNet generator and its
lambda are not reproduced here (lambda 1, ours). Presets: deml-omniglot-5w1s (MAML's Omniglot
settings: the paper has no Omniglot run), deml-glyphs-5w1s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo import batching
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import build, get, register
from metazoo.errors import ConfigError, ShapeError
from metazoo.freezing import freeze
from metazoo.metrics import accuracy
from metazoo.models.mlp import MLP
from metazoo.tasks import TaskBatch
from metazoo.types import Predictor

_LEARNER_FIELDS = ("inner_lr", "inner_steps", "eval_inner_steps", "first_order")


@dataclass(frozen=True)
class DEMLConfig(AlgorithmConfig):
    meta_learner: Literal["maml", "meta_sgd", "matching"] = "maml"  # the paper's three (Sec. 4)
    learner_hidden: tuple[int, ...] = ()  # ReLU layers of M before its head; () = linear M
    inner_lr: float = 0.4  # alpha of MAML / Meta-SGD's start; MAML's 5-way Omniglot 0.4
    inner_steps: int = 1  # inner steps of MAML / Meta-SGD while meta-training
    eval_inner_steps: int | None = None  # inner steps at evaluation; None = inner_steps
    first_order: bool = False  # first-order MAML / Meta-SGD
    concept_classes: int = 4400  # classes D recognises: the train split's (Omniglot 1100 x 4)
    concept_weight: float = 1.0  # lambda, the weight of D's loss (ours; the paper's not known)
    concept_generator: Literal["backbone", "identity"] = "backbone"  # identity: raw inputs

    def validate(self) -> None:
        if self.inner_lr <= 0 or self.inner_steps < 1 or (
                self.eval_inner_steps is not None and self.eval_inner_steps < 1):
            raise ConfigError(f"deml needs inner_lr > 0 and inner steps >= 1, got "
                              f"{self.inner_lr}, {self.inner_steps}, {self.eval_inner_steps}")
        if self.concept_classes < 1 or self.concept_weight < 0 or any(
                h < 1 for h in self.learner_hidden):
            raise ConfigError(f"deml needs concept_classes >= 1, concept_weight >= 0 and "
                              f"learner_hidden widths >= 1, got {self.concept_classes}, "
                              f"{self.concept_weight}, {list(self.learner_hidden)}")


@register("deml", display="DEML", family="hybrid", config=DEMLConfig,
          paper="Zhou, Wu, Li. Deep Meta-Learning: Learning to Learn in the Concept Space. "
                "arXiv:1802.03596, 2018", tasks={"classification"})
class DEML(Algorithm):
    """DEML: a meta-learner on the concepts of a generator that a discriminator also trains."""

    config: DEMLConfig
    adapts_with_gradients = True

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        if cfg.concept_generator == "identity":  # no generator weights to train
            if not getattr(backbone, "input_shape", None):
                raise ConfigError("deml's identity concept generator needs the backbone's "
                                  "input_shape (the raw features' size)")
            freeze(self.backbone)
            dim = math.prod(backbone.input_shape)  # type: ignore[arg-type]
        else:
            dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        known = {f.name for f in dataclasses.fields(get(cfg.meta_learner).config)}
        options = {k: getattr(cfg, k) for k in _LEARNER_FIELDS if k in known}
        self.learner = build(cfg.meta_learner, MLP((dim,), cfg.learner_hidden), ways=ways,
                             **options)
        self.discriminator = nn.Linear(dim, cfg.concept_classes)

    def concepts(self, x: Tensor) -> Tensor:
        """G(x): `[M, *x]` -> `[M, D]` (the flattened input when G is the identity)."""
        if self.config.concept_generator == "identity":
            return x.flatten(1)
        return self.backbone(x)

    def check_ways(self, ways: int) -> int:
        return self.learner.check_ways(ways)

    def can_vmap(self) -> bool:
        return self.learner.can_vmap()

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        inner = self.learner.adapt(self.concepts(support_x), support_y, ways=ways or self.ways)
        return lambda query_x: inner(self.concepts(query_x))

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The meta-learner's own task loss, on concepts."""
        return self.learner.task_loss(self.concepts(support_x), support_y,
                                      self.concepts(query_x), query_y, ways)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean task loss + lambda * D's cross-entropy on the batch's images (Sec. 3)."""
        loss, metrics = batching.mean_task_loss(self, batch)
        if self.config.concept_weight == 0:
            return loss, metrics
        # D's loss joins the value logged; the log's columns are fixed (engine/log.py)
        return loss + self.config.concept_weight * self.concept_loss(batch)[0], metrics

    def concept_loss(self, batch: TaskBatch) -> tuple[Tensor, Tensor]:
        """D's cross-entropy and accuracy over every support and query image of `batch`."""
        if batch.classes is None:
            raise ShapeError("deml's concept discriminator needs each episode's split-wide "
                             "classes (TaskBatch.classes, set by EpisodeSampler); set "
                             "algorithm.concept_weight=0 to train without it")
        labels = torch.cat([batch.classes.gather(1, batch.support_y),
                            batch.classes.gather(1, batch.query_y)], dim=1).flatten()  # [B*M]
        if int(labels.max()) >= self.config.concept_classes:
            raise ShapeError(f"deml: class {int(labels.max())} of the split is beyond "
                             f"concept_classes={self.config.concept_classes}; set it to the "
                             "train split's class count")
        x = torch.cat([batch.support_x, batch.query_x], dim=1).flatten(0, 1)  # [B*M, *x]
        logits = self.discriminator(self.concepts(x))
        return F.cross_entropy(logits, labels), accuracy(logits.detach(), labels)
