"""Alpha MAML: the inner rate's hypergradient, the outer rate's HD rules, the trainer, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from metazoo.algorithms import build
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.models.mlp import MLP
from metazoo.tasks import SinusoidTasks, TaskBatch
from tests.algorithms.learning import float64_sine_batch, unadapted_and_adapted_mse

DT = torch.float64


def _model(**overrides):
    torch.manual_seed(0)
    return build("alpha_maml", MLP((1,), (8, 8)), ways=1, **overrides).to(DT)


def _loss_at(model, batch, alpha):
    with torch.no_grad():
        model.alpha.fill_(alpha)
    return model.meta_loss(batch)[0].item()


def _same_points(batch):
    """The planted problem: each task's query set is its support set."""
    return TaskBatch(batch.support_x, batch.support_y, batch.support_x, batch.support_y, 1,
                     batch.shots, batch.shots)


def test_inner_hypergradient_equals_finite_difference_and_the_papers_dot_product():
    model, batch = _model(inner_lr=0.05), float64_sine_batch(tasks=3)
    alpha = model.alpha.item()  # 0.05 rounded to float32 when built
    model.meta_loss(batch)[0].backward()
    h = model.alpha.grad.item()
    eps = 1e-6
    fd = (_loss_at(model, batch, alpha + eps) - _loss_at(model, batch, alpha - eps)) / (2 * eps)
    assert abs(h) > 1e-3  # a check that can fail
    assert h == pytest.approx(fd, rel=1e-6)
    # -mean_i grad L_query(theta'_i) . grad L_support(theta), one inner step, written by hand
    theta = {k: v.detach() for k, v in params_of(model).items() if k != "alpha"}
    ref = 0.0
    for i in range(len(batch)):
        leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
        out = torch.func.functional_call(model, leaves, (batch.support_x[i],))
        gs = torch.autograd.grad(F.mse_loss(out, batch.support_y[i]), list(leaves.values()))
        adapted = [(v - alpha * g).detach().requires_grad_()
                   for v, g in zip(theta.values(), gs, strict=True)]
        out = torch.func.functional_call(model, dict(zip(theta, adapted, strict=True)),
                                         (batch.query_x[i],))
        gq = torch.autograd.grad(F.mse_loss(out, batch.query_y[i]), adapted)
        ref -= sum(float((a * b).sum()) for a, b in zip(gq, gs, strict=True)) / len(batch)
    assert h == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("alpha", [1e-3, 3.0])
def test_inner_rate_moves_against_the_query_loss_slope(alpha):
    model, batch = _model(inner_lr=alpha, inner_hyper_lr=1e-3), _same_points(float64_sine_batch())
    eps = 1e-6
    slope = (_loss_at(model, batch, alpha + eps) - _loss_at(model, batch, alpha - eps)) / (2 * eps)
    _loss_at(model, batch, alpha)
    model.zero_grad()
    model.meta_loss(batch)[0].backward()
    model.end_step(batch)
    assert model.alpha.grad is None  # hidden from the trainer's optimiser
    moved = model.alpha.item() - alpha
    if alpha < 0.01:  # planted: a tiny step on the query's own points lowers its loss
        assert slope < 0
    else:  # planted: a step of 3 overshoots
        assert slope > 0
    assert moved * slope < 0 and moved == pytest.approx(-1e-3 * slope, rel=1e-6)


def _hd_run(model, batch, opt, beta0, steps):
    """Trainer-like steps (backward, end_step, the algorithm's outer rate, step); the grads."""
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        model.meta_loss(batch)[0].backward()
        seen.append([p.grad.clone() for p in model.theta()])
        model.end_step(batch)
        for group in opt.param_groups:
            group["lr"] = model.outer_lr(beta0)
        opt.step()
    return seen


def _dot(a, b):
    return sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_outer_rate_follows_baydins_sgd_hd_and_adam_hd(optimizer):
    mu, beta0 = 1e-2, 1e-3
    model = _model(inner_hyper_lr=0.0, outer_hyper_lr=mu)
    batch = float64_sine_batch()
    opt = (torch.optim.SGD(model.parameters(), lr=beta0) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=beta0))
    g1, g2 = _hd_run(model, batch, opt, beta0, 2)
    # SGD-HD: beta += mu * g_t . g_{t-1}; Adam-HD: beta += mu * g_t . m / (sqrt(v) + eps) of the
    # previous step, bias-corrected: after one step m = g_1, v = g_1^2
    u1 = g1 if optimizer == "sgd" else [g / (g.abs() + 1e-8) for g in g1]
    expected = beta0 + mu * _dot(g2, u1)
    assert abs(expected - beta0) > 1e-6  # a check that can fail
    assert model.outer_rate.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("beta0", "grows"), [(1e-3, True), (0.2, False)])
def test_outer_rate_grows_when_steps_agree_and_shrinks_when_they_overshoot(beta0, grows):
    """Planted: a linear regressor on one fixed batch, whose meta-loss is a quadratic bowl; SGD
    at 1e-3 creeps down it (successive gradients agree), at 0.2 it zig-zags across it."""
    torch.manual_seed(0)
    model = build("alpha_maml", MLP((1,), ()), ways=1, inner_lr=0.01, inner_hyper_lr=0.0,
                  outer_hyper_lr=1e-4).to(DT)
    batch = float64_sine_batch()
    _hd_run(model, batch, torch.optim.SGD(model.parameters(), lr=beta0), beta0, 4)
    assert (model.outer_rate.item() > beta0) == grows


def test_trainer_steps_with_the_adapted_outer_rate(tmp_path, synthetic_data, monkeypatch):
    from metazoo.config_files import load_config
    from metazoo.engine import checkpoint
    from metazoo.engine.train import train

    used: list[float] = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step",
                        lambda self, *a, **k: (used.append(self.param_groups[0]["lr"]),
                                               step(self, *a, **k))[1])
    cfg = load_config(overrides=[
        "data.name=synthetic", "model.hidden=8", "train.progress=false", "train.log_every=2",
        "train.tensorboard=false", "eval.every=0", "eval.episodes=4", "eval.queries=3",
        "data.queries=3", "data.ways=5", "train.meta_batch_size=2", "train.meta_steps=5",
        "algorithm.name=alpha_maml", "algorithm.outer_hyper_lr=1e-4", "train.outer_lr=0.001"])
    train(cfg, tmp_path)
    tensors, _ = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert used[0] == 0.001 and len(set(used)) == 5  # beta_0 = outer_lr, then HD's
    assert math.isclose(used[-1], float(checkpoint.model_state(tensors)["outer_rate"]),
                        rel_tol=1e-6)
    from metazoo.engine.log import read

    logged = [float(r["lr"]) for r in read(tmp_path / "metrics.csv") if r["split"] == "train"]
    assert logged == pytest.approx([used[1], used[3], used[4]], rel=1e-5)  # the rates used


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="hyper_lr"):
        build("alpha_maml", MLP((1,), (8,)), ways=1, outer_hyper_lr=-1.0)


@pytest.mark.slow
def test_learns_sinusoid_regression():
    torch.manual_seed(0)
    model = build("alpha_maml", MLP((1,), (40, 40)), ways=1, inner_lr=0.01,
                  eval_inner_steps=10, outer_hyper_lr=1e-9)
    tasks = SinusoidTasks(shots=10, queries=10, seed=0, split="train")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(1000):
        batch = tasks.batch(i, 25)
        opt.zero_grad()
        model.meta_loss(batch)[0].backward()
        model.end_step(batch)
        for group in opt.param_groups:
            group["lr"] = model.outer_lr(3e-3)
        opt.step()
    pre, post = unadapted_and_adapted_mse(model, SinusoidTasks(10, 10, seed=0, split="test")
                                          .batch(0, 100))
    assert post * 5 <= pre, (pre, post)
    assert model.alpha.item() != 0.01 and model.outer_rate.item() != 3e-3
