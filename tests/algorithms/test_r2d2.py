"""R2-D2 and LR-D2: the base learner equals its closed form, and meta-training learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.solvers import logistic_regression
from tests.algorithms.learning import float64_noise_image_batch

DT = torch.float64


def _features(alg, sx, qx):
    z = alg.backbone(torch.cat([sx, qx]))
    z = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)  # the bias feature
    return z[: len(sx)], z[len(sx):]


def test_r2d2_logits_are_calibrated_ridge_regression_in_the_primal_form():
    torch.manual_seed(0)
    alg = build("r2d2", Conv4((1, 16, 16), hidden=8), ways=3, init_scale=2.0).to(DT)
    with torch.no_grad():
        alg.bias.fill_(0.5)
    batch = float64_noise_image_batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    zs, zq = _features(alg, sx, qx)
    n, lam = len(zs), 50.0
    # primal form with X, Y scaled by 1/sqrt(n): (X^T X / n + lam I)^-1 X^T Y / n
    y = F.one_hot(sy, 3).to(DT)
    w = torch.linalg.inv(zs.T @ zs / n + lam * torch.eye(zs.shape[1], dtype=DT)) @ zs.T @ y / n
    expected = 2.0 * (zq @ w) + 0.5
    torch.testing.assert_close(alg.adapt(sx, sy)(qx), expected)
    assert zs.shape[1] > n  # the algorithm took the dual (Woodbury) form: same function


def test_r2d2_lambda_is_learned_or_fixed():
    alg = build("r2d2", Conv4((1, 16, 16), hidden=4), ways=3)
    batch = float64_noise_image_batch().to("cpu", torch.float32)
    alg.meta_loss(batch)[0].backward()
    assert alg.log_lambda.grad is not None and alg.log_lambda.grad.abs() > 0
    fixed = build("r2d2", Conv4((1, 16, 16), hidden=4), ways=3, learn_lambda=False)
    assert "log_lambda" not in dict(fixed.named_parameters())
    assert math.isclose(float(fixed.log_lambda.exp()), 50.0, rel_tol=1e-6)


def test_lrd2_logits_come_from_the_one_vs_rest_regularised_logistic_optimum():
    torch.manual_seed(0)
    alg = build("lrd2", Conv4((1, 16, 16), hidden=4), ways=3, newton_steps=30).to(DT)
    batch = float64_noise_image_batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    zs, zq = _features(alg, sx, qx)
    targets = F.one_hot(sy, 3).to(DT)
    w = logistic_regression(zs[None], targets[None], 50.0, 30)[0]  # [D + 1, 3]
    torch.testing.assert_close(alg.adapt(sx, sy)(qx), zq @ w)
    # each column is the optimum of sum_i logistic loss + 50/2 ||w||^2: zero gradient
    grad = zs.T @ (torch.sigmoid(zs @ w) - targets) + 50.0 * w
    assert grad.abs().max() < 1e-9


@pytest.mark.parametrize("name", ["r2d2", "lrd2"])
def test_bad_config_raises(name):
    with pytest.raises(ConfigError, match="init_lambda"):
        get(name).make_config(init_lambda=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r2d2", "lrd2"])
def test_learns_glyphs(name):
    from tests.algorithms.learning import glyph_episodes, meta_train, query_accuracy

    torch.manual_seed(0)
    options = {"init_scale": 10.0} if name == "r2d2" else {"newton_steps": 2}
    alg = build(name, Conv4((1, 28, 28), hidden=16), ways=5, **options)
    train, test = glyph_episodes()
    before = query_accuracy(alg, test)
    meta_train(alg, train, 100 if name == "lrd2" else 60, 3e-3)
    after = query_accuracy(alg, test)
    print(f"{name} glyphs 5-way 1-shot accuracy before {before:.3f}, after {after:.3f}")
    assert after > 0.6 and after > before + 0.1
