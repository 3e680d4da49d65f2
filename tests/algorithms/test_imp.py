import math

import pytest
import torch
from torch import nn

from metazoo import algorithms
from metazoo.algorithms.imp import dp_threshold
from metazoo.errors import ConfigError
from tests.algorithms.learning import accuracy_before_after, glyph_episodes, separable_episodes


class Flatten(nn.Module):
    feature_dim = 4

    def forward(self, x):
        return x.flatten(1)


def _points(*rows):
    return torch.tensor([[float(a), float(b), 0.0, 0.0] for a, b in rows])


def test_huge_lambda_is_protonet_scaled_by_sigma():
    # One cluster per class: logits = ProtoNet's -d / (2 sigma) - (D/2) log(2 pi sigma).
    torch.manual_seed(0)
    sx, sy = torch.randn(12, 4) * 3, torch.arange(3).repeat_interleave(4)
    q = torch.randn(20, 4) * 3
    proto = algorithms.build("protonet", Flatten(), ways=3).adapt(sx, sy)(q)
    imp = algorithms.build("imp", Flatten(), ways=3, lam=1e9, init_sigma=2.0).adapt(sx, sy)(q)
    expected = proto / (2 * 2.0) - 0.5 * 4 * math.log(2 * math.pi * 2.0)
    torch.testing.assert_close(imp, expected)
    assert torch.equal(imp.argmax(1), proto.argmax(1))


def test_zero_lambda_is_one_nearest_neighbour_where_protonet_differs():
    # Class 0 is bimodal (-10, 0), (10, 0): its mean (0, 0) sits between the modes.
    sx = _points((-10, 0), (10, 0), (0, 3), (0, 5))
    sy = torch.tensor([0, 0, 1, 1])
    q = _points((0, 1.5), (9, 0), (0, 6), (-1, 0.5), (-8, 1))
    nn_pred = sy[torch.cdist(q, sx).argmin(1)]
    proto = algorithms.build("protonet", Flatten(), ways=2).adapt(sx, sy)(q).argmax(1)
    for lam in (0.0, 1e-6):
        imp = algorithms.build("imp", Flatten(), ways=2, lam=lam, init_sigma=0.01)
        assert torch.equal(imp.adapt(sx, sy)(q).argmax(1), nn_pred)
    assert nn_pred.tolist() == [1, 0, 1, 1, 0] and proto.tolist() == [0, 0, 1, 0, 0]


def test_soft_assignment_and_logits_by_hand():
    # Class 0: x1 = (0, 0), x2 = (6, 0), prototype p = (3, 0); lambda = 5 < d(x, p) = 9, so x1
    # then x2 seed clusters (x2 is 9 from p, 36 from x1). Class 1 is 1-shot at (0, 10).
    x1, x2, x3 = torch.tensor([0.0, 0]), torch.tensor([6.0, 0]), torch.tensor([0.0, 10])
    sx, sy = _points((0, 0), (6, 0), (0, 10)), torch.tensor([0, 0, 1])
    sigma = 4.0
    centres = [torch.tensor([3.0, 0]), x1, x2]
    w = torch.stack([torch.softmax(torch.stack([-((x - c) ** 2).sum() / (2 * sigma)
                                                for c in centres]), 0) for x in (x1, x2)])
    means = [(w[0, c] * x1 + w[1, c] * x2) / w[:, c].sum() for c in range(3)] + [x3]
    q = torch.tensor([[1.0, 1], [5, 5], [2, 9]])
    logp = torch.stack([torch.stack([-((z - m) ** 2).sum() / (2 * sigma)
                                     - 0.5 * 4 * math.log(2 * math.pi * sigma)
                                     for m in means]) for z in q])  # [M, 4 clusters]
    expected = torch.stack([logp[:, :3].max(1).values, logp[:, 3]], 1)
    imp = algorithms.build("imp", Flatten(), ways=2, lam=5.0, init_sigma=sigma)
    q4 = torch.cat([q, torch.zeros(3, 2)], 1)
    torch.testing.assert_close(imp.adapt(sx, sy)(q4), expected)


def test_threshold_formula():
    protos = torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, 4.0]])
    rho = protos.var(0).mean().item()  # (4 + 4) / 2 = 4
    assert rho == pytest.approx(4.0)
    assert dp_threshold(protos, 5.0, 0.1) == pytest.approx(
        -2 * 5 * math.log(0.1) + 2 * 5 * math.log(1 + 4.0 / 5))
    assert dp_threshold(protos, 5.0, 0.1, rho=0.0) == pytest.approx(10 * math.log(10))


def test_formula_lambda_adds_a_cluster_for_a_far_mode_only():
    # sigma = 1, alpha = 0.1, rho = 0: lambda = 2 log 10 = 4.6. Class 0 has modes 20 apart;
    # class 1 is tight (0.25 from its mean, no new cluster). A query at class 0's lone far mode
    # is nearer class 1's mean than class 0's: ProtoNet errs, IMP does not.
    sx = _points((-10, 0), (-10, 0.1), (10, 0), (6, 8.5), (6, 9.5))
    sy = torch.tensor([0, 0, 0, 1, 1])
    q = _points((10, 1), (6, 8))
    imp = algorithms.build("imp", Flatten(), ways=2, init_sigma=1.0, rho=0.0)
    proto = algorithms.build("protonet", Flatten(), ways=2)
    assert imp.adapt(sx, sy)(q).argmax(1).tolist() == [0, 1]
    assert proto.adapt(sx, sy)(q).argmax(1).tolist() == [1, 1]


def test_sigma_gets_a_gradient():
    imp = algorithms.build("imp", Flatten(), ways=2, lam=1e9)
    sx, sy = _points((0, 0), (0, 2), (3, 0), (3, 1)), torch.tensor([0, 0, 1, 1])
    loss = nn.functional.cross_entropy(imp.adapt(sx, sy)(_points((1, 1), (2, 0))),
                                       torch.tensor([0, 1]))
    loss.backward()
    assert imp.log_sigma.grad is not None and imp.log_sigma.grad.abs() > 0


def test_many_clusters_meta_loss_has_finite_nonzero_gradients():
    from metazoo import models
    from tests.conftest import tiny_batch

    torch.manual_seed(0)
    alg = algorithms.build("imp", models.build("conv4", hidden=8), ways=3, lam=0.0,
                           cluster_steps=2)
    loss, metrics = alg.meta_loss(tiny_batch(3, shots=3))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1
    for name, p in alg.named_parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_config_raises():
    for bad, match in [({"init_sigma": 0.0}, "init_sigma"), ({"alpha": 0.0}, "alpha"),
                       ({"rho": -1.0}, "rho"), ({"lam": -0.5}, "lam"),
                       ({"cluster_steps": 0}, "cluster_steps")]:
        with pytest.raises(ConfigError, match=match):
            algorithms.build("imp", Flatten(), ways=2, **bad)
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        algorithms.build("imp", Flatten(), ways=2, alpah=0.1)


def test_imp_learns_separable_classes():
    from metazoo import models

    torch.manual_seed(0)
    alg = algorithms.build("imp", models.build("conv4", hidden=16), ways=5)
    before, after = accuracy_before_after(alg, *separable_episodes(shots=2), steps=60)
    assert after >= 0.6 and after > before + 0.05, (before, after)


@pytest.mark.slow
def test_imp_learns_glyphs_5way_1shot():
    from metazoo import models

    torch.manual_seed(0)
    alg = algorithms.build("imp", models.build("conv4", hidden=32), ways=5)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=80)
    assert after >= 0.6 and after > before + 0.1, (before, after)
