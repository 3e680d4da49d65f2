"""A few-shot task as a sequence, for black-box learners that read it step by step (MANN, the
LSTM learner): the two ways of presenting labels, and the recurrence over the steps.

Each step's input is `[f(x_t); l_t]`, the backbone embedding and a label slot of N entries:
- *support then query* (SNAIL, Mishra et al. 2018): the support steps carry their own one-hot
  labels, `l_t = onehot(y_t)`; each query is one more step with `l = 0`;
- *offset labels* (Santoro et al. 2016, Sec. 4.1): `l_t = onehot(y_{t-1})`, `l_0 = 0`: the label
  of a step arrives with the next one, so every step is a prediction of an example whose label
  the learner has not seen yet; a query is the step after the support, carrying the last support
  label. Accuracy is then reported by presentation number: the k-th time a class appears
  (`presentation_numbers`), 1st to 10th in the paper's Table 1.
A recurrent learner has `initial_state(like)` (one sequence, fresh memory) and `step(x, state)`
(`[B, D + N]` -> `[B, N]` logits); `support_then_query` runs the support once and each query as
its own continuation of that state, so queries never see each other (exact, batched).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.functional import call

LabelPresentation = Literal["support_query", "offset_labels"]


class RecurrentLearner(Protocol):
    """What `support_then_query` and `stream_logits` need of a learner."""

    def initial_state(self, like: Tensor) -> Any:
        """The state before the first step of one sequence (batch rows: 1)."""
        ...

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One step for `B` sequences: `[B, D + N]` inputs -> `[B, N]` logits, new state."""
        ...


def lstm_step(cell: nn.LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One step of `cell` (`nn.LSTMCell`'s function, gates i, f, g, o), written from its
    weights so it runs under `torch.vmap`: `[B, in]`, `[B, H]`, `[B, H]` -> new `(h, c)`."""
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def one_hot(labels: Tensor, ways: int, like: Tensor) -> Tensor:
    """`[T]` labels -> `[T, N]` one-hot rows of `like`'s dtype and device."""
    return (labels[:, None] == torch.arange(ways, device=like.device)).to(like.dtype)


def offset_labels(labels: Tensor, ways: int, like: Tensor) -> Tensor:
    """`[T, N]` label slots of a stream: row t is `onehot(y_{t-1})`, row 0 zeros."""
    shifted = one_hot(labels, ways, like)[:-1]
    return torch.cat([shifted.new_zeros(1, ways), shifted])


def presentation_numbers(labels: Tensor) -> Tensor:
    """`[..., T]` labels -> `[..., T]` int64: step t shows its class for the k-th time (1-based)."""
    same = labels[..., :, None] == labels[..., None, :]  # [..., T, T]: same class
    earlier = torch.ones(labels.shape[-1], labels.shape[-1], dtype=torch.bool,
                         device=labels.device).tril()
    return (same & earlier).sum(-1)


def accuracy_by_presentation(correct: Tensor, numbers: Tensor, up_to: int) -> Tensor:
    """Per episode, the accuracy of the steps that show their class for the k-th time.

    Args:
        correct: `[E, T]` bool, step t of episode e predicted right.
        numbers: `[E, T]` presentation numbers (`presentation_numbers`).
        up_to: the largest k reported.
    Returns:
        `[E, up_to]` float; NaN where an episode has no step with that number.
    """
    k = torch.arange(1, up_to + 1, device=numbers.device)
    hit = numbers[:, None, :] == k[None, :, None]  # [E, up_to, T]
    count = hit.sum(-1)
    right = (hit & correct[:, None, :]).sum(-1)
    return torch.where(count > 0, right / count.clamp(min=1), torch.nan)


def sequence_inputs(backbone: nn.Module, support_x: Tensor, support_y: Tensor,
                    query_x: Tensor, ways: int, presentation: LabelPresentation = "support_query"
                    ) -> tuple[Tensor, Tensor]:
    """Support steps `[N K, D + N]` and query steps `[M, D + N]`, from one backbone pass over
    `[support; query]` whose batch norm takes its statistics from the support rows only, so a
    query's input depends on the support and itself alone. Label slots as `presentation` says."""
    rows = support_x.shape[0]
    z = call(backbone, {}, torch.cat([support_x, query_x]), stats_rows=rows)
    zs, zq = z[:rows], z[rows:]
    if presentation == "offset_labels":
        support = torch.cat([zs, offset_labels(support_y, ways, z)], dim=-1)
        last = one_hot(support_y[-1:], ways, z).expand(zq.shape[0], -1)
        return support, torch.cat([zq, last], dim=-1)
    support = torch.cat([zs, one_hot(support_y, ways, z)], dim=-1)
    return support, torch.cat([zq, zq.new_zeros(zq.shape[0], ways)], dim=-1)


def expand_rows(state: Any, rows: int) -> Any:
    """A one-row state (tensors `[1, ...]`, nested in tuples and named tuples) as `rows` rows."""
    if isinstance(state, Tensor):
        return state.expand(rows, *state.shape[1:])
    parts = [expand_rows(s, rows) for s in state]
    return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)


def run_prefix(learner: RecurrentLearner, steps: Tensor) -> tuple[Tensor, Any]:
    """Steps `[T, D + N]` of one fresh sequence -> the logits `[T, N]` and the final state."""
    state = learner.initial_state(steps)
    logits = []
    for t in range(steps.shape[0]):
        out, state = learner.step(steps[t:t + 1], state)
        logits.append(out)
    return torch.cat(logits), state


def support_then_query(learner: RecurrentLearner, support: Tensor, query: Tensor
                       ) -> tuple[Tensor, Tensor]:
    """The logits of the support steps `[N K, N]` and of the queries `[M, N]`: the support
    steps once, then each query step as its own continuation of that state (one batched step),
    so no query sees another."""
    support_logits, state = run_prefix(learner, support)
    if query.shape[0] == 0:
        return support_logits, query.new_zeros(0, support_logits.shape[-1])
    query_logits, _ = learner.step(query, expand_rows(state, query.shape[0]))
    return support_logits, query_logits


def stream_logits(learner: RecurrentLearner, backbone: nn.Module, x: Tensor, y: Tensor,
                  ways: int) -> Tensor:
    """Santoro et al.'s protocol on one episode: the examples `x` `[T, ...]` with labels `y`
    `[T]` as one offset-label stream; the logits of every step `[T, N]` (step t predicts `y_t`
    having seen `y_0 .. y_{t-1}`). Batch norm, if any, takes its statistics from all T rows."""
    steps, none = sequence_inputs(backbone, x, y, x[:0], ways, "offset_labels")
    return support_then_query(learner, steps, none)[0]
