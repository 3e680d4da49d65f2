"""ALPaCA: the posterior predictive equals Gaussian conditioning; it learns, and is calibrated."""

from __future__ import annotations

import pytest
import torch

from metazoo.algorithms import build, get
from metazoo.errors import ConfigError, ShapeError
from metazoo.models.mlp import MLP
from tests.algorithms.learning import float64_sine_batch

DT = torch.float64


def _model(**options):
    torch.manual_seed(0)
    return build("alpaca", MLP((1,), (16, 8), "tanh"), ways=1, **options).to(DT)


def test_predictive_equals_conditioning_the_joint_gaussian_of_support_and_query():
    alg = _model(noise_var=0.3).eval()
    batch = float64_sine_batch(tasks=1, shots=5, queries=4)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    mean, cov = alg.predictive(sx, sy, qx)
    with torch.no_grad():  # y = Phi K + eps, vec K ~ N(K_0, 0.3 Lambda_0^-1), eps ~ N(0, 0.3 I)
        phi = alg.backbone(torch.cat([sx, qx]))
        prior_cov = torch.linalg.inv(alg.prior_precision())
        joint = 0.3 * (phi @ prior_cov @ phi.T + torch.eye(9, dtype=DT))
        mu = phi @ alg.prior_mean
        s, q = slice(0, 5), slice(5, 9)
        gain = joint[q, s] @ torch.linalg.inv(joint[s, s])
        torch.testing.assert_close(mean, mu[q] + gain @ (sy - mu[s]))
        torch.testing.assert_close(cov[:, 0, 0], torch.diagonal(joint[q, q] - gain @ joint[s, q]))


def test_context_masking_equals_a_shorter_support_and_its_draws_are_a_function_of_the_episode():
    alg = _model()
    batch = float64_sine_batch(tasks=1, shots=6, queries=3)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    masked = alg.predictive(sx, sy, qx, context=2)
    shorter = alg.predictive(sx[:2], sy[:2], qx)
    torch.testing.assert_close(masked[0], shorter[0])
    torch.testing.assert_close(masked[1], shorter[1])
    prior_only = alg.predictive(sx, sy, qx, context=0)[0]
    torch.testing.assert_close(prior_only, alg.backbone(qx) @ alg.prior_mean)
    alg.begin_step(3, 10)
    torch.manual_seed(1)
    first = alg.meta_loss(batch)[0]
    torch.manual_seed(2)  # another global generator state: the same context sizes
    torch.testing.assert_close(alg.meta_loss(batch)[0], first, rtol=0, atol=0)


def test_bad_targets_and_config_raise():
    alg = _model(output_dim=2)
    batch = float64_sine_batch(tasks=1)
    with pytest.raises(ShapeError, match="output_dim"):
        alg.predictive(batch.support_x[0], batch.support_y[0], batch.query_x[0])
    for bad in ({"noise_var": 0.0}, {"output_dim": 0}, {"context_sizes": "some"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("alpaca").make_config(**bad)


@pytest.mark.slow
def test_learns_sinusoid_with_calibrated_intervals():
    from metazoo.engine.evaluate import evaluate
    from metazoo.tasks import SinusoidTasks

    torch.manual_seed(0)
    alg = build("alpaca", MLP((1,), (64, 64, 16), "tanh"), ways=1)  # the paper's: 128-128-32
    tasks = SinusoidTasks(shots=10, queries=20, seed=0, split="train")
    opt = torch.optim.Adam(alg.parameters(), lr=3e-3)
    for step in range(500):  # about 40 s on one idle core
        alg.begin_step(step, 500)
        opt.zero_grad()
        alg.meta_loss(tasks.batch(step, 10))[0].backward()
        opt.step()
    test = SinusoidTasks(shots=10, queries=50, seed=0, split="test").batch(0, 100)
    alg.eval()
    with torch.no_grad():
        means, inside = [], []
        for i in range(len(test)):
            mean, cov = alg.predictive(test.support_x[i], test.support_y[i], test.query_x[i])
            half = 1.96 * cov[:, 0, 0].sqrt()
            inside.append(((test.query_y[i][:, 0] - mean[:, 0]).abs() <= half).float().mean())
            prior, _ = alg.predictive(test.support_x[i], test.support_y[i], test.query_x[i], 0)
            means.append(((mean - test.query_y[i]) ** 2).mean() / ((prior - test.query_y[i]) ** 2
                                                                    ).mean())
        coverage = torch.stack(inside).mean().item()
        reported = evaluate(alg, SinusoidTasks(shots=10, queries=50, seed=0, split="test"),
                            episodes=100, batch_size=100)
    assert reported.coverage95 == pytest.approx(coverage)
    ratio = torch.stack(means).mean().item()
    print(f"alpaca sinusoid: post/prior MSE {ratio:.3f}, 95% interval coverage {coverage:.3f}")
    assert ratio < 0.2
    assert 0.85 <= coverage <= 0.995
