"""Sine-or-line tasks (PLATIPUS Sec. 5.1): kinds, ranges, noise, determinism, registry."""

import math

import pytest
import torch

from metazoo.errors import ConfigError
from metazoo.tasks import SinusoidLineTasks, SinusoidTasks, make_task_source


def test_half_sines_half_lines_with_parameters_in_range():
    tasks = SinusoidLineTasks(shots=5, queries=5, seed=0)
    drawn = [tasks.truth(t) for t in range(2000)]
    sines = [d for d in drawn if d.kind == "sine"]
    lines = [d for d in drawn if d.kind == "line"]
    assert 0.45 < len(sines) / len(drawn) < 0.55 and len(sines) + len(lines) == len(drawn)
    assert all(0.1 <= s.first <= 5.0 and 0.0 <= s.second <= math.pi for s in sines)
    assert all(-3.0 <= v <= 3.0 for ln in lines for v in (ln.first, ln.second))
    assert min(ln.first for ln in lines) < -2.5 and max(ln.first for ln in lines) > 2.5


def test_targets_are_the_truth_plus_gaussian_noise_of_the_given_std():
    tasks = SinusoidLineTasks(shots=10, queries=30, seed=1, split="train", noise_std=0.3)
    b = tasks.batch(0, 400)
    assert b.support_x.shape == (400, 10, 1) and b.query_y.shape == (400, 30, 1)
    residuals = torch.cat([
        torch.cat([b.support_y[i], b.query_y[i]]) -
        tasks.truth(i)(torch.cat([b.support_x[i], b.query_x[i]])) for i in range(400)])
    assert abs(residuals.std().item() - 0.3) < 0.01 and abs(residuals.mean().item()) < 0.01
    assert b.support_x.min() >= -5.0 and b.query_x.max() <= 5.0
    quiet = SinusoidLineTasks(shots=10, queries=30, seed=1, split="train", noise_std=0.0)
    q = quiet.batch(3, 1)
    assert torch.allclose(quiet.truth(3)(q.query_x[0]), q.query_y[0])


def test_a_task_is_a_function_of_seed_split_and_index_only():
    a = SinusoidLineTasks(shots=5, queries=5, seed=2, split="train").batch(7, 3)
    b = SinusoidLineTasks(shots=5, queries=5, seed=2, split="train").batch(21, 1)  # task 21
    assert torch.equal(a.support_y[0], b.support_y[0])
    other = SinusoidLineTasks(shots=5, queries=5, seed=2, split="test").batch(7, 3)
    assert not torch.equal(a.support_y, other.support_y)


def test_sinusoid_truth_matches_its_batches():
    tasks = SinusoidTasks(shots=4, queries=6, seed=0)
    b = tasks.batch(5, 1)
    assert torch.allclose(tasks.truth(5)(b.query_x[0]), b.query_y[0], atol=1e-6)


def test_make_task_source_knows_the_family_and_bad_input_is_refused():
    src = make_task_source("sinusoid_line", "val", ways=1, shots=5, queries=2, seed=0)
    assert isinstance(src, SinusoidLineTasks) and src.split == "val"
    with pytest.raises(ConfigError, match="shots >= 1"):
        SinusoidLineTasks(shots=0, queries=1, seed=0)
    with pytest.raises(ConfigError, match="noise_std"):
        SinusoidLineTasks(shots=1, queries=1, seed=0, noise_std=float("nan"))
    with pytest.raises(ConfigError, match="index >= 0"):
        SinusoidLineTasks(shots=1, queries=1, seed=0).batch(-1, 2)
