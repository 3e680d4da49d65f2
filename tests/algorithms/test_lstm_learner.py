import pytest
import torch
from torch import nn

from metazoo import algorithms, models
from metazoo.errors import ConfigError, ShapeError
from metazoo.sequence_tasks import lstm_step
from tests.algorithms.learning import accuracy_before_after, separable_episodes


def identity():
    """Raw 4-d inputs as features (an MLP without layers)."""
    return models.build("mlp", input_shape=(4,), hidden=())


def _task(seed=0, queries=6):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]),
            torch.randn(queries, 4, generator=g))


def test_lstm_step_equals_torch_lstm_cell():
    torch.manual_seed(0)
    cell = nn.LSTMCell(5, 7)
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    h_ref, c_ref = cell(x, (h, c))
    h_out, c_out = lstm_step(cell, x, h, c)
    torch.testing.assert_close(h_out, h_ref)
    torch.testing.assert_close(c_out, c_ref)


def test_logits_equal_the_lstm_run_over_support_then_each_query():
    torch.manual_seed(0)
    alg = algorithms.build("lstm_learner", identity(), ways=3, hidden=5)
    sx, sy, qx = _task()
    out = alg.adapt(sx, sy)(qx)
    lstm = nn.LSTM(4 + 3, 5)  # torch's LSTM with the cell's weights, one sequence per query
    lstm.load_state_dict({f"{k}_l0": v for k, v in alg.lstm.state_dict().items()})
    labels = torch.eye(3)[sy]
    for j in range(qx.shape[0]):
        query = torch.cat([qx[j:j + 1], torch.zeros(1, 3)], 1)
        seq = torch.cat([torch.cat([sx, labels], 1), query])
        hs, _ = lstm(seq)
        torch.testing.assert_close(out[j], alg.out(hs[-1]), rtol=1e-5, atol=1e-6)


def test_a_query_does_not_see_the_other_queries():
    torch.manual_seed(0)
    alg = algorithms.build("lstm_learner", models.build("conv4", hidden=8), ways=3)
    g = torch.Generator().manual_seed(0)
    sx, sy = torch.randn(6, 1, 28, 28, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    qx = torch.randn(4, 1, 28, 28, generator=g)
    other = torch.cat([qx[:1], torch.randn(5, 1, 28, 28, generator=g)])
    predict = alg.adapt(sx, sy)
    torch.testing.assert_close(predict(qx)[0], predict(other)[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(predict(qx)[0], predict(qx[:1])[0], rtol=1e-5, atol=1e-6)


def test_wrong_ways_raise_shape_error():
    alg = algorithms.build("lstm_learner", identity(), ways=3)
    sx, sy, _ = _task()
    with pytest.raises(ShapeError):
        alg.adapt(sx, sy, ways=4)


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="hidden"):
        algorithms.build("lstm_learner", identity(), ways=3, hidden=0)


@pytest.mark.slow
def test_lstm_learner_learns_separable_classes():
    torch.manual_seed(0)
    alg = algorithms.build("lstm_learner", models.build("conv4", hidden=16), ways=5)
    before, after = accuracy_before_after(alg, *separable_episodes(), steps=300)
    assert after >= 0.27 and after > before + 0.05, (before, after)


def test_offset_stream_and_its_loss_equal_torch_lstm_on_the_shifted_labels():
    torch.manual_seed(0)
    alg = algorithms.build("lstm_learner", identity(), ways=3, hidden=5,
                           presentation="offset_labels")
    sx, sy, qx = _task()
    qy = torch.tensor([1, 0, 2, 2, 1, 0])
    lstm = nn.LSTM(4 + 3, 5)
    lstm.load_state_dict({f"{k}_l0": v for k, v in alg.lstm.state_dict().items()})
    shifted = torch.cat([torch.zeros(1, 3), torch.eye(3)[sy[:-1]]])  # step t: label of t-1
    hs, (h, c) = lstm(torch.cat([sx, shifted], 1))
    stream = alg.out(hs)
    torch.testing.assert_close(alg.stream_logits(sx, sy), stream, rtol=1e-5, atol=1e-6)
    # each query continues the stream with the last support label, on its own
    last = torch.eye(3)[sy[-1]].expand(qx.shape[0], -1)
    hq, _ = alg.lstm(torch.cat([qx, last], 1), (h[0].expand(6, -1), c[0].expand(6, -1)))
    query = alg.out(hq)
    torch.testing.assert_close(alg.adapt(sx, sy)(qx), query, rtol=1e-5, atol=1e-6)
    loss, _ = alg.task_loss(sx, sy, qx, qy, 3)
    expected = nn.functional.cross_entropy(torch.cat([stream, query]), torch.cat([sy, qy]))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_lstm_learner_with_offset_labels_learns_the_stream_task():
    """Meta-trained on offset-label streams of glyphs, its predictions across the stream rise
    well above chance (1/5) from an untrained start. (The 1st presentation may beat chance too:
    a learner that knows which labels it has seen can guess among the unseen ones, as MANN's
    36.4% in Santoro et al.'s Table 1 does.)"""
    from metazoo.data import glyphs
    from metazoo.engine.offset_eval import evaluate_offset
    from metazoo.tasks import EpisodeSampler
    from tests.algorithms.learning import meta_train

    torch.manual_seed(0)
    alg = algorithms.build("lstm_learner", models.build("mlp", input_shape=(1, 28, 28),
                                                        hidden=(64,)), ways=5,
                           presentation="offset_labels", hidden=64)
    train = EpisodeSampler(glyphs.load("train"), 5, 4, 0, seed=0, order="shuffled")
    test = EpisodeSampler(glyphs.load("test"), 5, 4, 0, seed=1, order="shuffled")
    before = evaluate_offset(alg, test, episodes=100).accuracy
    meta_train(alg, train, 250, 3e-3, meta_batch_size=8)
    after = evaluate_offset(alg, test, episodes=100).accuracy
    assert all(abs(a - 0.2) < 0.08 for a in before), before
    assert sum(after) / len(after) > 0.3 and min(after) > 0.25, after
