"""Baseline and Baseline++: a new classifier fitted on the support features of a frozen backbone.

Chen, Liu, Kira, Wang, Huang. "A Closer Look at Few-shot Classification". ICLR 2019.
arXiv:1904.04232.

Training stage (`metazoo pretrain`, Sec. 3.1): a backbone f and a classifier over all base
classes, by cross-entropy. Fine-tuning stage (Sec. 3.1): f is fixed and a new classifier C is
trained on the support features z = f(x) by cross-entropy, then classifies the queries, C(f(x)):
    Baseline:    C(z) = W z + b                                       (Sec. 3.1)
    Baseline++:  C(z)_k = s * cos(z, w_k)                             (Sec. 3.2)
Settings of the authors' code (methods/baselinefinetune.py, backbone.distLinear): SGD, lr 0.01,
momentum 0.9, dampening 0.9, weight decay 1e-3, 100 passes over the shuffled support set in
mini-batches of 4 (the last one smaller; Sec. 4.1 says "100 iterations"); s = 2 for heads of at
most 200 classes; Baseline++'s class vectors are weight-normalised, w_k = g_k v_k / ||v_k||, with
a learned norm g_k (`class_norm`; False: the paper's plain cosine); PyTorch's default Linear init.
Meta-loss (the paper has none: its backbone never meta-trains): the query cross-entropy of C(f(x))
with C fitted on detached support features, so a meta-gradient reaches f through the queries only.
Deviations: support and query are embedded in one backbone pass (the episode's batch-norm
statistics, as every algorithm here; the paper's backbone keeps running statistics); the head's
init and batch order come from a generator seeded by `seed` (the code: the global generators).
Presets: baseline-omniglot-5w1s, baseline-glyphs-5w1s, baseline_pp-omniglot-5w1s,
baseline_pp-glyphs-5w1s, on the weights of `metazoo pretrain` (model.pretrained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.types import Params, Predictor

PAPER = "Chen, Liu, Kira, Wang, Huang. A Closer Look at Few-shot Classification. ICLR 2019"


@dataclass(frozen=True)
class BaselineConfig(AlgorithmConfig):
    head: Literal["linear", "cosine"] = "linear"  # Baseline: linear; Baseline++: cosine (Sec. 3.2)
    scale: float = 2.0  # cosine head's s: 2 for at most 200 classes (code: distLinear)
    class_norm: bool = True  # cosine head: learned norm g_k per class (code: WeightNorm)
    epochs: int = 100  # passes over the support set (code; Sec. 4.1: "100 iterations")
    batch_size: int = 4  # support examples per SGD step (Sec. 4.1)
    lr: float = 0.01  # SGD step size (code)
    momentum: float = 0.9  # (code)
    dampening: float = 0.9  # (code)
    weight_decay: float = 1e-3  # (code)
    seed: int = 0  # the head's initial weights and the batch order

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {self.epochs} and "
                              f"{self.batch_size}")
        if self.lr <= 0 or self.scale <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr and scale must be > 0 and weight_decay >= 0, got {self.lr}, "
                              f"{self.scale} and {self.weight_decay}")
        if not (0 <= self.momentum < 1 and 0 <= self.dampening <= 1):
            raise ConfigError(f"momentum must be in [0, 1) and dampening in [0, 1], got "
                              f"{self.momentum} and {self.dampening}")


def cosine_logits(z: Tensor, weight: Tensor, gain: Tensor | None, scale: float | Tensor
                  ) -> Tensor:
    """Baseline++'s classifier (Sec. 3.2): `scale * cos(z_i, w_k)`, with `w_k` scaled to norm
    `gain_k` when given (the code's WeightNorm). `[M, D]`, `[N, D]`, `[N]` -> `[M, N]`."""
    w = F.normalize(weight, dim=-1)  # [N, D]
    if gain is not None:
        w = gain[:, None] * w
    return scale * (F.normalize(z, dim=-1) @ w.T)


def head_logits(params: Params, z: Tensor, scale: float | Tensor) -> Tensor:
    """Logits of a head made by `init_head`: linear when it has a bias, else cosine."""
    if "bias" in params:
        return F.linear(z, params["weight"], params["bias"])
    return cosine_logits(z, params["weight"], params.get("gain"), scale)


def init_head(features: int, ways: int, head: str, class_norm: bool,
              generator: torch.Generator, dtype: torch.dtype) -> Params:
    """A new head, drawn as PyTorch's `nn.Linear` draws (uniform in +-1/sqrt(features)); a
    cosine head has no bias and, with `class_norm`, a norm per class starting at ||v_k||."""
    bound = 1.0 / math.sqrt(features)
    weight = (torch.rand(ways, features, generator=generator, dtype=dtype) * 2 - 1) * bound
    if head == "linear":
        bias = (torch.rand(ways, generator=generator, dtype=dtype) * 2 - 1) * bound
        return {"weight": weight, "bias": bias}
    return {"weight": weight, "gain": weight.norm(dim=1)} if class_norm else {"weight": weight}


def sgd_step(params: Params, grads: Params, buffers: Params, cfg: BaselineConfig
             ) -> tuple[Params, Params]:
    """One step of `torch.optim.SGD` (weight decay, momentum with dampening; the first step's
    buffer is the gradient itself), as a pure function: new parameters and momentum buffers."""
    new, bufs = {}, {}
    for k, p in params.items():
        d = torch.add(grads[k], p, alpha=cfg.weight_decay)
        bufs[k] = d if k not in buffers else torch.add(buffers[k] * cfg.momentum, d,
                                                       alpha=1 - cfg.dampening)
        new[k] = torch.add(p, bufs[k], alpha=-cfg.lr)
    return new, bufs


def head_grads(params: Params, z: Tensor, targets: Tensor, scale: float) -> Params:
    """Gradient of the mean cross-entropy of `head_logits(params, z)` against one-hot `targets`
    `[m, N]` w.r.t. `params`, in closed form: an SGD step is a few small kernels instead of an
    autograd graph (tested equal to autograd)."""
    err = (torch.softmax(head_logits(params, z, scale), -1) - targets) / z.shape[0]  # dL/dlogits
    if "bias" in params:
        return {"weight": err.T @ z, "bias": err.sum(0)}
    v = params["weight"]
    norm = v.norm(dim=1, keepdim=True)  # [N, 1]
    direction = v / norm
    grad_u = scale * (err.T @ F.normalize(z, dim=-1))  # [N, D]: w.r.t. u_k = g_k v_k / ||v_k||
    radial = (grad_u * direction).sum(1, keepdim=True)  # [N, 1]: w.r.t. g_k
    tangent = (grad_u - radial * direction) / norm  # through v_k / ||v_k||
    gain = params.get("gain")
    if gain is None:
        return {"weight": tangent}
    return {"weight": gain[:, None] * tangent, "gain": radial[:, 0]}


def fit_head(z: Tensor, y: Tensor, ways: int, cfg: BaselineConfig) -> Params:
    """The fine-tuning stage on support features `z` `[N*K, D]` (constants), labels `y`: a new
    head trained by `cfg.epochs` passes of mini-batch SGD over the shuffled support set."""
    g = torch.Generator().manual_seed(cfg.seed)
    head = init_head(z.shape[1], ways, cfg.head, cfg.class_norm, g, z.dtype)
    params = {k: v.to(z.device) for k, v in head.items()}
    n = z.shape[0]
    orders = torch.stack([torch.randperm(n, generator=g) for _ in range(cfg.epochs)])  # [E, n]
    orders = orders.to(z.device)
    targets = (y[:, None] == torch.arange(ways, device=y.device)).to(z.dtype)  # [n, N]
    zs, ts = z[orders], targets[orders]  # [E, n, D], [E, n, N]: every batch is a slice
    buffers: Params = {}
    for epoch in range(cfg.epochs):
        for start in range(0, n, cfg.batch_size):
            rows = slice(start, start + cfg.batch_size)
            grads = head_grads(params, zs[epoch, rows], ts[epoch, rows], cfg.scale)
            params, buffers = sgd_step(params, grads, buffers, cfg)
    return params


@register("baseline_pp", display="Baseline++", family="hybrid", config=BaselineConfig,
          paper=PAPER, tasks={"classification"}, defaults={"head": "cosine"})
@register("baseline", display="Baseline", family="hybrid", config=BaselineConfig, paper=PAPER,
          tasks={"classification"})
class Baseline(Algorithm):
    """Baseline (linear head) and Baseline++ (cosine head) fitted per task on frozen features."""

    config: BaselineConfig
    vmappable = False  # the head is fitted by a loop of autograd steps with a generator

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n, cfg = ways or self.ways, self.config

        def predict(query_x: Tensor) -> Tensor:
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D], one pass
            k = support_x.shape[0]
            head = fit_head(z[:k].detach(), support_y, n, cfg)
            return head_logits(head, z[k:], cfg.scale)  # [M, N]

        return predict
