"""A fully connected ReLU network: MAML's 40-40 sinusoid regressor (Finn et al. 2017, Sec. 5.1)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.models.conv4 import Modulation
from metazoo.types import Params

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": torch.relu, "tanh": torch.tanh}


class MLP(nn.Module):
    """`[M, *input_shape]` -> `[M, hidden[-1]]` through Linear+ReLU layers (no head).

    Args:
        input_shape: shape of one input; flattened.
        hidden: widths of the hidden layers.
        activation: "relu" (MAML's regressor) or "tanh" (ALPaCA's feature network).
    """

    def __init__(self, input_shape: tuple[int, ...] = (1,),
                 hidden: tuple[int, ...] = (40, 40),
                 activation: Literal["relu", "tanh"] = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activation!r}")
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU() if activation == "relu" else nn.Tanh()]
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.Sequential(*layers)
        self.input_shape = tuple(input_shape)
        self.feature_dim = widths[-1]
        self.block_widths: tuple[int, ...] = tuple(hidden)  # units a modulation scales

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1))

    def forward_with(self, params: Params, x: Tensor, *, stats_rows: int | None = None,
                     memory_format: torch.memory_format | None = None,
                     modulation: Mapping[int, Modulation] | None = None) -> Tensor:
        """`forward` with `params[name]` in place of each parameter it names (others: own).

        `modulation` maps a layer index (0-based) to a (scale, shift) of its pre-activations
        (CAVIA's context on the input is a shift of the first layer); `stats_rows` and
        `memory_format` are accepted for a uniform call and unused (no batch norm, no convs).
        """
        x = x.flatten(1)
        for i in range(0, len(self.layers), 2):
            linear: nn.Linear = self.layers[i]  # type: ignore[assignment]
            x = F.linear(x, params.get(f"layers.{i}.weight", linear.weight),
                         params.get(f"layers.{i}.bias", linear.bias))
            film = (modulation or {}).get(i // 2)
            if film is not None:
                scale, shift = film
                x = x if scale is None else x * scale
                x = x if shift is None else x + shift
            x = self.activation(x)
        return x
