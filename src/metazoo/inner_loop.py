"""The differentiable inner loop of the gradient-based family: plain SGD on a task's loss.

One step is MAML's Eq. 1 (Finn et al. 2017), theta' = theta - alpha * grad L(theta), with alpha a
scalar (MAML), a per-parameter tensor (Meta-SGD, Li et al. 2017) or a per-step value
(MAML++, Antoniou et al. 2019). Second order (default) keeps the graph of every gradient, so
the meta-gradient flows through the Hessian-vector products; first order treats each inner
gradient as a constant, so d theta' / d theta = I (FOMAML, Sec. 5.2 of Finn et al.).

Gradients are taken with `torch.autograd.grad` in ordinary (eager) code and with
`torch.func.grad` when the call runs inside a `torch.func` transform such as `torch.vmap`,
where `torch.autograd.grad` cannot see the batched tensors. Both give the same numbers; the first
avoids functorch's per-op overhead in the common loop case.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal, overload

import torch
from torch import Tensor
from torch._C._functorch import maybe_current_level

from metazoo.errors import ConfigError
from metazoo.types import Params

LearningRate = float | Tensor | Params
"""A scalar (float or 0-d tensor) or one tensor per parameter, broadcastable to it."""


def grads(loss_fn: Callable[[Params], Tensor], params: Params, first_order: bool) -> Params:
    """Gradient of `loss_fn` at `params` by name; with its graph unless `first_order`."""
    if maybe_current_level() is not None:  # inside vmap/grad: only torch.func sees the batch
        if not first_order:
            return torch.func.grad(loss_fn)(params)
        # constants: also w.r.t. tensors that loss_fn captures (ANIL's features, CAVIA's theta),
        # as the eager branch's gradients are
        gs = torch.func.grad(loss_fn)({k: v.detach() for k, v in params.items()})
        return {k: g.detach() for k, g in gs.items()}
    # first order: constants; second order: only tensors outside any graph need a fresh leaf
    params = {k: v.detach().requires_grad_() if first_order or not v.requires_grad else v
              for k, v in params.items()}
    with torch.enable_grad():
        loss = loss_fn(params)
        gs = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    return dict(zip(params, gs, strict=True))


def _step_lr(lr: LearningRate | Sequence[LearningRate], step: int, steps: int) -> LearningRate:
    if isinstance(lr, Sequence):
        if len(lr) != steps:
            raise ConfigError(f"a per-step learning rate needs {steps} values, got {len(lr)}")
        return lr[step]
    return lr


@overload
def sgd_steps(loss_fn: Callable[[Params], Tensor], params: Params, *, steps: int,
              lr: LearningRate | Sequence[LearningRate], first_order: bool,
              keep_trajectory: Literal[False] = ...) -> Params: ...


@overload
def sgd_steps(loss_fn: Callable[[Params], Tensor], params: Params, *, steps: int,
              lr: LearningRate | Sequence[LearningRate], first_order: bool,
              keep_trajectory: Literal[True]) -> list[Params]: ...


def sgd_steps(loss_fn: Callable[[Params], Tensor], params: Params, *, steps: int,
              lr: LearningRate | Sequence[LearningRate], first_order: bool,
              keep_trajectory: bool = False) -> Params | list[Params]:
    """`steps` differentiable SGD steps on `loss_fn`, starting from `params`.

    Args:
        loss_fn: the task's inner loss (e.g. support cross-entropy) as a function of the params.
        params: the starting point (the meta-parameters); not modified.
        steps: number of SGD steps (0 returns `params`).
        lr: step size: a float or 0-d tensor; a dict with one tensor per name of `params`
            (Meta-SGD; names missing from it are not updated); or a sequence of `steps` such
            values, one per step (MAML++).
        first_order: treat the inner gradients as constants (FOMAML); otherwise keep their graph
            so the meta-gradient includes the second-order terms.
        keep_trajectory: return every iterate instead of the last.

    Returns:
        The adapted parameters, or with `keep_trajectory` the list `[params, step 1, ...,
        step steps]` of length `steps + 1`.
    """
    if steps < 0:
        raise ConfigError(f"inner steps must be >= 0, got {steps}")
    trajectory = [params]
    for t in range(steps):
        alpha = _step_lr(lr, t, steps)
        g = grads(loss_fn, params, first_order)
        if isinstance(alpha, dict):
            params = {k: v - alpha[k] * g[k] if k in alpha else v for k, v in params.items()}
        elif isinstance(alpha, float | int):  # one fused kernel per tensor instead of two
            params = {k: torch.add(v, g[k], alpha=-alpha) for k, v in params.items()}
        else:
            params = {k: v - alpha * g[k] for k, v in params.items()}
        trajectory.append(params)
    return trajectory if keep_trajectory else params


def mini_batch_orders(n: int, steps: int, batch: int, tasks: int, seed: str) -> Tensor:
    """Support indices `[tasks, steps, batch]`: per task, shuffled passes over `range(n)` cut
    into consecutive batches, drawn by Python's `random.Random(seed)`: the same on every device
    and torch version, and independent of torch's global generator."""
    rng = random.Random(seed)
    passes = -(-steps * batch // n)  # ceil: enough passes for steps * batch indices
    rows = []
    for _ in range(tasks):
        stream: list[int] = []
        for _ in range(passes):
            order = list(range(n))
            rng.shuffle(order)
            stream += order
        rows.append(stream[:steps * batch])
    return torch.tensor(rows, dtype=torch.long).view(tasks, steps, batch)
