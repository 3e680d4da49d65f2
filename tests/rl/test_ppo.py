"""GAE and PPO's clipped objective against hand computations on a tiny trajectory."""

from __future__ import annotations

import math

import pytest
import torch

from metazoo.rl import ppo


def test_gae_over_a_trial_against_a_hand_computation():
    # one trial of 3 steps, a second that ended after 2 (its third step masked)
    r = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 5.0]])
    v = torch.tensor([[0.5, 1.0], [1.0, 0.5], [2.0, 9.0]])
    m = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    g, lam = 0.9, 0.5
    adv, ret = ppo.gae(r, v, m, g, lam)
    # trial 0: deltas with V after the last step = 0
    d2 = 3.0 - 2.0
    d1 = 0.0 + 0.9 * 2.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2, a1 = d2, d1 + g * lam * d2
    a0 = d0 + g * lam * a1
    # trial 1: its step 1 is the last, so V(2) is not used
    e1 = 2.0 - 0.5
    e0 = 0.0 + 0.9 * 0.5 - 1.0
    want = torch.tensor([[a0, e0 + g * lam * e1], [a1, e1], [a2, 0.0]])
    assert torch.allclose(adv, want)
    assert torch.allclose(ret, want + v)


def test_clipped_objective_against_a_hand_computation():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.4]]))
    new = torch.log(torch.tensor([[0.8, 0.3, 0.5]]))  # ratios 1.6, 1.5, 1.25
    adv = torch.tensor([[1.0, -2.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third step is after the trial
    loss, info = ppo.clipped_loss(new, old, adv, mask, clip=0.2)
    # step 0: min(1.6 * 1, 1.2 * 1) = 1.2 (clipped); step 1: min(1.5 * -2, 1.2 * -2) = -3
    assert loss.item() == pytest.approx(-(1.2 - 3.0) / 2)
    kl = (math.log(0.5 / 0.8) + math.log(0.2 / 0.3)) / 2
    assert info["approx_kl"].item() == pytest.approx(kl)
    assert info["clip_fraction"].item() == pytest.approx(1.0)
    # the gradient flows where the minimum is the unclipped term: step 1, d(-r A / 2)/d log pi
    new.requires_grad_(True)
    ppo.clipped_loss(new, old, adv, mask, 0.2)[0].backward()
    assert new.grad is not None
    assert new.grad[0, 0] == 0 and new.grad[0, 1].item() == pytest.approx(-(1.5 * -2.0) / 2)
    assert new.grad[0, 2] == 0


def test_normalized_advantages_use_the_unmasked_steps():
    adv = torch.tensor([[1.0, 3.0], [5.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = ppo.normalized(adv, mask)
    assert out[1, 1] == 0
    vals = out[mask.bool()]
    assert vals.mean().abs() < 1e-6 and vals.std() == pytest.approx(1.0, abs=1e-4)
