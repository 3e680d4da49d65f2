"""Duan et al.'s Table 1 baselines: exact expected regrets of small bandits (dynamic programming
over every reward sequence), the Gittins index against Gittins' published table."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from metazoo.rl import bandit_baselines, gittins


def exact_regret(choose, p, n):
    """E[sum_t max p - p_{a_t}] over `n` pulls of a policy with arm probabilities
    `choose(s, f, t)` (successes and failures per arm), by enumerating every outcome."""
    best = max(p)

    @functools.cache
    def go(s, f, t):
        if t == n:
            return 0.0
        total = 0.0
        for a, pa in enumerate(choose(s, f, t)):
            if pa == 0:
                continue
            won = tuple(x + (i == a) for i, x in enumerate(s))
            lost = tuple(x + (i == a) for i, x in enumerate(f))
            total += pa * (best - p[a] + p[a] * go(won, f, t + 1) + (1 - p[a]) * go(s, lost, t + 1))
        return total

    return go((0,) * len(p), (0,) * len(p), 0)


def uniform_over_best(scores):
    top = max(scores)
    best = [abs(x - top) < 1e-12 for x in scores]
    return [b / sum(best) for b in best]


def ucb1(s, f, t):  # Auer et al. 2002, Fig. 1
    if t < len(s):
        return [float(i == t) for i in range(len(s))]
    return uniform_over_best([s[j] / (s[j] + f[j]) + math.sqrt(2 * math.log(t) / (s[j] + f[j]))
                              for j in range(len(s))])


def ucb1_duan(s, f, t):  # Duan et al.'s script: Beta(1, 1) pseudo-counts, c = 1
    return uniform_over_best([(1 + s[j]) / (2 + s[j] + f[j])
                              + math.sqrt(2 * math.log(max(t, 1)) / (2 + s[j] + f[j]))
                              for j in range(len(s))])


def greedy(s, f, t):
    return uniform_over_best([(1 + s[j]) / (2 + s[j] + f[j]) for j in range(len(s))])


def thompson(s, f, t):  # P(theta_0 > theta_1), theta_j ~ Beta(1 + s_j, 1 + f_j)
    a, b = stats.beta(1 + s[0], 1 + f[0]), stats.beta(1 + s[1], 1 + f[1])
    p0 = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1, epsabs=1e-12)[0]
    return [p0, 1 - p0]


def monte_carlo(name, p, n, copies=20000, **kw):
    out = bandit_baselines.play(name, np.tile(p, (copies, 1)), n, np.random.default_rng(7), **kw)
    return out["regret"].mean(), out["regret"].std() / math.sqrt(copies)


@pytest.mark.parametrize(("name", "policy", "p", "n"), [
    ("ucb1", ucb1, (0.7, 0.4), 6), ("ucb1", ucb1, (0.2, 0.5, 0.9), 5),
    ("greedy", greedy, (0.3, 0.6), 6), ("thompson", thompson, (0.7, 0.4), 5),
    ("ucb1_duan", ucb1_duan, (0.45, 0.8), 6)])
def test_regret_equals_the_exact_expectation(name, policy, p, n):
    mean, se = monte_carlo(name, p, n)
    want = exact_regret(policy, p, n)
    assert abs(mean - want) < 4 * se + 1e-9, (mean, want, se)


def test_duan_ucb1_picks_its_weight_and_is_greedy_at_zero():
    means = np.random.default_rng(0).uniform(size=(400, 5))
    greedy_out = bandit_baselines.play("greedy", means, 10, np.random.default_rng(1))
    zero = bandit_baselines.play("ucb1_duan", means, 10, np.random.default_rng(1), c=0.0)
    assert np.array_equal(greedy_out["regret"], zero["regret"])
    out = bandit_baselines.run("ucb1_duan", means, 10, np.random.default_rng(1))
    best = min(np.mean(bandit_baselines.play("ucb1_duan", means, 10, np.random.default_rng(1),
                                             c=c)["regret"]) for c in bandit_baselines.UCB1_DUAN_C)
    assert np.mean(out["regret"]) == best and len(out["c"]) == 1


def test_random_regret_is_n_times_the_gap_to_the_mean():
    p = (0.9, 0.5, 0.1, 0.3)
    mean, se = monte_carlo("random", p, 8)
    assert abs(mean - 8 * (0.9 - np.mean(p))) < 4 * se


def test_regret_counts_expected_not_sampled_rewards():
    """Arms of equal means: every policy's regret is exactly 0 on every task, whatever it
    draws (a regret from sampled rewards would not be), while the returns vary."""
    means = np.full((300, 3), 0.3)
    for name in ("random", "greedy", "ucb1", "thompson"):
        out = bandit_baselines.play(name, means, 20, np.random.default_rng(0))
        assert np.all(out["regret"] == 0) and out["return"].std() > 0
        assert np.all(out["curve"][:, -1] == out["regret"])


def test_ucb1_on_a_deterministic_bandit_pulls_the_bad_arm_by_its_bonus():
    """Arms paying 1 and 0 always: UCB1 is deterministic; its regret is the number of pulls of
    the second arm, counted here from the index of Auer et al.'s Fig. 1."""
    n, pulls, wins = 50, [1, 1], [1, 0]
    for t in range(2, n):
        idx = [wins[j] / pulls[j] + math.sqrt(2 * math.log(t) / pulls[j]) for j in range(2)]
        j = int(idx[1] > idx[0])
        pulls[j] += 1
        wins[j] += j == 0
    out = bandit_baselines.play("ucb1", np.array([[1.0, 0.0]] * 3), n, np.random.default_rng(0))
    assert pulls[1] > 2 and np.all(out["regret"] == pulls[1])
    assert np.all(out["return"] == pulls[0])


# Gittins, Glazebrook & Weber (2011) index table for Bernoulli arms with a uniform prior, as
# reprinted (wins-losses from 0-0, discount 0.9 and 0.99) in Christian & Griffiths,
# "Algorithms to Live By" (2016), Ch. 2: (a, b) = (1 + wins, 1 + losses).
PUBLISHED = [(1, 1, 0.9, 0.7029), (2, 2, 0.9, 0.6346), (3, 3, 0.9, 0.6010),
             (10, 2, 0.9, 0.8695), (1, 1, 0.99, 0.8699)]


@pytest.mark.parametrize(("a", "b", "gamma", "want"), PUBLISHED)
def test_gittins_index_matches_the_published_table(a, b, gamma, want):
    assert gittins.index(a, b, gamma) == pytest.approx(want, abs=6e-5)


def test_gittins_table_by_one_pass_matches_bisection():
    table = gittins.index_table(0.9, 14, depth=300)
    for a, b, _, want in PUBLISHED[:4]:
        assert table[a, b] == pytest.approx(want, abs=1e-4)
    for a, b in [(1, 5), (4, 1), (6, 7), (2, 11)]:
        assert table[a, b] == pytest.approx(gittins.index(a, b, 0.9, depth=300), abs=2e-4)
    near_myopic = gittins.index_table(0.01, 10, depth=50)  # gamma -> 0: the posterior mean
    for a, b in [(1, 1), (3, 2), (1, 6)]:
        assert near_myopic[a, b] == pytest.approx(a / (a + b), abs=0.01)


def test_gittins_policy_regret_equals_the_exact_expectation():
    table = gittins.index_table(0.9, 7, depth=219)

    def policy(s, f, t):
        return uniform_over_best([table[1 + s[j], 1 + f[j]] for j in range(2)])

    mean, se = monte_carlo("gittins", (0.35, 0.6), 5, discount=0.9)
    assert abs(mean - exact_regret(policy, (0.35, 0.6), 5)) < 4 * se + 1e-9
