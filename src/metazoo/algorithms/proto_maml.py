"""Proto-MAML: MAML whose linear head starts at the layer equivalent to a Prototypical Network.

Triantafillou, Zhu, Dumoulin, Lamblin, Evci, Xu, Goroshin, Gelada, Swersky, Manzagol,
Larochelle. "Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few Examples".
ICLR 2020. arXiv:1903.03096 (the "Proto-MAML" paragraph of its approaches section).

ProtoNet's logits -||f(x) - c_k||^2 (Snell et al. Eq. 2, prototypes c_k of their Eq. 1) equal
2 c_k . f(x) - ||c_k||^2 up to -||f(x)||^2, a constant per query: a linear layer with
    W_k = 2 c_k,   b_k = -||c_k||^2.
Proto-MAML starts every task's head there (c_k from the support embeddings at the meta-learned
theta), then takes MAML's inner SGD steps (Finn et al. Eq. 1) on the support loss, updating the
head and the backbone; the meta-loss is the query loss at the adapted parameters. First order
by default ("fo-Proto-MAML", the paper's variant): the inner gradients are constants, but the
meta-gradient still flows through the prototypes into the backbone (W_0 and b_0 are functions
of theta). `first_order=False` keeps the second-order terms. With zero steps it is ProtoNet.
Settings (reference code google-research/meta-dataset, gin/learners/maml_init_with_proto_
config.gin, optimization_learners.py MAMLLearner): alpha 0.01, 5 steps, first order, batch-norm
scale and shift not adapted (`adapt_batch_norm = False`), queries normalised with the support
set's statistics (`transductive_batch_norm = False`); per-setting best values in the presets.
Deviations: no weight decay and no padding of the head to a maximum way (the head has N rows).
Presets: proto_maml-omniglot-5w1s, proto_maml-miniimagenet-5w1s, proto_maml-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import (
    BNMode,
    detached_unless_grad,
    first_order_now,
    inner_steps_now,
    supervised_loss,
)
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.protonet import prototypes
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import SECOND_ORDER_LAYOUT, BatchNorm, call, strip_prefix
from metazoo.inner_loop import sgd_steps
from metazoo.types import Params, Predictor

NORM_LAYERS = (BatchNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class ProtoMAMLConfig(AlgorithmConfig):
    inner_lr: float = 0.01  # alpha (MAMLLearner.alpha = 0.01, maml_init_with_proto_config.gin)
    inner_steps: int = 5  # inner steps in training (num_update_steps = 5, same file)
    eval_inner_steps: int | None = None  # at evaluation; None = inner_steps (+0 additional)
    first_order: bool = True  # fo-Proto-MAML (first_order = True in every Proto-MAML gin)
    adapt_bn: bool = False  # inner steps on batch-norm scale/shift (adapt_batch_norm = False)
    bn_mode: BNMode = "non_transductive"  # support statistics (transductive_batch_norm = False)

    def validate(self) -> None:
        if not self.inner_lr > 0:
            raise ConfigError(f"proto_maml inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 0 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 0):
            raise ConfigError("proto_maml inner_steps and eval_inner_steps must be >= 0 (0 is "
                              f"ProtoNet), got {self.inner_steps} and {self.eval_inner_steps}")


@register("proto_maml", display="Proto-MAML", family="hybrid", config=ProtoMAMLConfig,
          paper="Triantafillou et al. Meta-Dataset: A Dataset of Datasets for Learning to Learn "
                "from Few Examples. ICLR 2020", tasks={"classification"})
class ProtoMAML(Algorithm):
    """Proto-MAML: a head initialised from the prototypes, then MAML steps on head and body."""

    config: ProtoMAMLConfig
    adapts_with_gradients = True  # no head is meta-learned, so any N is served

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        # batch-norm scale/shift: meta-learned, but kept fixed by the inner steps unless adapt_bn
        self.fixed_in_inner_loop = frozenset(
            f"backbone.{m}.{n}" for m, mod in backbone.named_modules()
            if isinstance(mod, NORM_LAYERS) and not self.config.adapt_bn
            for n, _ in mod.named_parameters(recurse=False))

    def logits(self, params: Params, x: Tensor, **options: object) -> Tensor:
        """The backbone at `params["backbone.*"]`, then the head `params["head.weight"]` `[N, D]`
        and `params["head.bias"]` `[N]`: `[M, *x]` -> `[M, N]`; `options` go to the backbone."""
        z = call(self.backbone, strip_prefix(params, "backbone."), x, **options)
        return F.linear(z, params["head.weight"], params["head.bias"])

    def start_params(self, support_x: Tensor, support_y: Tensor, ways: int) -> Params:
        """theta and the prototype head W_k = 2 c_k, b_k = -||c_k||^2, functions of theta."""
        c = prototypes(self.backbone(support_x), support_y, ways)  # [N, D]
        # aliases: the inner gradient w.r.t. theta is then the partial one (W_0 held fixed),
        # as under vmap, not the total one through W_0(theta) that autograd would sum
        body = {f"backbone.{k}": v.view_as(v) for k, v in self.backbone.named_parameters()}
        return {**body, "head.weight": 2 * c, "head.bias": -(c * c).sum(-1)}

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` SGD steps (MAML's Eq. 1) on the support loss from `params`."""
        first_order = first_order_now(self, self.config.first_order)
        layout = None if first_order else SECOND_ORDER_LAYOUT  # as adaptation.support_loss
        fixed = {k: v for k, v in params.items() if k in self.fixed_in_inner_loop}

        def loss(p: Params) -> Tensor:
            out = self.logits({**fixed, **p}, support_x, memory_format=layout)
            return supervised_loss(out, support_y)

        adapted = sgd_steps(loss, {k: v for k, v in params.items() if k not in fixed},
                            steps=steps, lr=self.config.inner_lr, first_order=first_order)
        return {**fixed, **adapted}

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways
        cfg = self.config
        steps = inner_steps_now(self, cfg.inner_steps, cfg.eval_inner_steps)
        params = self.inner_loop(self.start_params(support_x, support_y, n), support_x,
                                 support_y, steps)
        params = detached_unless_grad(params)
        if cfg.bn_mode == "transductive":
            return lambda query_x: self.logits(params, query_x)
        k = support_x.shape[0]  # the query rows are normalised with the support's statistics
        return lambda query_x: self.logits(params, torch.cat([support_x, query_x]),
                                           stats_rows=k)[k:]
