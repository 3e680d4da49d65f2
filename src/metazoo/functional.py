"""Functional helpers: parameters as dicts, calls with given parameters, and batch norm.

Parameters travel as `dict[str, Tensor]` (`Params`) and a module runs with them through
`call(module, params, x)` (`torch.func.functional_call`), so adaptation never writes to a module.

Batch norm. torch 2.13's training-mode `F.batch_norm` gives wrong second-order gradients under
`torch.vmap` (see `tests/test_functional.py`); `batch_norm` here is written from sums and `rsqrt`,
whose derivatives vmap handles exactly. It keeps no running statistics: every call
normalises with statistics computed from rows of its own input, in one of two modes:

* transductive (`stats_rows=None`, the default): the statistics of the whole batch at hand, so the
  support set and the query set are each normalised with their own statistics, as in MAML's code
  and learn2learn. A query's prediction then depends on the other queries of its batch.
* non-transductive (`stats_rows=n`): the input is `[support; query]` concatenated and only its
  first `n` rows (the support set) give the statistics, so a query's prediction depends on the
  support set and on itself alone.

`call(module, params, x, stats_rows=n)` selects the mode for every `BatchNorm` inside `module`. The
row count reaches nested layers through a context variable that is set for the duration of that
call only and reset after it (also on error): no module or global state survives the call, and
backbones need no extra forward argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TypeVar
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._C._functorch import maybe_current_level
from torch.func import functional_call

from metazoo.types import Params

T = TypeVar("T")
_STATS_ROWS: ContextVar[int | None] = ContextVar("metazoo_bn_stats_rows", default=None)
_CPU_LAYOUT: ContextVar[torch.memory_format] = ContextVar("metazoo_cpu_layout",
                                                          default=torch.channels_last)
_TIED: WeakKeyDictionary[nn.Module, bool] = WeakKeyDictionary()
_FORWARD_WITH: dict[type, bool] = {}


def params_of(module: nn.Module) -> Params:
    """The module's parameters as a name -> tensor dict (the tensors themselves, not copies)."""
    return dict(module.named_parameters())


def split_params(params: Params, prefix: str) -> tuple[Params, Params]:
    """Split `params` into those whose name starts with `prefix` and the rest.

    ANIL adapts only the head: `head, body = split_params(params, "head.")`.
    """
    inside = {k: v for k, v in params.items() if k.startswith(prefix)}
    return inside, {k: v for k, v in params.items() if not k.startswith(prefix)}


@contextmanager
def _scoped(var: ContextVar[T], value: T) -> Iterator[None]:
    """`var` is `value` within the block and its old value after it (also on error)."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def statistics_rows(rows: int | None) -> AbstractContextManager[None]:
    """Within the block, every `batch_norm` takes its statistics from the first `rows` rows."""
    return _scoped(_STATS_ROWS, rows)


def cpu_layout(memory_format: torch.memory_format) -> AbstractContextManager[None]:
    """Within the block, backbones that honour it (conv4) run CPU convolutions in this layout.

    Channels-last is the default: max-pooling and batch norm run 3-15x faster in it on CPU. But
    batch norm's double backward runs about 2x slower in it, so second-order inner loops take
    their support passes in `torch.contiguous_format` (NCHW), as measured with
    `benchmarks/maml_vs_peers.py`.
    """
    return _scoped(_CPU_LAYOUT, memory_format)


def current_cpu_layout() -> torch.memory_format:
    """The memory format of the innermost `cpu_layout` block (default channels-last)."""
    return _CPU_LAYOUT.get()


def call(module: nn.Module, params: Params, x: Tensor, *, stats_rows: int | None = None
         ) -> Tensor:
    """`module(x)` with `params` in place of its parameters (missing names keep the module's).

    A module whose class writes both `forward` and `forward_with(params, x)` (conv4, the MLP,
    MAML) and that has no forward hooks computes with the given tensors itself; any other goes
    through `torch.func.functional_call`, which swaps them into the module for the length of
    the call.

    Args:
        module: any module; it is not modified.
        params: name -> tensor, names as in `module.named_parameters()`.
        x: the input, `[M, *x]`.
        stats_rows: `None` for transductive batch norm; `n` to normalise every row with the
            statistics of the first `n` rows (non-transductive, `x = [support; query]`).
    """
    with statistics_rows(stats_rows):
        return apply_params(module, params, x)


def apply_params(module: nn.Module, params: Params, x: Tensor) -> Tensor:
    """`call` without touching the batch-norm setting: for a module's `forward_with` to run
    its submodules inside the `call` that runs it (a nested `call` would reset `stats_rows`)."""
    if _has_forward_with(type(module)) and not (module._forward_hooks
                                                 or module._forward_pre_hooks):
        forward_with: Callable[[Params, Tensor], Tensor] = module.forward_with  # type: ignore[assignment]
        return forward_with(params, x)  # computes with the given tensors: no swap
    return functional_call(module, params, (x,), tie_weights=_has_tied_tensors(module))


def _has_forward_with(cls: type) -> bool:
    """Whether `cls` has a `forward_with` written by the class that wrote its `forward`.

    A subclass that overrides `forward` alone must not be run by its parent's `forward_with`.
    """
    known = _FORWARD_WITH.get(cls)
    if known is None:
        owner = {name: next((c for c in cls.__mro__ if name in c.__dict__), None)
                 for name in ("forward", "forward_with")}
        known = _FORWARD_WITH[cls] = (owner["forward_with"] is not None
                                      and owner["forward_with"] is owner["forward"])
    return known


def _has_tied_tensors(module: nn.Module) -> bool:
    """Whether two names of `module` hold one parameter or buffer, cached per module.

    `functional_call` must then tie the replacements too; finding that out walks the whole
    module tree on every call, a third of its Python overhead for conv4, so it is asked once.
    """
    tied = _TIED.get(module)
    if tied is None:
        tied = (len(list(module.named_parameters(remove_duplicate=False)))
                != len(list(module.named_parameters()))
                or len(list(module.named_buffers(remove_duplicate=False)))
                != len(list(module.named_buffers())))
        _TIED[module] = tied
    return tied


def _statistics(x: Tensor, stats_rows: int | None) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance `[1, C, 1, ...]` of `x[:stats_rows]` (or all of x).

    Two passes (mean, then the mean square deviation) of plain sums: as exact as `var_mean`
    and several times faster on CPU, where `var_mean` over dims (0, 2, 3) is a slow Welford loop.
    """
    rows = _STATS_ROWS.get() if stats_rows is None else stats_rows
    ref = x if rows is None else x[:rows]
    dims = [0, *range(2, x.dim())]
    n = ref.numel() // ref.shape[1]
    mean = ref.sum(dims, keepdim=True) / n
    dev = ref - mean
    return mean, (dev * dev).sum(dims, keepdim=True) / n


def _scale_shift(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                 stats_rows: int | None) -> tuple[Tensor, Tensor]:
    """Batch norm as a per-channel affine map `x * scale + shift`, both `[1, C, 1, ...]`."""
    mean, var = _statistics(x, stats_rows)
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.view(shape)
    shift = -mean * scale
    return scale, shift if bias is None else shift + bias.view(shape)


def batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5,
               stats_rows: int | None = None) -> Tensor:
    """Normalise `x` (`[M, C, ...]`) per channel with a batch mean and biased variance.

    Args:
        x: the input, `[M, C, ...]`.
        weight, bias: per-channel scale and shift `[C]`, or `None`.
        eps: added to the variance.
        stats_rows: take the statistics from `x[:stats_rows]` only; `None` uses the
            surrounding `call(..., stats_rows=)` setting (default: all rows).
    """
    scale, shift = _scale_shift(x, weight, bias, eps, stats_rows)
    return torch.addcmul(shift, x, scale)  # only [C]-sized ops touch the parameters


def batch_norm_relu_pool(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                         eps: float = 1e-5, kernel: int = 2) -> Tensor:
    """`max_pool2d(relu(batch_norm(x)), kernel)` for `[M, C, H, W]`, pooling first.

    Batch norm is a per-channel affine map a*x + c (statistics taken before pooling, as usual),
    and max-pooling commutes with it when a > 0 and turns into min-pooling when a < 0; ReLU
    commutes with max-pooling. So the output equals relu(a * s * maxpool(s * x) + c) with
    s = sign(a): the affine map and the ReLU then run on a tensor `kernel**2` times smaller, and
    so do their first and second derivatives. Gradients equal the unfused ones wherever the
    max is unique (almost everywhere).

    Outside `torch.vmap`, with transductive statistics, the native `F.batch_norm` kernel is used
    instead: its derivatives (second order included) are exact there, and it measured about 20%
    faster on CPU than the sums above (`benchmarks/protonet_vs_easyfsl.py`).
    """
    if _STATS_ROWS.get() is None and maybe_current_level() is None:
        y = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
        return torch.relu(F.max_pool2d(y, kernel))  # ReLU commutes with max-pooling
    scale, shift = _scale_shift(x, weight, bias, eps, None)
    sign = torch.where(scale >= 0, 1.0, -1.0).to(x.dtype)  # [1, C, 1, 1], no gradient
    pooled = F.max_pool2d(x * sign, kernel) * sign  # max or min per channel, [M, C, H/k, W/k]
    return torch.relu(torch.addcmul(shift, pooled, scale))


class BatchNorm(nn.Module):
    """Per-channel batch norm with batch statistics only (no running stats), exact under `vmap`.

    Transductive by default; inside `call(..., stats_rows=n)` it is non-transductive (see the
    module docstring).

    Args:
        channels: number of channels C of inputs `[M, C, ...]`.
        affine: learn a scale and shift per channel.
        eps: added to the variance.
    """

    def __init__(self, channels: int, *, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm(x, self.weight, self.bias, self.eps)
