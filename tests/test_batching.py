"""`metazoo.batching`: which strategy "auto" picks, and what it refuses.

Every strategy equals the loop for every registered algorithm in
`tests/algorithms/test_contract.py` (vmap, threads) and for MAML, ANIL and Meta-SGD in their own
tests (first_step); this file tests the choice itself.
"""

from __future__ import annotations

import pytest
import torch

from metazoo import algorithms, batching, models
from metazoo.errors import ConfigError
from tests.conftest import tiny_batch


def test_auto_picks_vmap_for_mlps_and_the_measured_loop_or_threads_for_conv_on_cpu(two_threads):
    mlp = models.build("mlp", input_shape=(1,), hidden=(8,))
    assert batching.choose(algorithms.build("maml", mlp, ways=1)) == "vmap"
    conv = models.build("conv4", hidden=4)
    assert batching.choose(algorithms.build("maml", conv, ways=3)) == "threads"
    assert batching.choose(algorithms.build("fomaml", conv, ways=3)) == "threads"
    assert batching.choose(algorithms.build("protonet", conv, ways=3)) == "loop"  # unmeasured
    torch.set_num_threads(1)
    assert batching.choose(algorithms.build("maml", conv, ways=3)) == "loop"
    assert batching.choose(algorithms.build("maml", conv, ways=3), "vmap") == "vmap"


def test_first_step_is_refused_where_tasks_do_not_share_a_first_inner_step():
    conv = models.build("conv4", hidden=4)
    for name in ("protonet", "maml_pp", "imaml"):
        alg = algorithms.build(name, conv, ways=3)
        with pytest.raises(ConfigError, match=r"first_step.*maml, fomaml, anil, meta_sgd"):
            batching.meta_loss(alg, tiny_batch(3), "first_step")


def test_meta_backward_runs_an_own_outer_objective_whole():
    """Reptile's meta_loss is its own (not a mean of task losses): batching calls it as is."""
    torch.manual_seed(0)
    alg = algorithms.build("reptile", models.build("conv4", hidden=4), ways=3, inner_steps=2)
    assert batching.overrides_meta_loss(alg)
    assert not batching.overrides_meta_loss(
        algorithms.build("maml", models.build("conv4", hidden=4), ways=3))
    batch = tiny_batch(3)
    expected = torch.autograd.grad(alg.meta_loss(batch)[0], list(alg.parameters()))
    batching.meta_backward(alg, batch, "threads")
    for p, g in zip(alg.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)
