"""VERSA: the amortised posterior against a hand computation, the local-reparameterisation
predictive against the same draws by hand and against explicit weight sampling, the zero-variance
limit, Eq. 4 as a log-mean-exp, seeded draws, bad configs, learning on glyphs."""

import math

import pytest
import torch

from metazoo.algorithms import build, get
from metazoo.algorithms.versa import log_predictive
from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.seeding import episode_generator
from tests.algorithms.learning import float64_noise_image_batch

DT = torch.float64
WAYS, SHOTS = 3, 2


def _versa(**options):
    torch.manual_seed(0)
    return build("versa", Conv4((1, 16, 16), hidden=6), ways=WAYS, hidden=5, **options).to(DT)


def _batch(ways=WAYS, **kw):
    return float64_noise_image_batch(ways=ways, shots=SHOTS, queries=2, **kw)


def _elu(x):
    return torch.where(x > 0, x, torch.exp(x) - 1)


def _mlp(net, h):
    """The three dense layers with ELU between, written out."""
    a, b, c = net[0], net[2], net[4]
    return _elu(_elu(h @ a.weight.T + a.bias) @ b.weight.T + b.bias) @ c.weight.T + c.bias


def _hand_posterior(alg, sx, sy, ways):
    """Class means of the support features (a loop), then the four MLPs; bias last."""
    feats = alg.backbone(sx)
    pooled = torch.stack([feats[sy == k].mean(0) for k in range(ways)])
    q = alg.amortisation
    mean = torch.cat([_mlp(q.weight_mean, pooled), _mlp(q.bias_mean, pooled)], 1)
    log_var = torch.cat([_mlp(q.weight_log_variance, pooled), _mlp(q.bias_log_variance, pooled)], 1)
    return mean, log_var


def _hand_moments(x, mean, log_var):
    """Logit mean and variance by sums over features: the local reparameterisation."""
    d = x.shape[1]
    m = torch.stack([torch.stack([(x[i] * mean[k, :d]).sum() + mean[k, d]
                                  for k in range(len(mean))]) for i in range(len(x))])
    v = torch.stack([torch.stack([(x[i] ** 2 * log_var[k, :d].exp()).sum() + log_var[k, d].exp()
                                  for k in range(len(mean))]) for i in range(len(x))])
    return m, v


@pytest.mark.parametrize("ways", [WAYS, 5])
def test_posterior_shapes_and_values_equal_a_hand_computation(ways):
    """Any N from the same networks (no fixed head): `[N, D + 1]` means and log-variances."""
    alg, batch = _versa(), _batch(ways)
    sx, sy = batch.support_x[0], batch.support_y[0]
    mean, log_var = alg.posterior(sx, sy, ways)
    d = alg.backbone.feature_dim
    assert mean.shape == log_var.shape == (ways, d + 1)
    hand_mean, hand_log_var = _hand_posterior(alg, sx, sy, ways)
    torch.testing.assert_close(mean, hand_mean)
    torch.testing.assert_close(log_var, hand_log_var)
    assert alg.adapt(sx, sy, ways=ways)(batch.query_x[0]).shape == (ways * 2, ways)


def test_predictive_equals_the_monte_carlo_average_of_the_same_draws():
    """Evaluation: log(1/S sum_s softmax(m + sqrt(v) eps_s)), eps from the episode's generator."""
    alg, batch = _versa(samples=7), _batch()
    alg.eval()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    mean, log_var = _hand_posterior(alg, sx, sy, WAYS)
    m, v = _hand_moments(alg.backbone(qx), mean, log_var)
    eps = torch.randn((7, *m.shape), generator=episode_generator("versa/eval", 0, 0, sx), dtype=DT)
    probs = torch.softmax(m + v.sqrt() * eps, -1).mean(0)
    out = alg.adapt(sx, sy)(qx)
    torch.testing.assert_close(out, probs.log())
    assert (probs - torch.softmax(m, -1)).abs().max() > 0.01  # the draws matter here


def test_local_reparameterisation_equals_explicit_weight_sampling():
    """Drawing w ~ q and averaging softmax(x . w) gives the same predictive (within Monte-Carlo
    error) as drawing the logits; a wrong logit variance (x instead of x^2) is told apart."""
    s = 100000
    alg, batch = _versa(samples=s), _batch()
    alg.eval()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        for net in (alg.amortisation.weight_mean, alg.amortisation.bias_mean):
            net[4].weight.mul_(3.0)  # means further apart: probabilities away from uniform
        out = alg.adapt(sx, sy)(qx).exp()
        mean, log_var = alg.posterior(sx, sy, WAYS)
        xa = torch.cat([alg.backbone(qx), torch.ones(len(qx), 1, dtype=DT)], 1)  # [M, D + 1]
        g = torch.Generator().manual_seed(1)
        w = mean + (log_var / 2).exp() * torch.randn((s, *mean.shape), generator=g, dtype=DT)
        explicit = torch.softmax(torch.einsum("md,snd->smn", xa, w), -1).mean(0)
        m = xa @ mean.T
        wrong = torch.softmax(m + (xa @ log_var.exp().T).sqrt()
                              * torch.randn((s, *m.shape), generator=g, dtype=DT), -1).mean(0)
    torch.testing.assert_close(out, explicit, rtol=0, atol=0.008)  # Monte-Carlo error ~0.003
    assert (wrong - explicit).abs().max() > 0.02
    assert (explicit - torch.softmax(m, -1)).abs().max() > 0.03  # the variance matters here


@pytest.mark.parametrize("training", [False, True])
def test_zero_variance_gives_the_softmax_of_the_mean_weight_logits(training):
    alg, batch = _versa(), _batch()
    alg.train(training)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        for net in (alg.amortisation.weight_log_variance, alg.amortisation.bias_log_variance):
            net[4].weight.zero_()
            net[4].bias.fill_(-math.inf)  # log-variance -inf: sigma = 0
        mean, _ = _hand_posterior(alg, sx, sy, WAYS)
        m = alg.backbone(qx) @ mean[:, :-1].T + mean[:, -1]
        torch.testing.assert_close(alg.adapt(sx, sy)(qx).exp(), torch.softmax(m, -1))


def test_log_predictive_is_a_log_mean_exp_of_probabilities():
    """Two samples of the logits of one point: log((0.5 + e^2 / (1 + e^2)) / 2) for class 0."""
    logits = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]]], dtype=DT)
    p0 = (0.5 + math.exp(2) / (1 + math.exp(2))) / 2
    torch.testing.assert_close(log_predictive(logits),
                               torch.tensor([[math.log(p0), math.log(1 - p0)]], dtype=DT))


def test_task_loss_is_eq4_log_mean_exp_not_the_mean_of_logs():
    """Training: -1/M sum_m log(1/L sum_l p(y_m | x_m, w_l)) with L = train_samples draws of the
    training generator (sample_seed, meta-iteration, episode); strictly below the mean over
    samples of the cross-entropy (Jensen), which a mean of logs would give."""
    alg, batch = _versa(train_samples=5), _batch()
    alg.begin_step(3, 10)
    sx, sy, qx, qy = (batch.support_x[0], batch.support_y[0], batch.query_x[0],
                      batch.query_y[0])
    mean, log_var = _hand_posterior(alg, sx, sy, WAYS)
    m, v = _hand_moments(alg.backbone(qx), mean, log_var)
    eps = torch.randn((5, *m.shape), generator=episode_generator("versa", 0, 3, sx), dtype=DT)
    logp = torch.log_softmax(m + v.sqrt() * eps, -1).detach()  # [L, M, N]
    per_point = [math.log(sum(math.exp(float(logp[s, i, qy[i]])) for s in range(5)) / 5)
                 for i in range(len(qy))]
    expected = -sum(per_point) / len(qy)
    loss, metrics = alg.task_loss(sx, sy, qx, qy, WAYS)
    assert math.isclose(loss.item(), expected, rel_tol=1e-12)
    mean_of_logs = -logp[:, torch.arange(len(qy)), qy].mean().item()
    assert loss.item() < mean_of_logs - 1e-3
    assert set(metrics) == {"acc"}


def test_draws_are_seeded_by_step_and_episode_never_the_global_generator():
    alg, batch = _versa(), _batch(tasks=2)
    loss = alg.meta_loss(batch)[0]
    torch.manual_seed(123)
    torch.testing.assert_close(alg.meta_loss(batch)[0], loss, rtol=0, atol=0)
    alg.begin_step(1, 10)
    assert alg.meta_loss(batch)[0] != loss  # fresh draws at the next meta-iteration
    alg.eval()
    out = alg.predict(batch.support_x, batch.support_y, batch.query_x)
    alg.begin_step(7, 10)
    torch.manual_seed(5)  # evaluation draws depend on neither the step nor the global generator
    torch.testing.assert_close(alg.predict(batch.support_x, batch.support_y, batch.query_x), out,
                               rtol=0, atol=0)
    other = _versa(sample_seed=1).eval()
    assert not torch.equal(other.predict(batch.support_x, batch.support_y, batch.query_x), out)


@pytest.mark.parametrize("options", [{"hidden": 0}, {"train_samples": 0}, {"samples": 0},
                                     {"samples": 2.5}])
def test_bad_config_raises(options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        get("versa").make_config(**options)


def test_learns_glyphs_5way_1shot():
    """conv4-16, amortisation MLPs of width 64, Adam 3e-3, 40 steps of 4 tasks. Measured, seeds
    0-2: 0.20 before, 0.60-0.66 after (60 steps: 0.68 for seed 0)."""
    from tests.algorithms.learning import accuracy_before_after, glyph_episodes

    torch.manual_seed(0)
    alg = build("versa", Conv4((1, 28, 28), hidden=16), ways=5, hidden=64)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=40, lr=3e-3)
    print(f"versa glyphs 5-way 1-shot accuracy before {before:.3f}, after {after:.3f}")
    assert after > 0.55 and after > before + 0.25, (before, after)
