"""Adam as a pure function: one step from (parameters, gradients, moments, step count).

Kingma, Ba. "Adam: A Method for Stochastic Optimization". ICLR 2015. Alg. 1.

For inner loops that optimise with Adam (Reptile's reference code) on parameter dicts, where
`torch.optim.Adam` (which mutates leaf tensors) does not fit: the step is differentiable and
returns new tensors. It computes what `torch.optim.Adam` computes (tested step by step):
    m_t = b1 m + (1 - b1) g,   v_t = b2 v + (1 - b2) g^2,
    theta_t = theta - lr / (1 - b1^t) * m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metazoo.types import Params

ADAM_EPS = 1e-8  # TensorFlow's and PyTorch's default


@dataclass(frozen=True)
class AdamState:
    """Adam's first and second moments per parameter and the steps taken (for bias correction)."""

    m: Params
    v: Params
    t: int


def adam_step(params: Params, g: Params, m: Params, v: Params, t: int, lr: float,
              beta1: float, beta2: float) -> tuple[Params, Params, Params]:
    """Step `t` (1-based) of Adam (Kingma & Ba 2015, Alg. 1) as `torch.optim.Adam` computes it:
    new params, first and second moments."""
    m = {k: torch.lerp(m[k], g[k], 1 - beta1) for k in params}
    v = {k: torch.addcmul(v[k] * beta2, g[k], g[k], value=1 - beta2) for k in params}
    step, root = lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t)
    new = {k: p - step * m[k] / (v[k].sqrt() / root + ADAM_EPS) for k, p in params.items()}
    return new, m, v
