"""SVGD: the median bandwidth, the kernel's gradient and a two-particle step, all by hand."""

import math

import pytest
import torch
from torch import nn

from metazoo.svgd import (
    flatten,
    median_bandwidth,
    rbf_kernel,
    stack_particles,
    svgd_direction,
    svgd_steps,
    unflatten,
)

DT = torch.float64


def test_median_bandwidth_equals_hand_values():
    # three particles: distances 5, 1, sqrt(18) -> median sqrt(18), h = 18 / log 3
    three = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=DT)
    assert median_bandwidth(three).item() == pytest.approx(18 / math.log(3))
    # four: distances 1, 2, 3, sqrt(5), 2, sqrt(13) -> median (2 + sqrt(5)) / 2, h = med^2 / log 4
    four = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=DT)
    med = (2 + math.sqrt(5)) / 2
    assert median_bandwidth(four).item() == pytest.approx(med**2 / math.log(4))
    # undefined cases fall back to 1: one particle, or all particles at one point
    assert median_bandwidth(three[:1]).item() == 1.0
    assert median_bandwidth(torch.ones(3, 2, dtype=DT)).item() == 1.0


def test_repulsion_is_the_kernel_gradient_by_autograd():
    theta = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    h = torch.tensor(0.7, dtype=DT)
    k, repulsion = rbf_kernel(theta, h)
    for i in range(4):
        ref = torch.zeros(3, dtype=DT)
        for j in range(4):  # grad_{theta_j} exp(-||theta_j - theta_i||^2 / h)
            a = theta[j].clone().requires_grad_()
            kij = torch.exp(-((a - theta[i]) ** 2).sum() / h)
            ref += torch.autograd.grad(kij, a)[0]
            assert k[i, j].item() == pytest.approx(kij.item())
        torch.testing.assert_close(repulsion[i], ref)


def _hand_two_particle_step(theta, score, lr):
    """phi for M = 2 with h = d^2 / log 2, so that k(theta_1, theta_2) = exp(-log 2) = 1/2."""
    diff = theta[0] - theta[1]
    h = (diff**2).sum() / math.log(2)
    k12 = 0.5
    # grad_{theta_j} k(theta_j, theta_i) = (2 / h) (theta_i - theta_j) k_ij; zero for j = i
    phi1 = (1.0 * score[0] + k12 * score[1] + (2 / h) * k12 * diff) / 2
    phi2 = (k12 * score[0] + 1.0 * score[1] - (2 / h) * k12 * diff) / 2
    return theta + lr * torch.stack([phi1, phi2])


def test_two_particle_step_equals_hand_computation():
    theta = torch.tensor([[1.0, 2.0], [0.0, 0.5]], dtype=DT)
    mu = torch.tensor([0.5, -1.0], dtype=DT)  # target N(mu, I): grad log p = mu - theta
    expected = _hand_two_particle_step(theta, mu - theta, 0.1)
    got = theta + 0.1 * svgd_direction(theta, mu - theta)
    torch.testing.assert_close(got, expected)
    # the same step through svgd_steps on named parameters (a: first coordinate, b: second)
    params = {"a": theta[:, :1].clone(), "b": theta[:, 1].clone()}

    def neg_log_p(p):
        return 0.5 * ((p["a"][:, 0] - mu[0]) ** 2 + (p["b"] - mu[1]) ** 2).sum()

    moved = svgd_steps(neg_log_p, params, steps=1, lr=0.1, first_order=False)
    torch.testing.assert_close(flatten(moved), expected)
    assert moved["a"].shape == (2, 1) and moved["b"].shape == (2,)
    # and it is not plain gradient ascent: the kernel couples the particles
    assert (expected - (theta + 0.1 * (mu - theta))).abs().max() > 1e-3


def test_one_particle_moves_along_the_score():
    theta = torch.tensor([[1.0, -2.0, 0.5]], dtype=DT)
    score = torch.tensor([[0.3, 0.1, -4.0]], dtype=DT)
    torch.testing.assert_close(svgd_direction(theta, score), score)


def test_flatten_round_trip_and_stacked_particles():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    first = {k: v.detach().clone() for k, v in layer.named_parameters()}
    stack_particles(layer, 3)
    assert layer.weight.shape == (3, 2, 3) and layer.bias.shape == (3, 2)
    torch.testing.assert_close(layer.weight[0], first["weight"])  # particle 0: the module's own
    assert (layer.weight[1] - layer.weight[2]).abs().min() > 0  # the others: fresh draws
    params = dict(layer.named_parameters())
    flat = flatten(params)
    assert flat.shape == (3, 8)
    back = unflatten(flat, params)
    for k in params:
        torch.testing.assert_close(back[k], params[k])
