"""ALPaCA's Bayesian last layer against conjugate Gaussian algebra on the vectorised weight
`vec(K)` (Kronecker form), the predictive against Monte Carlo, the log density against
`torch.distributions`, and gradients by gradcheck in float64."""

import pytest
import torch

from metazoo.errors import ShapeError
from metazoo.solvers import blr_log_likelihood, blr_posterior, blr_predictive
from tests.solvers import single_thread  # noqa: F401  (autouse fixture)

DT = torch.float64


def _spd(k: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(k, k, generator=g, dtype=DT)
    return a @ a.T + 0.5 * torch.eye(k, dtype=DT)


def _problem(b: int = 2, n: int = 5, m: int = 4, d: int = 3, c: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"phi": torch.randn(b, n, d, generator=g, dtype=DT),
            "y": torch.randn(b, n, c, generator=g, dtype=DT),
            "k0": torch.randn(d, c, generator=g, dtype=DT),
            "lambda0": _spd(d, g),
            "sigma_eps": _spd(c, g),
            "phi_query": torch.randn(b, m, d, generator=g, dtype=DT)}


def _vec(a: torch.Tensor) -> torch.Tensor:
    """Column-stacking vec of a matrix."""
    return a.T.reshape(-1)


def _kronecker_posterior(phi, y, k0, lambda0, sigma_eps):
    """Prior vec(K) ~ N(vec K0, Sigma_eps (x) Lambda0^{-1}); likelihood
    vec(Y) = (I_c (x) Phi) vec(K) + vec(E), vec(E) ~ N(0, Sigma_eps (x) I_n); the textbook
    Gaussian conditioning, with dense dc x dc matrices: (mean, covariance) of vec(K)."""
    n, c = y.shape
    design = torch.kron(torch.eye(c, dtype=DT), phi)
    prior_cov = torch.kron(sigma_eps, torch.linalg.inv(lambda0).contiguous())
    noise_cov = torch.kron(sigma_eps, torch.eye(n, dtype=DT))
    precision = torch.linalg.inv(prior_cov) + design.T @ torch.linalg.solve(noise_cov, design)
    cov = torch.linalg.inv(precision)
    mean = cov @ (torch.linalg.solve(prior_cov, _vec(k0))
                  + design.T @ torch.linalg.solve(noise_cov, _vec(y)))
    return mean, cov


def test_posterior_and_predictive_equal_the_kronecker_form():
    p = _problem()
    k_n, lambda_n = blr_posterior(p["phi"], p["y"], p["k0"], p["lambda0"])
    mean, cov = blr_predictive(p["phi_query"], k_n, lambda_n, p["sigma_eps"])
    c = p["y"].shape[-1]
    for b in range(2):
        vec_mean, vec_cov = _kronecker_posterior(p["phi"][b], p["y"][b], p["k0"], p["lambda0"],
                                                 p["sigma_eps"])
        torch.testing.assert_close(_vec(k_n[b]), vec_mean)
        torch.testing.assert_close(vec_cov, torch.kron(p["sigma_eps"],
                                                       torch.linalg.inv(lambda_n[b]).contiguous()))
        for q, phi in enumerate(p["phi_query"][b]):  # y = (I_c (x) phi^T) vec(K) + eps
            row = torch.kron(torch.eye(c, dtype=DT), phi[None])
            torch.testing.assert_close(mean[b, q], row @ vec_mean)
            torch.testing.assert_close(cov[b, q], row @ vec_cov @ row.T + p["sigma_eps"])


def test_predictive_matches_monte_carlo():
    """Sample K from the matrix-normal posterior (K = K_n + L_n^{-T} Z S^T with
    Lambda_n = L_n L_n^T, Sigma_eps = S S^T), then y = K^T phi + eps."""
    p = _problem(b=1, m=2, seed=1)
    k_n, lambda_n = blr_posterior(p["phi"], p["y"], p["k0"], p["lambda0"])
    mean, cov = blr_predictive(p["phi_query"], k_n, lambda_n, p["sigma_eps"])
    g = torch.Generator().manual_seed(2)
    draws, (d, c) = 200_000, k_n.shape[1:]
    chol_l = torch.linalg.cholesky(lambda_n[0])
    chol_s = torch.linalg.cholesky(p["sigma_eps"])
    z = torch.randn(draws, d, c, generator=g, dtype=DT)
    ks = k_n[0] + torch.linalg.solve_triangular(chol_l.T, z, upper=True) @ chol_s.T
    noise = torch.randn(draws, 2, c, generator=g, dtype=DT) @ chol_s.T
    ys = p["phi_query"][0] @ ks + noise  # [draws, m, c]
    torch.testing.assert_close(ys.mean(0), mean[0], rtol=0, atol=0.02 * cov.max().sqrt().item())
    centred = ys - ys.mean(0)
    emp_cov = torch.einsum("smi,smj->mij", centred, centred) / (draws - 1)
    torch.testing.assert_close(emp_cov, cov[0], rtol=0.03, atol=0.03 * cov.abs().max().item())


def test_sequential_updates_equal_one_batch():
    """Conjugacy: the posterior after the first points, used as the prior for the rest, is the
    posterior after all of them."""
    p = _problem(n=6, seed=3)
    k_a, lambda_a = blr_posterior(p["phi"][:, :2], p["y"][:, :2], p["k0"], p["lambda0"])
    k_ab, lambda_ab = blr_posterior(p["phi"][:, 2:], p["y"][:, 2:], k_a, lambda_a)
    k_all, lambda_all = blr_posterior(p["phi"], p["y"], p["k0"], p["lambda0"])
    torch.testing.assert_close(k_ab, k_all)
    torch.testing.assert_close(lambda_ab, lambda_all)


def test_log_likelihood_equals_torch_distributions():
    p = _problem(seed=4)
    k_n, lambda_n = blr_posterior(p["phi"], p["y"], p["k0"], p["lambda0"])
    mean, cov = blr_predictive(p["phi_query"], k_n, lambda_n, p["sigma_eps"])
    targets = mean + torch.randn(mean.shape, generator=torch.Generator().manual_seed(5),
                                 dtype=DT)
    ref = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(targets)
    log_lik = blr_log_likelihood(targets, mean, cov)
    assert log_lik.shape == (2, 4)
    torch.testing.assert_close(log_lik, ref)


def test_gradcheck():
    p = _problem(b=2, n=3, m=2, d=3, c=2, seed=6)
    targets = torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(7), dtype=DT)

    def objective(phi, y, k0, lambda0, sigma_eps, phi_query):
        sym = 0.5 * (lambda0 + lambda0.T)  # gradcheck perturbs one entry at a time
        k_n, lambda_n = blr_posterior(phi, y, k0, sym)
        mean, cov = blr_predictive(phi_query, k_n, lambda_n, 0.5 * (sigma_eps + sigma_eps.T))
        return blr_log_likelihood(targets, mean, cov), k_n, lambda_n

    names = ("phi", "y", "k0", "lambda0", "sigma_eps", "phi_query")
    inputs = tuple(p[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(objective, inputs)


def test_float32():
    p = {k: v.float() for k, v in _problem(seed=8).items()}
    k_n, lambda_n = blr_posterior(p["phi"], p["y"], p["k0"], p["lambda0"])
    mean, cov = blr_predictive(p["phi_query"], k_n, lambda_n, p["sigma_eps"])
    assert blr_log_likelihood(mean, mean, cov).dtype == torch.float32


def test_bad_shapes_raise():
    p = _problem()
    with pytest.raises(ShapeError, match="k0"):
        blr_posterior(p["phi"], p["y"], p["k0"].T, p["lambda0"])
    k_n, lambda_n = blr_posterior(p["phi"], p["y"], p["k0"], p["lambda0"])
    with pytest.raises(ShapeError, match="sigma_eps"):
        blr_predictive(p["phi_query"], k_n, lambda_n, torch.eye(3, dtype=DT))
    with pytest.raises(ShapeError, match="cov"):
        blr_log_likelihood(p["y"], p["y"], torch.eye(2, dtype=DT).expand(2, 5, 2, 2)[:, :4])
