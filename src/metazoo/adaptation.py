"""Public building blocks of the algorithms that adapt by an inner loop (the gradient family).

MAML, ANIL, Meta-SGD, MAML++, iMAML, CAVIA, Reptile and Meta-LSTM compose these by import:
* `supervised_loss` / `loss_and_metrics`: the task loss (cross-entropy for labels, MSE for
  targets, Finn et al. 2017 Sec. 3) and what is logged of it;
* `first_order_now`: the inner gradients are constants unless a meta-gradient is wanted
  (training, with autograd on); evaluation then builds no second-order graph;
* `inner_steps_now`: training or evaluation step count;
* `support_loss`: the support loss as a function of the parameters, in the CPU layout that suits
  its derivative order;
* `predictor`: the adapted network as a predictor, with transductive or non-transductive batch
  norm (`metazoo.functional`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.functional import SECOND_ORDER_LAYOUT, call
from metazoo.metrics import accuracy
from metazoo.types import Params, Predictor

BNMode = Literal["transductive", "non_transductive"]


def supervised_loss(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy for labels `[M]`, MSE for targets `[M, d_out]`."""
    return F.mse_loss(out, y) if y.is_floating_point() else F.cross_entropy(out, y)


def metrics_of(loss: Tensor, out: Tensor, y: Tensor) -> dict[str, Tensor]:
    """What is logged of a task: `{"acc": accuracy}` for labels, `{"mse": loss}` for targets."""
    if y.is_floating_point():
        return {"mse": loss.detach()}
    return {"acc": accuracy(out.detach(), y)}


def loss_and_metrics(out: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """`supervised_loss(out, y)` and `metrics_of` it."""
    loss = supervised_loss(out, y)
    return loss, metrics_of(loss, out, y)


def first_order_now(module: nn.Module, first_order: bool) -> bool:
    """Whether inner gradients are constants now: asked (`first_order`), or no meta-gradient is
    wanted (evaluation, or autograd off), where the second-order graph would be wasted."""
    return first_order or not (module.training and torch.is_grad_enabled())


def inner_steps_now(module: nn.Module, steps: int, eval_steps: int | None) -> int:
    """`steps` in training; `eval_steps` (default `steps`) in evaluation."""
    return steps if module.training or eval_steps is None else eval_steps


def support_loss(net: nn.Module, support_x: Tensor, support_y: Tensor, *, first_order: bool,
                 precise: bool = False) -> Callable[[Params], Tensor]:
    """`params -> supervised_loss(net with params on support_x, support_y)`.

    Second order, the passes run in `SECOND_ORDER_LAYOUT` (batch norm's double backward is
    ~2x faster there on CPU); first order, in the backbone's default layout, unless `precise`:
    torch 2.13's CPU batch-norm kernel for channels-last inputs keeps ~5e-6 relative precision
    where NCHW keeps ~5e-8 (`tests/test_functional.py`), which costs nothing where SGD noise is
    larger, but an inner loop whose solution is amplified (iMAML's implicit gradient) asks for
    NCHW.
    """
    layout = None if first_order and not precise else SECOND_ORDER_LAYOUT
    return lambda params: supervised_loss(call(net, params, support_x, memory_format=layout),
                                          support_y)


def detached_unless_grad(params: Params) -> Params:
    """`params` detached when autograd is off (evaluation): a predictor keeps no graph alive."""
    if torch.is_grad_enabled():
        return params
    return {k: v.detach() for k, v in params.items()}


def predictor(net: nn.Module, params: Params, support_x: Tensor, bn_mode: BNMode, *,
              precise: bool = False) -> Predictor:
    """`query_x -> net(query_x)` at `params`.

    "transductive": the query batch is normalised with its own statistics; "non_transductive":
    `[support; query]` runs once and the support rows give the statistics, so each query's
    output depends on the support set and itself alone. `precise`: in NCHW (`support_loss`).
    """
    layout = SECOND_ORDER_LAYOUT if precise else None
    if bn_mode == "transductive":
        return lambda query_x: call(net, params, query_x, memory_format=layout)
    n = support_x.shape[0]
    return lambda query_x: call(net, params, torch.cat([support_x, query_x]),
                                stats_rows=n, memory_format=layout)[n:]
