"""RFS: the logistic-regression solver's optimum (gradient zero, equal to L-BFGS), the predictor
on L2-normalised features, and learning from a pre-trained backbone."""

import pytest
import torch
import torch.nn.functional as F

from metazoo import algorithms, models
from metazoo.errors import ConfigError, ShapeError
from metazoo.solvers.multinomial_logistic import multinomial_logistic
from tests.algorithms.learning import float64_noise_image_batch
from tests.algorithms.pretraining import few_shot_accuracy, glyph_pretraining


def _objective(w, b, x, y, c):
    return F.cross_entropy(x @ w.T + b, y, reduction="sum") + (w**2).sum() / (2 * c)


def _features(n, d, ways, seed=0, normalize=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (F.normalize(x, dim=-1) if normalize else x), torch.arange(ways).repeat(n // ways)


@pytest.mark.parametrize(("n", "d", "ways", "c", "normalize"), [
    (5, 64, 5, 1.0, True),  # 5-way 1-shot, more features than examples (row-space form)
    (25, 40, 5, 1.0, True),  # 5-way 5-shot
    (20, 3, 4, 0.5, True),  # fewer features than examples
    (12, 30, 3, 10.0, False),  # weak penalty, unnormalised features: a line search is needed
])
def test_solution_satisfies_the_optimality_condition(n, d, ways, c, normalize):
    x, y = _features(n, d, ways, normalize=normalize)
    w, b = multinomial_logistic(x, y, ways, c=c)
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    gw, gb = torch.autograd.grad(_objective(w, b, x, y, c), [w, b])
    assert gw.abs().max() < 1e-9 and gb.abs().max() < 1e-9, (gw.abs().max(), gb.abs().max())
    assert abs(float(b.detach().sum())) < 1e-9  # the intercepts' flat direction stays at 0


def test_solution_equals_lbfgs_on_the_full_problem():
    """Reference: torch's L-BFGS on (W, b) in all D dimensions, from zero (as scikit-learn)."""
    x, y = _features(6, 10, 3, seed=1)
    w, b = multinomial_logistic(x, y, 3, c=1.0)
    wr = torch.zeros(3, 10, dtype=torch.float64, requires_grad=True)
    br = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([wr, br], max_iter=500, tolerance_grad=1e-14,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _objective(wr, br, x, y, 1.0)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(w, wr.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(b, br.detach(), rtol=0, atol=1e-7)


def test_predictor_is_the_solution_on_normalised_query_features():
    batch = float64_noise_image_batch(tasks=1, ways=3, shots=2, queries=2)
    torch.manual_seed(0)
    backbone = models.build("conv4", input_shape=(1, 16, 16), hidden=8, blocks=2)
    alg = algorithms.build("rfs", backbone, ways=3).double()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        out = alg.adapt(sx, sy)(qx)
        z = alg.backbone(torch.cat([sx, qx]))
        z = z / z.norm(dim=1, keepdim=True)
        w, b = multinomial_logistic(z[:6], sy, 3, c=1.0)
    torch.testing.assert_close(out, z[6:] @ w.T + b, rtol=1e-10, atol=1e-10)


def test_bad_inputs_raise():
    with pytest.raises(ConfigError, match="c must be > 0"):
        algorithms.get("rfs").make_config(c=0.0)
    with pytest.raises(ShapeError, match="needs x"):
        multinomial_logistic(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ConfigError, match="steps >= 1"):
        multinomial_logistic(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), 2, steps=0)


def test_learns_from_a_pretrained_backbone():
    run = glyph_pretraining()
    before, after = few_shot_accuracy("rfs", None), few_shot_accuracy("rfs", run)
    assert after >= 0.6 and after > before + 0.15, (before, after)
