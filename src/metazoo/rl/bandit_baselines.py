"""The reference policies of Duan et al.'s Table 1 (RL², arXiv:1611.02779) on Bernoulli bandits,
run on many tasks at once: random, greedy, UCB1, Thompson sampling and the Gittins index.

- UCB1 (Auer, Cesa-Bianchi, Fischer, "Finite-time analysis of the multiarmed bandit problem",
  Machine Learning 47, 2002, Fig. 1): pull each arm once, then argmax_j xbar_j + sqrt(2 ln t / n_j)
  with t the pulls so far.
- Thompson sampling (Thompson 1933; Beta-Bernoulli as Chapelle & Li 2011): draw
  theta_j ~ Beta(1 + s_j, 1 + f_j), pull argmax_j theta_j.
- Gittins (`metazoo.rl.gittins`): argmax_j G(1 + s_j, 1 + f_j) for the discount of
  `DISCOUNTS` that scores best on the tasks given, as Duan et al.'s evaluation chose it.
- ucb1_duan: UCB1 as Duan et al.'s released evaluation script ran it for Table 1, with
  Beta(1, 1) pseudo-counts, (1 + s_j) / (2 + n_j) + c sqrt(2 ln t / (2 + n_j)), and the c of
  {0, 0.1, ..., 1} that scores best on the tasks given (c = 0 is greedy).
- greedy: argmax of the posterior mean (1 + s_j) / (2 + n_j); random: a uniform arm.
Ties go to a uniformly drawn arm among the tied (UCB1's first round: arms in order). A policy's
`regret` on a task is n max_j p_j - sum_t p_{a_t} (expected rewards of the arms pulled, so it
does not depend on the reward noise beyond the choices it causes); `return` is the sampled total
reward, the quantity of Duan et al.'s Table 1.
"""

from __future__ import annotations

import math

import numpy as np

from metazoo.errors import ConfigError
from metazoo.rl import gittins
from metazoo.rl.base import curve_points

UCB1_DUAN_C = tuple(i / 10 for i in range(11))  # the exploration weights Duan et al. tried


def _argmax(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax with uniform tie-breaking (`scores` [B, k])."""
    noise = rng.random(scores.shape)
    best = scores >= scores.max(axis=1, keepdims=True) - 1e-12
    return np.where(best, noise, -1.0).argmax(axis=1)


def _choose(name: str, s: np.ndarray, f: np.ndarray, t: int, rng: np.random.Generator,
            table: np.ndarray | None, c: float) -> np.ndarray:
    pulls = s + f  # [B, k]
    if name == "random":
        return np.asarray(rng.integers(0, s.shape[1], size=s.shape[0]))
    if name == "greedy":
        return _argmax((1 + s) / (2 + pulls), rng)
    if name == "thompson":
        return _argmax(rng.beta(1 + s, 1 + f), rng)
    if name == "gittins":
        assert table is not None
        return _argmax(table[1 + s, 1 + f], rng)
    if name == "ucb1_duan":
        bonus = np.sqrt(2.0 * math.log(max(t, 1)) / (2 + pulls))
        return _argmax((1 + s) / (2 + pulls) + c * bonus, rng)
    if name == "ucb1":
        if t < s.shape[1]:  # initialisation: each arm once, in order
            return np.full(s.shape[0], t)
        bonus = np.sqrt(2.0 * math.log(t) / np.maximum(pulls, 1))
        return _argmax(s / np.maximum(pulls, 1) + bonus, rng)
    raise ConfigError(f"unknown bandit baseline '{name}'")


def play(name: str, means: np.ndarray, episodes: int, rng: np.random.Generator, *,
         discount: float | None = None, c: float = 1.0) -> dict[str, np.ndarray]:
    """Run policy `name` for a trial of `episodes` pulls on each task (`means` [B, k]).

    Returns per-task `regret` and `return` ([B]) and the cumulative expected regret after each
    pull, `curve` ([B, episodes]).
    """
    b, k = means.shape
    s, f = np.zeros((b, k), dtype=np.int64), np.zeros((b, k), dtype=np.int64)
    table = gittins.index_table(discount or 0.99, episodes + 2, depth=_depth(discount or 0.99)) \
        if name == "gittins" else None
    regret, total = np.zeros((b, episodes)), np.zeros(b)
    rows = np.arange(b)
    best = means.max(axis=1)
    for t in range(episodes):
        arm = _choose(name, s, f, t, rng, table, c)
        p = means[rows, arm]
        reward = rng.random(b) < p
        s[rows, arm] += reward
        f[rows, arm] += ~reward
        regret[:, t] = best - p
        total += reward
    return {"regret": regret.sum(axis=1), "return": total, "curve": regret.cumsum(axis=1)}


def _depth(gamma: float) -> int:
    """Look-ahead of the Gittins recursion: until gamma^depth < 1e-10, at most 1000 (Duan et
    al.'s truncation)."""
    return int(min(1000, math.ceil(math.log(1e-10) / math.log(gamma))))


def run(name: str, means: np.ndarray, episodes: int, rng: np.random.Generator
        ) -> dict[str, list[float]]:
    """Per-task `regret` and `return` of policy `name`; Gittins with the best of `DISCOUNTS`
    and ucb1_duan with the best c on these tasks (reported once, as `discount` or `c`)."""
    grids = {"gittins": ("discount", gittins.DISCOUNTS), "ucb1_duan": ("c", UCB1_DUAN_C)}
    if name not in grids:
        return _per_task(play(name, means, episodes, rng), episodes)
    key, grid = grids[name]
    state = rng.bit_generator.state
    best: tuple[float, float, dict[str, np.ndarray]] | None = None
    for value in grid:
        rng.bit_generator.state = state  # the same draws for every setting
        out = play(name, means, episodes, rng, **{key: value})
        score = float(out["regret"].mean())
        if best is None or score < best[0]:
            best = (score, value, out)
    assert best is not None
    return {**_per_task(best[2], episodes), key: [best[1]]}


def _per_task(out: dict[str, np.ndarray], episodes: int) -> dict[str, list[float]]:
    """`regret`, `return` and `regret_after_<i>` (the curve's points) per task."""
    curve = {f"regret_after_{i}": out["curve"][:, i - 1].tolist() for i in curve_points(episodes)}
    return {"regret": out["regret"].tolist(), "return": out["return"].tolist(), **curve}
