"""Meta-Learner LSTM (Meta-LSTM).

Ravi, Larochelle. "Optimization as a Model for Few-Shot Learning". ICLR 2017.
OpenReview rJY0-Kcll.

The learner (backbone + linear head) is trained on a task's support set by an LSTM whose cell
state IS the learner's parameter vector. Gradient descent (Eq. 1) is the special case f_t = 1,
i_t = alpha of the cell update (Eq. 2), with the candidate cell state c~_t = -grad_t:
    c_t = f_t o c_{t-1} + i_t o c~_t,                               theta_t = c_t
    i_t = sigmoid(W_I [grad_t, L_t, theta_{t-1}, i_{t-1}] + b_I)      (Eq. 3, a learning rate)
    f_t = sigmoid(W_F [grad_t, L_t, theta_{t-1}, f_{t-1}] + b_F)      (Eq. 4, a decay)
and c_0 = the learner's initial parameters, meta-learned. The LSTM runs coordinate-wise, its
weights shared by every scalar parameter of the learner (batch norm's included); a first LSTM
(hidden 20) reads each coordinate's preprocessed (loss, gradient), in place of [grad_t, L_t]
above. Preprocessing (Andrychowicz et al. 2016, p = 10): x -> (log|x| / p, sign x) if
|x| >= e^-p, else (-1, e^p x). Gradient and loss inputs are constants (gradient independence
assumption): no second derivatives. Algorithm 1: theta_0 = c_0, T updates on the support set,
the query loss of theta_T is the meta-loss. Initialisation (ranges from the authors' code):
weights U(-0.01, 0.01), b_F ~ U(4, 5), b_I ~ U(-5, -4): it starts as slow SGD. Batch norm:
batch statistics while meta-training; at meta-test the query uses the support's statistics.
Deviations: every update uses the whole support set; the meta-test query uses the support
statistics at theta_T, not a running average; the gates read the previous gate values, not
their pre-activations as the authors' code; the learner gradient is that of the mean loss.
Details: docs/algorithms.md.
Presets: meta_lstm-omniglot-5w1s, meta_lstm-omniglot-5w5s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import predictor, supervised_loss
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import LinearHeadAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import call, params_of
from metazoo.torch_compat import in_functorch_transform
from metazoo.types import Params, Predictor

QueryBN = Literal["support", "batch"]


@dataclass(frozen=True)
class MetaLSTMConfig(AlgorithmConfig):
    inner_steps: int = 15  # T updates, whole support each; authors' Omniglot 5-way 1-shot code
    hidden_size: int = 20  # first-layer LSTM units (experiment details; authors' nHidden)
    preprocess_p: float = 10.0  # p of the log/sign preprocessing (Andrychowicz et al. 2016)
    forget_bias_init: tuple[float, float] = (4.0, 5.0)  # b_F ~ U(4, 5): f ~ 1 (authors' code)
    input_bias_init: tuple[float, float] = (-5.0, -4.0)  # b_I ~ U(-5, -4): i small (idem)
    query_bn: QueryBN = "support"  # at evaluation: support's statistics (paper) or the query's

    def validate(self) -> None:
        if self.inner_steps < 1:
            raise ConfigError(f"meta_lstm inner_steps must be >= 1, got {self.inner_steps}")
        if self.hidden_size < 1:
            raise ConfigError(f"meta_lstm hidden_size must be >= 1, got {self.hidden_size}")
        if self.preprocess_p <= 0:
            raise ConfigError(f"meta_lstm preprocess_p must be > 0, got {self.preprocess_p}")
        for name in ("forget_bias_init", "input_bias_init"):
            low_high = getattr(self, name)
            if low_high[0] > low_high[1]:
                raise ConfigError(f"meta_lstm {name} must be [low, high] with low <= high, "
                                  f"got {list(low_high)}")


def preprocess(x: Tensor, p: float) -> Tensor:
    """Andrychowicz et al.'s preprocessing, `[...]` -> `[..., 2]` (a constant: no gradient)."""
    big = x.abs() >= math.exp(-p)
    log_part = torch.where(big, x.abs().clamp_min(math.exp(-p)).log() / p, -1.0)
    sign_part = torch.where(big, torch.sign(x), math.exp(p) * x)
    return torch.stack([log_part, sign_part], -1)


def _grad_and_loss(loss_fn: Callable[[Params], Tensor], params: Params) -> tuple[Params, Tensor]:
    """Gradient and value of `loss_fn` at `params` detached (gradient independence)."""
    params = {k: v.detach() for k, v in params.items()}
    if in_functorch_transform():  # under vmap only torch.func sees the task's batch
        g, loss = torch.func.grad_and_value(loss_fn)(params)
        return g, loss.detach()
    params = {k: v.requires_grad_() for k, v in params.items()}
    with torch.enable_grad():
        loss = loss_fn(params)
        gs = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, gs, strict=True)), loss.detach()


@register("meta_lstm", display="Meta-LSTM", family="gradient", config=MetaLSTMConfig,
          paper="Ravi, Larochelle. Optimization as a Model for Few-Shot Learning. ICLR 2017",
          tasks={"classification", "regression"})
class MetaLSTM(LinearHeadAlgorithm):
    """An LSTM that meta-learns the learner's initialisation (c_0) and its update rule."""

    config: MetaLSTMConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        h = cfg.hidden_size
        # first layer: an ordinary LSTM cell over [preprocessed loss (2), gradient (2)]
        self.lstm_weight = nn.Parameter(torch.empty(4 * h, 4 + h).uniform_(-0.01, 0.01))
        self.lstm_bias = nn.Parameter(torch.empty(4 * h).uniform_(-0.01, 0.01))
        # second layer: the gates of Eq. 3-4 over [h, theta_{t-1}, gate_{t-1}]
        self.forget_weight = nn.Parameter(torch.empty(h + 2).uniform_(-0.01, 0.01))
        self.input_weight = nn.Parameter(torch.empty(h + 2).uniform_(-0.01, 0.01))
        self.forget_bias = nn.Parameter(torch.empty(1).uniform_(*cfg.forget_bias_init))
        self.input_bias = nn.Parameter(torch.empty(1).uniform_(*cfg.input_bias_init))


    def learner_params(self) -> Params:
        """c_0: the learner's parameters (backbone and head), by name."""
        return {k: v for k, v in params_of(self).items() if k.startswith(("backbone.", "head."))}

    def _update(self, theta: Tensor, grad: Tensor, loss: Tensor,
                state: tuple[Tensor, Tensor, Tensor, Tensor]
                ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """One step of the 2-layer meta-learner for all N coordinates (`theta`, `grad`: `[N]`)."""
        h, c, f, i = state  # [N, H], [N, H], [N], [N]
        p = self.config.preprocess_p
        x = torch.cat([preprocess(loss, p).expand(theta.shape[0], 2), preprocess(grad, p)], 1)
        gates = F.linear(torch.cat([x, h], 1), self.lstm_weight, self.lstm_bias)  # [N, 4H]
        g_i, g_f, g_c, g_o = gates.chunk(4, 1)
        c = torch.sigmoid(g_f) * c + torch.sigmoid(g_i) * torch.tanh(g_c)
        h = torch.sigmoid(g_o) * torch.tanh(c)
        f = torch.sigmoid(torch.cat([h, theta[:, None], f[:, None]], 1) @ self.forget_weight
                          + self.forget_bias)  # Eq. 4, [N]
        i = torch.sigmoid(torch.cat([h, theta[:, None], i[:, None]], 1) @ self.input_weight
                          + self.input_bias)  # Eq. 3, [N]
        return f * theta - i * grad, (h, c, f, i)  # Eq. 2 with c~_t = -grad_t

    def adapted_params(self, support_x: Tensor, support_y: Tensor, steps: int | None = None
                       ) -> Params:
        """theta_T after `steps` (default T) meta-learner updates on the support set."""
        start = self.learner_params()
        shapes = {k: v.shape for k, v in start.items()}
        sizes = [v.numel() for v in start.values()]

        def unflatten(flat: Tensor) -> Params:
            return {k: t.reshape(shapes[k]) for k, t in zip(shapes, flat.split(sizes), strict=True)}

        theta = torch.cat([v.reshape(-1) for v in start.values()])  # c_0, [N]
        n, hidden = theta.shape[0], self.config.hidden_size
        zeros = theta.new_zeros(n, hidden)
        state = (zeros, zeros, theta.new_zeros(n), theta.new_zeros(n))
        for _ in range(self.config.inner_steps if steps is None else steps):
            grads, loss = _grad_and_loss(
                lambda q: supervised_loss(call(self, q, support_x), support_y), unflatten(theta))
            grad = torch.cat([grads[k].reshape(-1) for k in shapes])  # [N]
            theta, state = self._update(theta, grad, loss, state)
        return unflatten(theta)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        params = self.adapted_params(support_x, support_y)
        # meta-test: the query normalised with the support's statistics (the paper)
        support_stats = not self.training and self.config.query_bn == "support"
        return predictor(self, params, support_x,
                         "non_transductive" if support_stats else "transductive")
