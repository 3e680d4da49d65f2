"""Sinusoid tasks (metazoo.tasks): shapes, targets against a formula, ranges, determinism."""

import math

import pytest
import torch

from metazoo.data.sinusoid import curve
from metazoo.errors import ConfigError
from metazoo.tasks import SinusoidTasks


def test_shapes_and_dtypes():
    b = SinusoidTasks(shots=5, queries=7, seed=0).batch(0, 4)
    assert b.support_x.shape == (4, 5, 1) and b.support_y.shape == (4, 5, 1)
    assert b.query_x.shape == (4, 7, 1) and b.query_y.shape == (4, 7, 1)
    for t in (b.support_x, b.support_y, b.query_x, b.query_y):
        assert t.dtype == torch.float32
    assert (b.ways, b.shots, b.queries, b.kind) == (1, 5, 7, "regression")


def test_targets_are_the_sine_of_the_task_params():
    tasks = SinusoidTasks(shots=10, queries=10, seed=3, split="train")
    b, (amp, phase) = tasks.batch(2, 6), tasks.params(2, 6)
    for i in range(6):
        for x, y in ((b.support_x[i, :, 0], b.support_y[i, :, 0]),
                     (b.query_x[i, :, 0], b.query_y[i, :, 0])):
            expected = [float(amp[i]) * math.sin(float(v) - float(phase[i])) for v in x]
            assert torch.allclose(y, torch.tensor(expected), atol=1e-5)
    assert torch.allclose(curve(amp, phase, b.query_x), b.query_y)


def test_params_and_inputs_within_ranges():
    tasks = SinusoidTasks(shots=5, queries=5, seed=0, amplitude=(0.5, 2.0), phase=(1.0, 2.0),
                          x_range=(0.0, 3.0))
    amp, phase = tasks.params(0, 500)
    b = tasks.batch(0, 500)
    assert amp.min() >= 0.5 and amp.max() <= 2.0 and amp.std() > 0.3
    assert phase.min() >= 1.0 and phase.max() <= 2.0 and phase.std() > 0.2
    assert b.support_x.min() >= 0.0 and b.query_x.max() <= 3.0


def test_default_ranges_are_maml():
    amp, phase = SinusoidTasks(shots=5, queries=5, seed=0).params(0, 1000)
    assert 0.1 <= amp.min() < 0.3 and 4.8 < amp.max() <= 5.0
    assert 0.0 <= phase.min() < 0.1 and 3.0 < phase.max() <= math.pi


def test_tasks_are_pure_functions_of_seed_split_and_index():
    a = SinusoidTasks(shots=5, queries=5, seed=1).batch(3, 4)
    b = SinusoidTasks(shots=5, queries=5, seed=1).batch(3, 4)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    # task 13 is the second task of batch(6, 2) and the second of batch(3, 4)
    c = SinusoidTasks(shots=5, queries=5, seed=1).batch(6, 2)
    assert torch.equal(c.support_x[1], a.support_x[1])
    assert not torch.equal(a.support_x[0], a.support_x[1])


@pytest.mark.parametrize("other", [dict(split="test"), dict(seed=2)])
def test_different_split_or_seed_gives_different_tasks(other):
    base = dict(shots=5, queries=5, seed=1, split="train")
    a = SinusoidTasks(**base).batch(0, 8)
    b = SinusoidTasks(**{**base, **other}).batch(0, 8)
    assert not torch.allclose(a.support_x, b.support_x)
    pa, pb = SinusoidTasks(**base).params(0, 8), SinusoidTasks(**{**base, **other}).params(0, 8)
    assert not torch.allclose(pa[0], pb[0])


@pytest.mark.parametrize("kwargs", [dict(shots=0), dict(queries=-1), dict(split=""),
                                    dict(amplitude=(5.0, 0.1)), dict(phase=(0.0, math.inf))])
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        SinusoidTasks(**{"shots": 5, "queries": 5, "seed": 0, **kwargs})


def test_bad_batch_request_raises():
    with pytest.raises(ConfigError):
        SinusoidTasks(shots=5, queries=5, seed=0).batch(0, 0)
