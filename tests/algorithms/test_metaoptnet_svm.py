"""MetaOptNet: SVM and ridge base learners as their closed forms, the paper's smoothed loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.solvers import ridge_regression, svm_dual
from tests.algorithms.learning import float64_noise_image_batch

DT = torch.float64


def _model(**options):
    torch.manual_seed(0)
    return build("metaoptnet_svm", Conv4((1, 16, 16), hidden=4), ways=3, **options).to(DT)


def test_svm_logits_are_the_dual_solution_on_the_query_support_kernel():
    alg = _model(init_scale=3.0).eval()
    batch = float64_noise_image_batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        zs, zq = alg.backbone(sx), alg.backbone(qx)
        alpha = svm_dual((zs @ zs.T)[None], sy[None], 3, 0.1, 15)[0]
        torch.testing.assert_close(alg.adapt(sx, sy)(qx), 3.0 * (zq @ zs.T) @ alpha)
    assert torch.allclose(alpha.sum(1), torch.zeros(len(sy), dtype=DT), atol=1e-6)  # sum_k = 0
    assert (alpha <= 0.1 * F.one_hot(sy, 3) + 1e-6).all()  # alpha <= C 1[y = k]


def test_training_uses_fewer_solver_iterations_than_evaluation():
    alg = _model(solver_iters=1, eval_solver_iters=30)
    batch = float64_noise_image_batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        train_out = alg.train().adapt(sx, sy)(qx)
        eval_out = alg.eval().adapt(sx, sy)(qx)
        zs = alg.backbone(sx)  # eval-mode batch statistics equal train-mode ones here
        one = svm_dual((zs @ zs.T)[None], sy[None], 3, 0.1, 1)[0]
        torch.testing.assert_close(train_out, (alg.backbone(qx) @ zs.T) @ one)
    assert (train_out - eval_out).abs().max() > 1e-6


def test_ridge_variant_is_twice_the_ridge_weights():
    torch.manual_seed(0)
    alg = build("metaoptnet_ridge", Conv4((1, 16, 16), hidden=4), ways=3).to(DT)
    batch = float64_noise_image_batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    zs, zq = alg.backbone(sx), alg.backbone(qx)
    w = ridge_regression(zs[None], F.one_hot(sy, 3).to(DT)[None], 50.0)[0]
    torch.testing.assert_close(alg.adapt(sx, sy)(qx), 2 * zq @ w)


def test_training_loss_is_the_papers_label_smoothing():
    alg = _model()
    batch = float64_noise_image_batch()
    sx, sy, qx, qy = batch.support_x[0], batch.support_y[0], batch.query_x[0], batch.query_y[0]
    torch.manual_seed(1)
    loss, _ = alg.task_loss(sx, sy, qx, qy, 3)
    torch.manual_seed(1)
    logits = alg.adapt(sx, sy)(qx)
    target = F.one_hot(qy, 3).to(DT) * 0.9 + (1 - F.one_hot(qy, 3).to(DT)) * 0.1 / 2
    torch.testing.assert_close(loss, -(target * logits.log_softmax(-1)).sum(-1).mean())
    alg.eval()
    plain, _ = alg.task_loss(sx, sy, qx, qy, 3)
    torch.testing.assert_close(plain, F.cross_entropy(alg.adapt(sx, sy)(qx), qy))


def test_bad_config_raises():
    for bad in ({"svm_c": 0.0}, {"solver_iters": 0}, {"label_smoothing": 1.0},
                {"base_learner": "lasso"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("metaoptnet_svm").make_config(**bad)


@pytest.mark.slow
def test_learns_glyphs():
    from tests.algorithms.learning import glyph_episodes, meta_train, query_accuracy

    torch.manual_seed(0)
    alg = build("metaoptnet_svm", Conv4((1, 28, 28), hidden=16), ways=5)
    train, test = glyph_episodes()
    before = query_accuracy(alg, test)
    meta_train(alg, train, 60, 3e-3)
    after = query_accuracy(alg, test)
    print(f"metaoptnet_svm glyphs 5-way 1-shot accuracy before {before:.3f}, after {after:.3f}")
    assert after > 0.6 and after > before + 0.1
