"""PLATIPUS: Algorithm 1 by hand, the zero-variance limit is MAML, the KL, draws, outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.algorithms.platipus import diagonal_gaussian_kl
from metazoo.errors import ConfigError
from metazoo.functional import call
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.seeding import episode_generator
from tests.algorithms.learning import float64_noise_image_batch, float64_sine_batch

DT = torch.float64
ZERO_VARIANCE = {"prior_std_init": 1e-12, "posterior_std_init": 1e-12, "prior_step_init": 0.0,
                 "posterior_step_init": 0.0}
NETWORK = ("backbone.", "head.")


def _mlp(**options):
    torch.manual_seed(0)
    return build("platipus", MLP((1,), (6, 5)), ways=1, **options).to(DT)


def _net(p, x):
    """MLP (1 -> 6 -> 5) + head written by hand: p = [W0, b0, W1, b1, Wh, bh]."""
    h = torch.relu(x @ p[0].T + p[1])
    h = torch.relu(h @ p[2].T + p[3])
    return h @ p[4].T + p[5]


def _mse(p, x, y):
    return ((_net(p, x) - y) ** 2).mean()


def _step(p, x, y, lr):
    """p - lr * grad L(p; x, y), keeping the graph (second order)."""
    g = torch.autograd.grad(_mse(p, x, y), p, create_graph=True)
    return [a - lr * b for a, b in zip(p, g, strict=True)]


@pytest.mark.parametrize("posterior_data", ["test", "train_test"])
def test_task_loss_and_meta_gradient_equal_algorithm_1_by_hand(posterior_data):
    alg = _mlp(inner_lr=0.05, kl_weight=0.3, prior_std_init=0.05, posterior_std_init=0.02,
               prior_step_init=0.1, posterior_step_init=0.2, posterior_data=posterior_data)
    alg.begin_step(7, 10)
    batch = float64_sine_batch(tasks=1, shots=4, queries=5)
    sx, sy, qx, qy = batch.support_x[0], batch.support_y[0], batch.query_x[0], batch.query_y[0]
    loss = alg.task_loss(sx, sy, qx, qy, 1)[0]
    names = [k for k, _ in alg.named_parameters() if k.startswith(NETWORK)]
    ours = dict(zip([k for k, _ in alg.named_parameters()],
                    torch.autograd.grad(loss, list(alg.parameters())), strict=True))

    params = dict(alg.named_parameters())
    mu = [params[k].detach().clone().requires_grad_() for k in names]
    key = {k: k.replace(".", ":") for k in names}
    log_sq = [params[f"posterior_log_std.{key[k]}"].detach().clone().requires_grad_()
              for k in names]
    log_sp = [params[f"prior_log_std.{key[k]}"].detach().clone().requires_grad_() for k in names]
    gp, gq = (params[k].detach().clone().requires_grad_() for k in ("gamma_p", "gamma_q"))
    px, py = (qx, qy) if posterior_data == "test" else (torch.cat([sx, qx]), torch.cat([sy, qy]))
    mean_q = _step(mu, px, py, gq)  # line 7: q's mean, shifted by the test points' gradient
    mean_p = _step(mu, sx, sy, gp)  # line 10: p's mean, shifted by the training points'
    g = episode_generator("platipus", 0, 7, sx)  # one N(0, 1) draw per tensor, in order
    theta = [m + s.exp() * torch.randn(m.shape, generator=g, dtype=DT)
             for m, s in zip(mean_q, log_sq, strict=True)]
    phi = _step(theta, sx, sy, 0.05)  # lines 8-9: MAML's step
    kl = sum(kl_divergence(Normal(a, b.exp()), Normal(c, d.exp())).sum()
             for a, b, c, d in zip(mean_q, log_sq, mean_p, log_sp, strict=True))
    ref = _mse(phi, qx, qy) + 0.3 * kl  # line 11
    torch.testing.assert_close(loss, ref)
    leaves = [*mu, *log_sp, *log_sq, gp, gq]
    ref_grads = torch.autograd.grad(ref, leaves)
    labels = [*names, *(f"prior_log_std.{key[k]}" for k in names),
              *(f"posterior_log_std.{key[k]}" for k in names), "gamma_p", "gamma_q"]
    assert kl > 1e-3 and all(g.abs().max() > 0 for g in ref_grads)  # every term matters
    for label, r in zip(labels, ref_grads, strict=True):
        torch.testing.assert_close(ours[label], r, msg=label)


def _conv_batch():
    return float64_noise_image_batch(tasks=2, ways=3, shots=2, queries=2)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_zero_variance_posterior_is_maml(kind):
    """sigma_theta, sqrt(v_q) -> 0 and gamma_p = gamma_q = 0: theta = mu_theta, KL = 0."""
    def backbone():
        return MLP((1,), (6, 5)) if kind == "regression" else Conv4((1, 16, 16), hidden=4)
    ways, batch = (1, float64_sine_batch()) if kind == "regression" else (3, _conv_batch())
    options = {"inner_lr": 0.05, "inner_steps": 2}
    torch.manual_seed(0)
    plat = build("platipus", backbone(), ways=ways, **ZERO_VARIANCE, **options).to(DT)
    maml = build("maml", backbone(), ways=ways, **options).to(DT)
    maml.load_state_dict({k: v for k, v in plat.state_dict().items() if k.startswith(NETWORK)})
    results = []
    for alg in (plat, maml):
        loss = batching.meta_loss(alg, batch, "loop")[0]
        results.append((loss, dict(zip([k for k, _ in alg.named_parameters()],
                                        torch.autograd.grad(loss, list(alg.parameters())),
                                        strict=True))))
    (loss_p, grads_p), (loss_m, grads_m) = results
    torch.testing.assert_close(loss_p, loss_m)
    assert max(g.abs().max() for g in grads_m.values()) > 1e-3  # a check that can fail
    for k, g in grads_m.items():
        torch.testing.assert_close(grads_p[k], g, msg=k)
    # with positive variances the same weights give another loss: the comparison can fail
    torch.manual_seed(0)
    noisy = build("platipus", backbone(), ways=ways, **options).to(DT)
    noisy.load_state_dict(plat.state_dict() | {k: v for k, v in noisy.state_dict().items()
                                               if not k.startswith(NETWORK)})
    assert (batching.meta_loss(noisy, batch, "loop")[0] - loss_m).abs() > 1e-4


def test_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    shapes = {"a.weight": (3, 4), "b": (5,)}

    def rand(scale):
        return {k: torch.randn(s, generator=g, dtype=DT) * scale for k, s in shapes.items()}

    mean_q, log_q, mean_p, log_p = rand(1.0), rand(0.5), rand(1.0), rand(0.5)
    ref = sum(kl_divergence(Normal(mean_q[k], log_q[k].exp()),
                            Normal(mean_p[k], log_p[k].exp())).sum() for k in shapes)
    torch.testing.assert_close(diagonal_gaussian_kl(mean_q, log_q, mean_p, log_p), ref)
    assert ref > 1.0
    same = diagonal_gaussian_kl(mean_q, log_q, mean_q, log_q)
    assert same.abs() < 1e-12


def test_draws_differ_across_samples_and_repeat_for_the_same_episode():
    alg = _mlp(prior_std_init=0.1).eval()
    batch = float64_sine_batch(tasks=2)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    torch.manual_seed(1)
    first = alg.function_samples(sx, sy, qx, 4)
    torch.manual_seed(2)  # another global generator state: the same functions
    torch.testing.assert_close(alg.function_samples(sx, sy, qx, 4), first, rtol=0, atol=0)
    torch.testing.assert_close(alg.function_samples(sx, sy, qx, 2), first[:2], rtol=0, atol=0)
    assert first.shape == (4, qx.shape[0], 1)
    assert first.std(0).min() > 1e-4  # positive variance: the sampled functions differ
    other = alg.function_samples(sx + 1e-3, sy, qx, 4)  # another episode: other draws
    assert (other - first).abs().max() > 1e-3
    still = _mlp(**ZERO_VARIANCE).eval().function_samples(sx, sy, qx, 4)
    assert still.std(0).max() < 1e-9  # zero variance: one function
    alg.train()  # training draws follow the meta-iteration, not the global generator
    losses = []
    for step, seed in ((3, 1), (3, 2), (4, 1)):
        alg.begin_step(step, 10)
        torch.manual_seed(seed)
        losses.append(alg.meta_loss(batch)[0].item())
    assert losses[0] == losses[1] != losses[2]


def test_classification_output_is_the_log_of_the_averaged_probabilities():
    torch.manual_seed(0)
    alg = build("platipus", Conv4((1, 16, 16), hidden=4), ways=3, samples=3,
                prior_std_init=0.2).to(DT).eval()
    batch = _conv_batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        out = alg.adapt(sx, sy)(qx)
        probs = torch.stack([F.softmax(call(alg, phi, qx), -1)
                             for phi in alg.sampled_params(sx, sy, 3)])  # [S, M, N]
    assert (probs - probs.mean(0)).abs().max() > 1e-3  # the sampled classifiers disagree
    torch.testing.assert_close(out, probs.mean(0).log())
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(qx.shape[0], dtype=DT))


def test_regression_predictive_is_the_moments_of_the_sampled_functions_plus_noise():
    alg = _mlp(samples=6, prior_std_init=0.1, noise_var=0.2).eval()
    batch = float64_sine_batch(tasks=1)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    f = alg.function_samples(sx, sy, qx, 6)
    mean, cov = alg.predictive(sx, sy, qx)
    torch.testing.assert_close(mean, f.mean(0))
    torch.testing.assert_close(alg.adapt(sx, sy)(qx), mean)
    spread = f.var(0, correction=0)
    assert spread.min() > 1e-6
    torch.testing.assert_close(cov, (spread + 0.2)[..., None])


@pytest.mark.parametrize(("option", "value"), [
    ("prior_std_init", 0.0), ("posterior_std_init", -1.0), ("prior_step_init", -0.1),
    ("posterior_step_init", -1.0), ("kl_weight", -1.0), ("samples", 0), ("noise_var", 0.0),
    ("inner_lr", 0.0), ("posterior_data", "both"),
])
def test_bad_config_raises(option, value):
    with pytest.raises(ConfigError, match=option):
        get("platipus").make_config(**{option: value})


@pytest.mark.slow
def test_learns_sinusoid_regression():
    from metazoo.tasks import SinusoidTasks
    from tests.algorithms.pretraining import one_thread

    torch.manual_seed(0)
    alg = build("platipus", MLP((1,), (40, 40)), ways=1, inner_lr=0.01, eval_inner_steps=10,
                kl_weight=0.1, samples=5)
    tasks = SinusoidTasks(shots=10, queries=10, seed=0, split="train")
    opt = torch.optim.Adam(alg.parameters(), lr=5e-3)
    with one_thread():  # a loop of tiny kernels: a second intra-op thread only waits
        for step in range(300):  # about 15 s on one core
            alg.begin_step(step, 300)
            opt.zero_grad()
            alg.meta_loss(tasks.batch(step, 10))[0].backward()
            opt.step()
        test = SinusoidTasks(10, 10, seed=0, split="test").batch(0, 100)
        alg.eval()
        post = alg.predict(test.support_x, test.support_y, test.query_x).detach()
    zero, mse = (test.query_y ** 2).mean(), ((post - test.query_y) ** 2).mean()
    assert mse * 2.5 <= zero, (zero, mse)  # measured 3.21 -> 0.90 (3.6x)
