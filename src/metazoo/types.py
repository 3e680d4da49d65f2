"""Aliases shared across the library: parameter dicts, predictors and algorithm families."""

from __future__ import annotations

from typing import Literal, Protocol

from torch import Tensor

Params = dict[str, Tensor]
"""Parameters by name, as in `module.named_parameters()`; moved through `functional_call`."""

Family = Literal["gradient", "metric", "closed_form", "black_box", "hybrid", "bayesian"]
TaskKind = Literal["classification", "regression"]


class Predictor(Protocol):
    """What `Algorithm.adapt` returns: query inputs `[M, *x]` to logits `[M, N]` or `[M, d_out]`."""

    def __call__(self, query_x: Tensor) -> Tensor: ...
