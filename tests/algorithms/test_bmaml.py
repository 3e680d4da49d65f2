"""BMAML: one particle is MAML, a two-particle SVGD step by hand, the chaser's stop-gradient,
the ensemble predictive, bad configs, and learning sinusoids."""

import math

import pytest
import torch

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.svgd import svgd_steps
from tests.algorithms.learning import float64_noise_image_batch, float64_sine_batch

DT = torch.float64


def _pair(kind, first_order):
    """MAML and one-particle BMAML with the same initial weights, BFA meta-loss, and matched
    scales: the log-likelihood sums over the N support rows where MAML's loss is their mean, so
    eps = alpha / N; a Gaussian likelihood of variance 1/2 makes -log p = squared error + c."""
    if kind == "regression":
        batch, alpha, ways = float64_sine_batch(tasks=3, shots=4, queries=5), 0.05, 1

        def net():
            return MLP((1,), (6, 5))
    else:
        batch, alpha, ways = float64_noise_image_batch(tasks=2, ways=3, shots=2, queries=2), 0.4, 3

        def net():
            return Conv4((1, 16, 16), hidden=4)
    rows = batch.support_x.shape[1]
    torch.manual_seed(0)
    maml = build("maml", net(), ways=ways, inner_lr=alpha, inner_steps=2,
                 first_order=first_order).to(DT)
    torch.manual_seed(0)
    bmaml = build("bmaml", net(), ways=ways, particles=1, inner_lr=alpha / rows, inner_steps=2,
                  meta_loss="bfa", noise_var=0.5, prior_precision=0.0,
                  first_order=first_order).to(DT)
    return maml, bmaml, batch


@pytest.mark.parametrize("kind", ["regression", "classification"])
@pytest.mark.parametrize("first_order", [False, True])
def test_one_particle_adapts_as_maml_and_has_its_meta_gradient(kind, first_order):
    maml, bmaml, batch = _pair(kind, first_order)
    theta = params_of(maml)
    for k, v in params_of(bmaml).items():  # particle 0 is the network as built
        torch.testing.assert_close(v[0], theta[k], rtol=0, atol=0)
    sx, sy = batch.support_x[0], batch.support_y[0]
    ref = maml.inner_loop(theta, sx, sy, 2)
    for k, v in bmaml.adapted(sx, sy).items():
        torch.testing.assert_close(v[0], ref[k], msg=k)
    grads = []
    for alg in (maml, bmaml):
        alg.zero_grad(set_to_none=True)
        batching.meta_loss(alg, batch, "loop")[0].backward()
        grads.append({k: p.grad for k, p in alg.named_parameters()})
    assert max(g.abs().max() for g in grads[0].values()) > 1e-3  # a check that can fail
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k][0], g, msg=k)


def test_two_particle_svgd_step_on_linear_regression_by_hand():
    """f(x) = w x + b (no hidden layer): a particle is (w, b). One step, written out."""
    eps, var, lam = 0.01, 0.3, 0.5
    torch.manual_seed(0)
    alg = build("bmaml", MLP((1,), ()), ways=1, particles=2, inner_lr=eps, inner_steps=1,
                noise_var=var, prior_precision=lam).to(DT)
    w, b = torch.tensor([0.8, -0.4], dtype=DT), torch.tensor([0.1, 0.6], dtype=DT)
    with torch.no_grad():
        alg.head.weight.copy_(w.view(2, 1, 1))
        alg.head.bias.copy_(b.view(2, 1))
    x = torch.tensor([[-1.0], [0.5], [2.0]], dtype=DT)
    y = torch.tensor([[0.3], [1.1], [2.9]], dtype=DT)
    # score of log p = sum_i -(y_i - w x_i - b)^2 / (2 var) - lam (w^2 + b^2) / 2
    r = y[:, 0, None] - x[:, 0, None] * w - b  # [points, particles] residuals
    score = torch.stack([(r * x[:, 0, None]).sum(0) / var - lam * w, r.sum(0) / var - lam * b], 1)
    theta = torch.stack([w, b], 1)  # [2 particles, (w, b)]
    diff = theta[0] - theta[1]
    d2 = (diff**2).sum()
    h = d2 / math.log(2)  # the median of one distance is that distance
    k12 = torch.exp(-d2 / h)
    assert k12.item() == pytest.approx(0.5)
    # phi_i = 1/2 sum_j [k(theta_j, theta_i) score_j + grad_{theta_j} k(theta_j, theta_i)],
    # grad_{theta_j} k(theta_j, theta_i) = (2 / h) (theta_i - theta_j) k_ij
    phi1 = (score[0] + k12 * score[1] + 2 / h * k12 * diff) / 2
    phi2 = (k12 * score[0] + score[1] - 2 / h * k12 * diff) / 2
    expected = theta + eps * torch.stack([phi1, phi2])
    moved = alg.adapted(x, y)
    torch.testing.assert_close(moved["head.weight"].view(2), expected[:, 0])
    torch.testing.assert_close(moved["head.bias"].view(2), expected[:, 1])


def _chaser_model(**options):
    torch.manual_seed(0)
    settings = {"particles": 3, "inner_lr": 0.01, "noise_var": 0.5, "leader_steps": 2,
                "leader_lr": 0.02, **options}
    return build("bmaml", MLP((1,), (6,)), ways=1, **settings).to(DT)


def test_chaser_loss_is_zero_without_leader_steps():
    alg = _chaser_model(leader_steps=0)
    batch = float64_sine_batch(tasks=2)
    loss, metrics = alg.meta_loss(batch)
    assert loss.item() == 0.0 and "mse" in metrics
    loss.backward()
    assert all(p.grad.abs().max() == 0 for p in alg.parameters())


def test_chaser_gradient_flows_only_through_the_chaser():
    alg = _chaser_model()
    batch = float64_sine_batch(tasks=1)
    sx, sy, qx, qy = batch.support_x[0], batch.support_y[0], batch.query_x[0], batch.query_y[0]
    theta = params_of(alg)
    loss = alg.task_loss(sx, sy, qx, qy, 1)[0]
    ours = torch.autograd.grad(loss, list(theta.values()))
    chaser = alg.adapted(sx, sy)
    union = alg.neg_log_posterior(torch.cat([sx, qx]), torch.cat([sy, qy]))
    # the leader: 2 more SVGD steps of 0.02 on support and query, from the chaser
    leader = svgd_steps(union, {k: v.detach() for k, v in chaser.items()}, steps=2, lr=0.02,
                        first_order=True)
    ref_loss = sum(((chaser[k] - leader[k].detach()) ** 2).sum() for k in chaser)
    torch.testing.assert_close(loss, ref_loss)
    ref = torch.autograd.grad(ref_loss, list(theta.values()), retain_graph=True)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)
    # without the stop-gradient the leader would pull the meta-gradient elsewhere
    through = svgd_steps(union, chaser, steps=2, lr=0.02, first_order=False)
    both = torch.autograd.grad(sum(((chaser[k] - through[k]) ** 2).sum() for k in chaser),
                               list(theta.values()))
    assert max((a - b).abs().max() for a, b in zip(ours, both, strict=True)) > 1e-8


def test_predictions_average_the_particles():
    alg = _chaser_model(particles=3).eval()
    batch = float64_sine_batch(tasks=1, shots=5, queries=4)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        out = alg.outputs(alg.adapted(sx, sy), qx)  # [3, 4, 1]
        torch.testing.assert_close(alg.adapt(sx, sy)(qx), out.mean(0))
        mean, cov = alg.predictive(sx, sy, qx)
        torch.testing.assert_close(mean, out.mean(0))
        torch.testing.assert_close(cov[:, 0, 0], out[..., 0].var(0, unbiased=False) + 0.5)
        samples = alg.function_samples(sx, sy, qx, 5)
        torch.testing.assert_close(samples, out[[0, 1, 2, 0, 1]])
        assert out[..., 0].std(0).min() > 0  # distinct particles
    torch.manual_seed(0)
    clf = build("bmaml", Conv4((1, 16, 16), hidden=4), ways=3, particles=4).to(DT).eval()
    images = float64_noise_image_batch(tasks=1, ways=3, shots=1, queries=2)
    sx, sy, qx = images.support_x[0], images.support_y[0], images.query_x[0]
    with torch.no_grad():
        probs = clf.outputs(clf.adapted(sx, sy), qx).softmax(-1).mean(0)  # [6, 3]
        torch.testing.assert_close(clf.adapt(sx, sy)(qx), probs.log())


def test_bad_config_raises():
    for bad in ({"particles": 0}, {"inner_lr": 0.0}, {"leader_lr": -1.0}, {"inner_steps": 0},
                {"eval_inner_steps": 0}, {"leader_steps": -1}, {"noise_var": 0.0},
                {"prior_precision": -1.0}, {"meta_loss": "leader"}, {"bn_mode": "running"}):
        with pytest.raises(ConfigError):
            get("bmaml").make_config(**bad)


@pytest.mark.slow
def test_learns_sinusoid_regression():
    from metazoo.tasks import SinusoidTasks

    torch.manual_seed(0)
    alg = build("bmaml", MLP((1,), (40, 40)), ways=1, particles=3, inner_lr=5e-3,
                noise_var=0.5, eval_inner_steps=5)
    tasks = SinusoidTasks(shots=10, queries=10, seed=0, split="train")
    test = SinusoidTasks(shots=10, queries=10, seed=0, split="test").batch(0, 100)

    def mse():
        alg.eval()
        with torch.no_grad():
            out = alg.predict(test.support_x, test.support_y, test.query_x)
        alg.train()
        return ((out - test.query_y) ** 2).mean().item()

    before = mse()
    opt = torch.optim.Adam(alg.parameters(), lr=3e-3)
    for i in range(600):  # about 15 s on one loaded core
        opt.zero_grad()
        alg.meta_loss(tasks.batch(i, 10))[0].backward()
        opt.step()
    after, zero = mse(), (test.query_y**2).mean().item()
    print(f"bmaml sinusoid: adapted MSE {before:.3f} -> {after:.3f}; predicting 0: {zero:.3f}")
    assert after * 2.5 < min(before, zero)
