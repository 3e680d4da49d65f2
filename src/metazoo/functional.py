"""Functional helpers: parameters as dicts, calls with given parameters, and batch norm.

Parameters travel as `dict[str, Tensor]` (`Params`) and a module runs with them through
`call(module, params, x, **options)`, so adaptation never writes to a module.

Every option is an explicit argument: a backbone's `forward_with(params, x, *, stats_rows=None,
memory_format=None, ...)` receives it from `call` and hands it to its layers. The options are
* `stats_rows` (batch norm): `None` normalises with the statistics of the whole input
  (transductive: support and query each with their own, as in MAML's code and learn2learn);
  `n` normalises every row with the statistics of the first `n` rows, for an input
  `[support; query]` (non-transductive: a query's output depends on the support and itself).
* `memory_format` (conv backbones on CPU): the layout the convolutions run in; `None` is the
  backbone's fastest default (channels-last). `SECOND_ORDER_LAYOUT` is for passes that will be
  differentiated twice (see there).
* extension points of a backbone (conv4 and the MLP: `modulation`, `norm`), for algorithms that
  change a block without rewriting the forward (CAVIA's FiLM, MAML++'s per-step statistics).

Batch norm. torch 2.13's training-mode `F.batch_norm` gives wrong second-order gradients under
`torch.vmap` (see `tests/test_functional.py`); `batch_norm` here is written from sums and `rsqrt`,
whose derivatives vmap handles exactly. It keeps no running statistics.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metazoo.errors import ConfigError
from metazoo.torch_compat import has_forward_hooks, in_functorch_transform
from metazoo.types import Params

SECOND_ORDER_LAYOUT = torch.contiguous_format
"""The CPU layout of passes that are differentiated twice (second-order inner loops, Hessian-
vector products): batch norm's double backward runs about 2x faster in NCHW than channels-last
(`benchmarks/maml_vs_peers.py`), where every other pass is faster channels-last."""

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


def cpu_layout(x: Tensor, memory_format: torch.memory_format | None
               ) -> tuple[Tensor, torch.memory_format | None]:
    """A conv backbone's input in the layout its convolutions should run in, and that layout.

    On CPU outside `torch.func` transforms (which forbid choosing one): `memory_format`, by
    default channels-last (max-pooling ~15x and batch norm ~3x faster there). A `[M, 1, H, W]`
    input is NCHW and channels-last at once, and a conv then returns NCHW maps; it gets
    channels-last strides (a view), so the maps come back channels-last. Other layouts convert
    the input once: every conv keeps its input's layout. Elsewhere: `(x, None)`.
    """
    if x.device.type != "cpu" or in_functorch_transform():
        return x, None
    layout = memory_format or torch.channels_last
    if layout == torch.channels_last and x.shape[1] == 1:
        m, _, h, w = x.shape
        return x.reshape(m, h, w, 1).permute(0, 3, 1, 2), layout
    return x.contiguous(memory_format=layout), layout


def strip_prefix(params: Params, prefix: str) -> Params:
    """The entries of `params` under `prefix`, named without it (a submodule's parameters)."""
    return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


def call(module: nn.Module, params: Params, x: Tensor, **options: Any) -> Tensor:
    """`module(x)` with `params` in place of its parameters (missing names keep the module's).

    A module whose class writes both `forward` and `forward_with(params, x, **options)` (conv4,
    the MLP, the linear-head network of the gradient family) and that has no forward hooks
    computes with the given tensors itself and receives `options`; any other goes through
    `torch.func.functional_call`, which swaps the tensors into the module for the length of
    the call, and accepts no options (or only `None` ones; `memory_format`, a speed hint, is
    dropped).

    Args:
        module: any module; it is not modified.
        params: name -> tensor, names as in `module.named_parameters()`.
        x: the input, `[M, *x]`.
        options: `stats_rows`, `memory_format` and backbone extension points (module docstring).
    """
    if _has_forward_with(type(module)) and not has_forward_hooks(module):
        return module.forward_with(params, x, **options)  # type: ignore[operator]
    # a layout is a speed hint, which a module of another kind runs without
    given = sorted(k for k, v in options.items() if v is not None and k != "memory_format")
    if given:
        raise ConfigError(f"{type(module).__name__} has no forward_with(params, x, *, "
                          f"{', '.join(given)}) (or it has forward hooks), so it cannot take "
                          f"{', '.join(given)}; give the backbone a forward_with as conv4 has, "
                          "or use the transductive default")
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
    ref = x if stats_rows is None else x[:stats_rows]
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
        stats_rows: take the statistics from `x[:stats_rows]` only; `None`: all rows.
    """
    scale, shift = _scale_shift(x, weight, bias, eps, stats_rows)
    return torch.addcmul(shift, x, scale)  # only [C]-sized ops touch the parameters


def batch_norm_relu_pool(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                         eps: float = 1e-5, kernel: int = 2, stats_rows: int | None = None
                         ) -> Tensor:
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
    if stats_rows is None and not in_functorch_transform():
        y = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
        return torch.relu(F.max_pool2d(y, kernel))  # ReLU commutes with max-pooling
    scale, shift = _scale_shift(x, weight, bias, eps, stats_rows)
    sign = torch.where(scale >= 0, 1.0, -1.0).to(x.dtype)  # [1, C, 1, 1], no gradient
    pooled = F.max_pool2d(x * sign, kernel) * sign  # max or min per channel, [M, C, H/k, W/k]
    return torch.relu(torch.addcmul(shift, pooled, scale))


class BatchNorm(nn.Module):
    """Per-channel batch norm with batch statistics only (no running stats), exact under `vmap`.

    Transductive by default; `call(bn, params, x, stats_rows=n)` is non-transductive (see the
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
        return self.forward_with({}, x)

    def forward_with(self, params: Params, x: Tensor, *, stats_rows: int | None = None,
                     memory_format: torch.memory_format | None = None) -> Tensor:
        """`forward` with `params` ("weight", "bias") in place of its own, statistics from the
        first `stats_rows` rows (`memory_format` is accepted for a uniform call and unused)."""
        return batch_norm(x, params.get("weight", self.weight), params.get("bias", self.bias),
                          self.eps, stats_rows)
