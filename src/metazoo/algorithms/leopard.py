"""LEOPARD: a softmax generated from the support set, then learned per-layer inner steps.

Bansal, Jha, McCallum. "Learning to Few-Shot Learn Across Diverse Natural Language
Classification Tasks". COLING 2020. arXiv:1911.03863.

The network is an encoder f_theta, an MLP h_phi on its output and a softmax layer whose
parameters are generated per task, so one model serves any number of classes. For class n, the
support examples C^n give (Sec. 3, the generator)
    [w^n; b^n] = 1/|C^n| sum_{x in C^n} g_psi(f_theta(x)),     g_psi an MLP,
    p(y = n | x) = softmax_n(w^n . h_phi(f_theta(x)) + b^n).
The task-specific parameters Phi = {the encoder's last layers, phi, W, b} then take G SGD steps
on the support loss, Phi <- Phi - alpha_l grad_Phi L_support, with one learned rate alpha_l per
layer l; the rest of theta and psi stay fixed in the inner loop. The meta-loss is the query
loss at the adapted Phi, first order (inner gradients are constants; the meta-gradient reaches
psi through the generated W, b and alpha through the steps); theta, psi, phi and alpha are
meta-learned. Settings (authors' code iesl/metanlp, run_classifier_pretrain.py and its README
command): g and h 2 layers with tanh, width d/2, 256-dim label space; alpha starts at 1e-5;
7 inner steps; each inner gradient clipped to global norm 1.
Deviations: the paper's encoder is BERT, which cannot be downloaded here: any registered
backbone serves, its last `adapt_blocks` blocks (by parameter name, e.g. conv4's `features.3`)
being the task-specific layers. The code generates from one support batch and adapts on the
others; with one shot per class the whole support set does both. g and h keep torch's
initialisation, not the code's N(0, 0.02) (BERT's), which leaves W h(x) near its saddle at 0 on
a small backbone (glyphs, 60 meta-steps: 0.38 accuracy against 0.62). No dropout; the rates are
not clipped to [1e-8, 1]. Presets: leopard-omniglot-5w1s, leopard-glyphs-5w1s.
"""

from __future__ import annotations

import itertools
import re
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
from metazoo.functional import SECOND_ORDER_LAYOUT, call, params_of, strip_prefix
from metazoo.inner_loop import grads
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class LEOPARDConfig(AlgorithmConfig):
    inner_lr: float = 1e-5  # every alpha_l's start (code: --train_lr=1e-05, a rate for BERT)
    inner_steps: int = 7  # G in training (code: 8 support batches, 1 generates, 7 steps)
    eval_inner_steps: int | None = None  # at evaluation; None = inner_steps
    first_order: bool = True  # the paper's first-order approximation (code: --stop_grad=true)
    adapt_blocks: int = 1  # the backbone's last blocks in Phi (BERT layers > v in the paper)
    label_dim: int = 256  # size of h_phi's output and of w^n (code: --label_emb_size=256)
    mlp_layers: int = 2  # layers of g_psi and h_phi, tanh between (code: --output_layers=2)
    mlp_hidden: int | None = None  # their hidden width; None = feature_dim // 2 (code)
    inner_grad_clip: float | None = 1.0  # global norm of an inner gradient (code: 1.0)
    bn_mode: BNMode = "transductive"  # batch statistics of each pass, as MAML

    def validate(self) -> None:
        if not self.inner_lr > 0:
            raise ConfigError(f"leopard inner_lr must be > 0, got {self.inner_lr}")
        if self.inner_steps < 0 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 0):
            raise ConfigError("leopard inner_steps and eval_inner_steps must be >= 0, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")
        if self.adapt_blocks < 0:
            raise ConfigError(f"leopard adapt_blocks must be >= 0, got {self.adapt_blocks}")
        if min(self.label_dim, self.mlp_layers, 1 if self.mlp_hidden is None
               else self.mlp_hidden) < 1:
            raise ConfigError("leopard label_dim, mlp_layers and mlp_hidden must be >= 1, got "
                              f"{self.label_dim}, {self.mlp_layers}, {self.mlp_hidden}")
        if self.inner_grad_clip is not None and not self.inner_grad_clip > 0:
            raise ConfigError(f"leopard inner_grad_clip must be > 0 or null, got "
                              f"{self.inner_grad_clip}")


def backbone_blocks(backbone: nn.Module) -> list[list[str]]:
    """The backbone's parameter names grouped into blocks, in order: a block is the name up to
    its first numeric part (conv4 `features.3`, the MLP `layers.2`, ResNet-12 `blocks.1`)."""
    blocks: dict[str, list[str]] = {}
    for name, _ in backbone.named_parameters():
        m = re.match(r"(.*?\.\d+)\.", name)
        blocks.setdefault(m.group(1) if m else name.rsplit(".", 1)[0], []).append(name)
    return list(blocks.values())


def _mlp(layers: nn.ModuleList, params: Params, prefix: str, x: Tensor) -> Tensor:
    """Linear layers of `layers` at `params[prefix + "i.weight"]`, tanh between."""
    for i in range(len(layers)):
        x = F.linear(x, params[f"{prefix}{i}.weight"], params[f"{prefix}{i}.bias"])
        x = torch.tanh(x) if i < len(layers) - 1 else x
    return x


@register("leopard", display="LEOPARD", family="hybrid", config=LEOPARDConfig,
          paper="Bansal, Jha, McCallum. Learning to Few-Shot Learn Across Diverse Natural "
                "Language Classification Tasks. COLING 2020", tasks={"classification"})
class LEOPARD(Algorithm):
    """LEOPARD: generated softmax parameters, then first-order steps with per-layer rates."""

    config: LEOPARDConfig
    adapts_with_gradients = True  # the softmax is generated per task: any N is served

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        blocks = backbone_blocks(backbone)
        if cfg.adapt_blocks > len(blocks):
            raise ConfigError(f"leopard adapt_blocks={cfg.adapt_blocks} exceeds the backbone's "
                              f"{len(blocks)} blocks; use 0 to {len(blocks)}")
        d = int(backbone.feature_dim)  # type: ignore[arg-type]
        hidden = cfg.mlp_hidden or max(1, d // 2)

        def mlp(out: int) -> nn.ModuleList:  # d -> hidden -> ... -> out, torch's init
            widths = [d] + [hidden] * (cfg.mlp_layers - 1) + [out]
            return nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

        self.h = mlp(cfg.label_dim)  # h_phi, task-specific
        self.g = mlp(cfg.label_dim + 1)  # g_psi -> [w; b], fixed in the inner loop
        # one learned rate per layer of Phi: backbone blocks, h's layers, the softmax (W, b)
        task_blocks = blocks[len(blocks) - cfg.adapt_blocks:]
        groups = [[f"backbone.{n}" for n in b] for b in task_blocks]
        groups += [[f"h.{i}.weight", f"h.{i}.bias"] for i in range(cfg.mlp_layers)]
        groups += [["softmax.weight", "softmax.bias"]]
        self.layer_of = {name: i for i, group in enumerate(groups) for name in group}
        self.inner_lrs = nn.Parameter(torch.full((len(groups),), cfg.inner_lr))

    def features(self, params: Params, x: Tensor, **options: object) -> Tensor:
        """f_theta at `params["backbone.*"]`: `[M, *x]` -> `[M, D]`."""
        return call(self.backbone, strip_prefix(params, "backbone."), x, **options)

    def classify(self, params: Params, z: Tensor) -> Tensor:
        """Logits `W h_phi(z) + b` `[M, N]` from features `z` `[M, D]`."""
        return F.linear(_mlp(self.h, params, "h.", z), params["softmax.weight"],
                        params["softmax.bias"])

    def generate_softmax(self, z: Tensor, support_y: Tensor, ways: int) -> tuple[Tensor, Tensor]:
        """W `[N, label_dim]` and b `[N]`: class means of g_psi(f_theta(x)) over the support."""
        wb = prototypes(_mlp(self.g, params_of(self), "g.", z), support_y, ways)  # [N, L + 1]
        return wb[:, :-1], wb[:, -1]

    def inner_loop(self, support_x: Tensor, support_y: Tensor, ways: int, steps: int
                   ) -> Params:
        """All parameters the prediction uses, Phi after `steps` steps with rates alpha_l."""
        cfg = self.config
        first_order = first_order_now(self, cfg.first_order)
        params = {k: v for k, v in params_of(self).items() if not k.startswith(("g.", "inner"))}
        z = self.features(params, support_x)  # [N*K, D] at the meta-learned theta
        w, b = self.generate_softmax(z, support_y, ways)
        # aliases, so that second order the inner gradient w.r.t. theta's top blocks is the
        # partial one (W, b held fixed), not the total one through W(theta), b(theta)
        task = {k: v.view_as(v) for k, v in params.items() if k in self.layer_of}
        task.update({"softmax.weight": w, "softmax.bias": b})
        fixed = {k: v for k, v in params.items() if k not in task}
        layout = None if first_order else SECOND_ORDER_LAYOUT
        body_adapts = any(k.startswith("backbone.") for k in task)
        z_inner = z.detach() if first_order else z  # the inner gradients are constants then

        def loss(p: Params) -> Tensor:
            zs = (self.features({**fixed, **p}, support_x, memory_format=layout)
                  if body_adapts else z_inner)  # frozen body: its features once
            return supervised_loss(self.classify(p, zs), support_y)

        for _ in range(steps):
            g = grads(loss, task, first_order)
            if cfg.inner_grad_clip is not None:  # tf.clip_by_global_norm
                norm = torch.stack([(v * v).sum() for v in g.values()]).sum().sqrt()
                scale = cfg.inner_grad_clip / torch.clamp(norm, min=cfg.inner_grad_clip)
                g = {k: v * scale for k, v in g.items()}
            task = {k: v - self.inner_lrs[self.layer_of[k]] * g[k] for k, v in task.items()}
        return {**fixed, **task}

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        cfg = self.config
        steps = inner_steps_now(self, cfg.inner_steps, cfg.eval_inner_steps)
        params = detached_unless_grad(self.inner_loop(support_x, support_y, ways or self.ways,
                                                      steps))
        if cfg.bn_mode == "transductive":
            return lambda query_x: self.classify(params, self.features(params, query_x))
        k = support_x.shape[0]  # the query rows are normalised with the support's statistics
        return lambda query_x: self.classify(
            params, self.features(params, torch.cat([support_x, query_x]), stats_rows=k)[k:])
