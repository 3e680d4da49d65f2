import math

import torch

from metazoo.graph.constraints import (
    admissible,
    likelihood_ratio,
    likelihood_ratio_after_flip,
    no_singleton_mask,
)


def _random_graph(n=12, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, n, generator=g) < p).double().triu(1)
    return a + a.T


def _ll_by_hand(degrees, d_min=2):
    kept = [d for d in degrees if d >= d_min]
    n, s = len(kept), sum(math.log(d) for d in kept)
    alpha = 1 + n / (s - n * math.log(d_min - 0.5))
    return n * math.log(alpha) + n * alpha * math.log(d_min) - (alpha + 1) * s


def test_likelihood_ratio_by_hand_and_zero_for_the_same_graph():
    a = _random_graph()
    b = a.clone()
    b[0, 1] = b[1, 0] = 1 - b[0, 1]
    d0, d1 = a.sum(1).tolist(), b.sum(1).tolist()
    expected = -2 * _ll_by_hand(d0 + d1) + 2 * (_ll_by_hand(d0) + _ll_by_hand(d1))
    assert math.isclose(float(likelihood_ratio(a, b)), expected, rel_tol=1e-9, abs_tol=1e-12)
    assert abs(float(likelihood_ratio(a, a))) < 1e-9


def test_vectorised_ratio_equals_flipping_each_pair():
    clean = _random_graph(seed=1)
    current = clean.clone()
    current[2, 5] = current[5, 2] = 1 - current[2, 5]  # one flip already made
    fast = likelihood_ratio_after_flip(clean, current)
    for u in range(12):
        for v in range(u + 1, 12):
            b = current.clone()
            b[u, v] = b[v, u] = 1 - b[u, v]
            assert math.isclose(float(fast[u, v]), float(likelihood_ratio(clean, b)),
                                rel_tol=1e-9, abs_tol=1e-12)


def test_no_singletons_and_flipped_pairs_are_refused():
    a = torch.zeros(4, 4)
    a[0, 1] = a[1, 0] = a[1, 2] = a[2, 1] = a[2, 3] = a[3, 2] = 1.0  # the path 0-1-2-3
    mask = no_singleton_mask(a)
    assert not mask[0, 1] and not mask[1, 0] and not mask[2, 3]  # 0 and 3 have degree one
    assert mask[1, 2] and mask[0, 3] and mask[0, 2]
    current = a.clone()
    current[0, 2] = current[2, 0] = 1.0
    ok = admissible(a, current, ll_constraint=False, ll_cutoff=0.004)
    assert not ok[0, 2] and not ok.diagonal().any() and torch.equal(ok, ok.T)
    assert ok[0, 1]  # node 0 now has degree two
