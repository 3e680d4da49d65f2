"""The Gittins index of a Bernoulli arm with a Beta(a, b) posterior, by calibration.

Gittins, Glazebrook, Weber. "Multi-armed Bandit Allocation Indices", 2nd ed., Wiley 2011 (Ch. 2
and 8); Gittins, "Bandit processes and dynamic allocation indices", JRSS B 41 (1979). The index
G(a, b) of an arm with posterior Beta(a, b) under discount gamma is the retirement reward lambda
at which one is indifferent between retiring for lambda per step forever, lambda / (1 - gamma),
and pulling once more and continuing optimally (the calibration / retirement formulation):
    V(a, b; lambda) = max(lambda / (1 - gamma),
                          p (1 + gamma V(a+1, b; lambda)) + (1 - p) gamma V(a, b+1; lambda)),
with p = a / (a + b), solved backwards from a truncation depth a + b = M where no more is learnt,
V = max(lambda, p) / (1 - gamma). `index` finds one state's root by bisection; `index_table`
solves the recursion for a grid of lambda at once for every state (one backward pass), and takes
each state's root by linear interpolation between the grid points that bracket it (the
continuation value is convex in lambda, so the chord is within the grid spacing). Duan et al.'s
Table 1 baseline used this backward induction on a lambda grid with M = 1000 and the best
discount of {0.9, 0.99, 0.999, 0.9999} per setting (their released evaluation script).
"""

from __future__ import annotations

import functools

import numpy as np

DISCOUNTS = (0.9, 0.99, 0.999, 0.9999)  # the discounts Duan et al.'s evaluation chose from


def _continue_value(a: int, b: int, lam: float, gamma: float, depth: int) -> float:
    """Value of pulling the arm at Beta(a, b) once, then acting optimally, at retirement `lam`."""
    top = a + b + depth  # the truncation diagonal, `depth` pulls below the start state
    succ = np.arange(a, a + depth + 1)  # successes a .. a+depth on the diagonal a+b+depth
    v = np.maximum(lam, succ / top) / (1.0 - gamma)
    for m in range(top - 1, a + b - 1, -1):  # diagonals a+b+depth-1 .. a+b
        k = m - (a + b)  # pulls made: successes a .. a+k
        aa = np.arange(a, a + k + 1)
        p = aa / m
        cont = p * (1.0 + gamma * v[1:k + 2]) + (1.0 - p) * gamma * v[:k + 1]
        if m == a + b:
            return float(cont[0])
        v = np.maximum(lam / (1.0 - gamma), cont)
    raise AssertionError("unreachable")


def index(a: int, b: int, gamma: float, *, depth: int = 1000, tol: float = 1e-7) -> float:
    """G(a, b) by bisection on the retirement reward (`depth` pulls looked ahead)."""
    lo, hi = a / (a + b), 1.0  # the index is at least the mean and at most the best reward
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if _continue_value(a, b, mid, gamma, depth) > mid / (1.0 - gamma):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=8)
def index_table(gamma: float, states: int, *, depth: int = 1000, grid: int = 1001
                ) -> np.ndarray:
    """`table[a, b]` = G(a, b) for a, b >= 1 and a + b <= `states` (0 elsewhere), from one
    backward pass over all states to the diagonal a + b = max(depth, states + 1)."""
    lam = np.linspace(0.0, 1.0, grid)  # [G] retirement rewards
    retire = lam / (1.0 - gamma)
    top = max(depth, states + 1)
    table = np.zeros((states + 1, states + 1))
    a = np.arange(1, top)[:, None]  # successes on the diagonal a + b = top
    v = np.maximum(lam, a / top) / (1.0 - gamma)  # [top-1, G]
    for m in range(top - 1, 1, -1):
        p = (np.arange(1, m) / m)[:, None]  # [m-1, 1], a = 1 .. m-1
        cont = p * (1.0 + gamma * v[1:]) + (1.0 - p) * gamma * v[:-1]  # [m-1, G]
        if m <= states:
            gap = cont - retire  # decreasing in lambda: its root is the index
            last = np.minimum((gap > 0).sum(axis=1), grid - 1)  # first grid point at or past it
            g0, g1 = gap[np.arange(m - 1), last - 1], gap[np.arange(m - 1), last]
            frac = np.where(g0 > g1, g0 / np.maximum(g0 - g1, 1e-300), 1.0)
            root = lam[last - 1] + np.clip(frac, 0.0, 1.0) * (lam[1] - lam[0])
            aa = np.arange(1, m)
            table[aa, m - aa] = root
        v = np.maximum(retire, cont)
    return table
