import pytest
import torch
from torch import nn

from metazoo import algorithms, models
from metazoo.algorithms.lstm_learner import lstm_step
from metazoo.errors import ConfigError, ShapeError
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
