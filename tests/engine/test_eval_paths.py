"""`engine.evaluate.evaluate` scores each test episode exactly as adapting to it alone would.

What the engine runs (episodes in batches of `eval.batch_size`, `algorithm.predict`, autograd
off for methods that do not adapt by gradients) against the straightforward path: episode `e`
drawn alone (`source.episode(e)`), `adapt(support)(query)` with autograd on. Both run the same
kernels on the same values in the same order at one intra-op thread, so the per-episode
accuracies and NLLs must be equal bit for bit, whatever the batch size (issue 22:
`benchmarks/eval_throughput.py` times the first path, and its speed must not come from scoring
something else). At two threads a batch of several MAML episodes runs in task threads of one
intra-op thread each (`batching.choose`: design note 10) while an episode alone runs on two,
so the sums inside the kernels are ordered differently: equal within float32 rounding, which
MAML's inner steps (lr 0.4) amplify to about 1e-4 of the NLL.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from metazoo import calibration
from metazoo.algorithms import build
from metazoo.engine import evaluate as evaluate_module
from metazoo.engine.evaluate import evaluate
from metazoo.engine.scoring import Scores
from metazoo.metrics import accuracy
from metazoo.models import Conv4
from metazoo.tasks import make_task_source

EPISODES = 7


class Recording(Scores):
    """`Scores` that keeps every instance, so a test can read the per-episode values."""

    made: ClassVar[list[Scores]] = []

    def __init__(self) -> None:
        super().__init__()
        Recording.made.append(self)


def straightforward(alg, source) -> dict[str, torch.Tensor]:
    alg.eval()
    out: dict[str, list[torch.Tensor]] = {"accuracy": [], "nll": []}
    for e in range(EPISODES):
        b = source.episode(e)
        logits = alg.adapt(b.support_x[0], b.support_y[0], ways=b.ways)(b.query_x[0])
        logits = logits.detach()[None]
        out["accuracy"].append(accuracy(logits, b.query_y))
        out["nll"].append(calibration.nll(logits, b.query_y))
    alg.train()
    return {k: torch.cat(v).double() for k, v in out.items()}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scored(name: str, monkeypatch) -> tuple[dict[str, torch.Tensor], list[Scores]]:
    """The straightforward path's per-episode values, and `evaluate`'s at batch sizes 1, 3, 7."""
    source = make_task_source("glyphs", "test", ways=5, shots=1, queries=4, seed=0)
    torch.manual_seed(0)
    alg = build(name, Conv4(source.input_shape, hidden=8), ways=5)
    assert alg.adapts_with_gradients == (name == "maml")  # both of evaluate's grad modes
    reference = straightforward(alg, source)
    # distinct values, so a shifted or reordered episode would show
    assert reference["nll"].unique().numel() == EPISODES
    monkeypatch.setattr(Recording, "made", [])
    monkeypatch.setattr(evaluate_module, "Scores", Recording)
    for size in (1, 3, EPISODES):  # batches of 1; of 3, 3, 1; all 7 at once
        evaluate(alg, source, episodes=EPISODES, batch_size=size)
    assert len(Recording.made) == 3
    return reference, Recording.made


@pytest.mark.parametrize("name", ["protonet", "maml"])
def test_evaluate_scores_every_episode_as_the_straightforward_path(name, monkeypatch,
                                                                   one_thread):
    reference, made = scored(name, monkeypatch)
    for scores in made:
        for key, expected in reference.items():
            assert torch.equal(torch.cat(scores.values[key]), expected), key


def test_at_two_threads_maml_episodes_agree_within_float_rounding(monkeypatch, two_threads):
    reference, made = scored("maml", monkeypatch)
    for scores in made:
        torch.testing.assert_close(torch.cat(scores.values["nll"]), reference["nll"],
                                   rtol=1e-3, atol=0)
