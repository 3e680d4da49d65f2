"""The shape MANN and the LSTM learner share: a recurrent learner over a task's sequence.

A subclass defines `initial_state(like)` and `step(x, state)` (`metazoo.sequence_tasks`); this
class turns them into the `Algorithm` contract for both label presentations (the config's
`presentation`): `adapt` reads the support steps, then each query as its own continuation;
with "offset_labels" the task loss is Santoro et al.'s, the cross-entropy of every step of the
stream (each support step predicts its own label before seeing it) and of the query steps.
`stream_logits` serves the by-presentation evaluation (`metazoo.engine.offset_eval`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metazoo.adaptation import loss_and_metrics
from metazoo.algorithms.base import Algorithm
from metazoo.sequence_tasks import (
    LabelPresentation,
    sequence_inputs,
    stream_logits,
    support_then_query,
)
from metazoo.types import Predictor


class RecurrentSequenceAlgorithm(Algorithm):
    """A black-box learner that reads a task as a sequence of (embedding, label slot) steps."""

    fixed_ways = True

    def initial_state(self, like: Tensor) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define initial_state()")

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define step()")

    @property
    def presentation(self) -> LabelPresentation:
        """How labels enter the sequence: "support_query" or "offset_labels"."""
        return getattr(self.config, "presentation", "support_query")

    def episode_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                       ways: int) -> tuple[Tensor, Tensor]:
        """Logits of the support steps `[N K, N]` and of the queries `[M, N]`."""
        steps = sequence_inputs(self.backbone, support_x, support_y, query_x,
                                self.check_ways(ways),
                                self.presentation)
        return support_then_query(self, *steps)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = self.check_ways(ways or self.ways)
        return lambda query_x: self.episode_logits(support_x, support_y, query_x, n)[1]

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The query loss; with offset labels, the loss of every step of the stream and of the
        queries together (Santoro et al. Sec. 4.1), accuracy over the same steps."""
        support_logits, query_logits = self.episode_logits(support_x, support_y, query_x, ways)
        if self.presentation == "support_query":
            return loss_and_metrics(query_logits, query_y)
        return loss_and_metrics(torch.cat([support_logits, query_logits]),
                                torch.cat([support_y, query_y]))

    def stream_logits(self, x: Tensor, y: Tensor, ways: int | None = None) -> Tensor:
        """One episode `x` `[T, ...]`, `y` `[T]` as an offset-label stream: logits `[T, N]`."""
        return stream_logits(self, self.backbone, x, y, self.check_ways(ways or self.ways))
