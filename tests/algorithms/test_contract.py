"""The contract every registered algorithm meets; a new algorithm gets these tests for free."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import metazoo.algorithms as algorithms
from metazoo import batching, models
from metazoo.algorithms.base import Algorithm
from metazoo.config_files import apply_overrides, from_dict
from metazoo.errors import ShapeError
from metazoo.tasks import TaskBatch
from tests.conftest import regression_batch, tiny_batch

NAMES = algorithms.names()
WAYS = 3


def _build(name: str, seed: int = 0) -> tuple[Algorithm, TaskBatch]:
    spec = algorithms.get(name)
    torch.manual_seed(seed)
    if "classification" in spec.tasks:
        backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=8)
        return algorithms.build(name, backbone, ways=WAYS), tiny_batch(WAYS)
    backbone = models.build("mlp", input_shape=(1,), hidden=(16, 16))
    return algorithms.build(name, backbone, ways=1), regression_batch()


def _build_float64(name: str) -> tuple[Algorithm, TaskBatch]:
    """`_build` in float64: strategy comparisons where any difference is logic, not rounding."""
    alg, batch = _build(name)
    return alg.double(), batch.to("cpu", torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_meta_loss_is_finite_scalar_with_metrics(name):
    alg, batch = _build(name)
    loss, metrics = alg.meta_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert metrics and all(torch.isfinite(v) and v.dim() == 0 for v in metrics.values())
    assert ("acc" in metrics) if batch.kind == "classification" else ("mse" in metrics)


@pytest.mark.parametrize("name", NAMES)
def test_every_meta_parameter_gets_a_finite_gradient(name):
    alg, batch = _build(name)
    alg.meta_loss(batch)[0].backward()
    for pname, p in alg.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_adapt_leaves_state_untouched(name):
    alg, batch = _build(name)
    before = {k: v.clone() for k, v in alg.state_dict().items()}
    predictor = alg.adapt(batch.support_x[0], batch.support_y[0])
    predictor(batch.query_x[0])
    after = alg.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", NAMES)
def test_predict_shape(name):
    alg, batch = _build(name)
    out = alg.predict(batch.support_x, batch.support_y, batch.query_x, ways=batch.ways)
    last = WAYS if batch.kind == "classification" else 1
    assert out.shape == (len(batch), batch.query_x.shape[1], last)


@pytest.mark.parametrize("name", [n for n in NAMES if algorithms.get(n).cls.vmappable])
def test_vmapped_batch_equals_task_loop(name):
    """Float64: in float32 the loop runs conv maps channels-last and vmap NCHW, and CPU kernels
    round those apart by up to 5e-4 of the largest gradient at one thread (GNN), more than a
    logic slip might."""
    alg, batch = _build_float64(name)
    loss_v, _ = batching.meta_loss(alg, batch, "vmap")
    grads_v = torch.autograd.grad(loss_v, list(alg.parameters()))
    loss_l, _ = batching.meta_loss(alg, batch, "loop")
    grads_l = torch.autograd.grad(loss_l, list(alg.parameters()))
    torch.testing.assert_close(loss_v, loss_l, rtol=1e-9, atol=1e-10)
    # absolute tolerance relative to the largest gradient: a parameter whose true gradient is zero
    # (a conv bias before batch norm) carries rounding noise on the scale of the others
    scale = max(float(g.abs().max()) for g in grads_l)
    assert scale > 1e-6  # a check that can fail
    for gv, gl in zip(grads_v, grads_l, strict=True):
        torch.testing.assert_close(gv, gl, rtol=1e-7, atol=1e-9 * scale)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("name", NAMES)
def test_meta_backward_equals_backward_of_meta_loss(name, strategy):
    """Float64, as above: float32 sums of the two paths round apart (platipus, one core)."""
    alg, batch = _build_float64(name)
    torch.manual_seed(1)  # algorithms that draw random numbers in training see the same ones
    loss, metrics = batching.meta_loss(alg, batch, strategy)
    expected = torch.autograd.grad(loss, list(alg.parameters()))
    torch.manual_seed(1)
    loss_b, metrics_b = batching.meta_backward(alg, batch, strategy)
    assert not loss_b.requires_grad
    torch.testing.assert_close(loss_b, loss.detach(), rtol=1e-10, atol=1e-12)
    assert metrics_b.keys() == metrics.keys()
    for p, g in zip(alg.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-8, atol=1e-12 + 1e-9 * float(g.abs().max()))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_loss_and_other_seed_differs(name):
    a, batch = _build(name, seed=0)
    b, _ = _build(name, seed=0)
    c, _ = _build(name, seed=1)
    la, lb, lc = (m.meta_loss(batch)[0].item() for m in (a, b, c))
    assert la == lb and la != lc


@pytest.mark.parametrize("name", NAMES)
def test_bad_labels_raise(name):
    _, batch = _build(name)
    if batch.kind != "classification":
        pytest.skip("labels are targets in regression")
    with pytest.raises(ShapeError):
        TaskBatch(batch.support_x, batch.support_y + WAYS, batch.query_x, batch.query_y,
                  batch.ways, batch.shots, batch.queries)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_yaml_and_set(name):
    spec = algorithms.get(name)
    cfg = spec.make_config()
    options = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    text = yaml.safe_dump({"algorithm": {"name": name, **options}})
    run = from_dict(yaml.safe_load(text))
    assert run.algorithm.config == cfg
    field = next((f for f in dataclasses.fields(cfg) if f.type in ("float", float)), None)
    if field is not None:
        d = apply_overrides({"algorithm": {"name": name}}, [f"algorithm.{field.name}=0.25"])
        assert getattr(from_dict(d).algorithm.config, field.name) == 0.25


def test_registry_names_equal_file_stems_and_every_file_registers():
    folder = Path(algorithms.__file__).parent
    stems = {p.stem for p in folder.glob("*.py")} - {"__init__", *algorithms.SHARED_MODULES}
    for name in NAMES:
        spec = algorithms.get(name)
        stem = spec.cls.__module__.rsplit(".", 1)[1]
        if spec.defaults:  # a variant: registered defaults on another algorithm's class
            assert stem in NAMES and stem != name
        else:
            assert stem == name, f"'{name}' lives in {stem}.py"
    registered = {algorithms.get(n).cls.__module__.rsplit(".", 1)[1] for n in NAMES}
    assert stems == registered, f"files that register nothing: {stems - registered}"


@pytest.mark.parametrize("name", NAMES)
def test_meta_backward_and_predict_in_threads_equal_the_loop(name):
    """Float64: in float32 the two sum orders differ by more than the conditioning allows."""
    alg, batch = _build_float64(name)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = {}
        for strategy in ("loop", "threads"):
            alg.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            loss, metrics = batching.meta_backward(alg, batch, strategy)
            with torch.no_grad():
                out = batching.predict(alg, batch.support_x, batch.support_y, batch.query_x,
                                       batch.ways, strategy)
            results[strategy] = (loss, metrics, [p.grad for p in alg.parameters()], out)
    finally:
        torch.set_num_threads(before)
    (loss_l, m_l, g_l, out_l), (loss_t, m_t, g_t, out_t) = results["loop"], results["threads"]
    torch.testing.assert_close(loss_t, loss_l, rtol=1e-12, atol=1e-12)
    assert m_t.keys() == m_l.keys()
    torch.testing.assert_close(out_t, out_l, rtol=1e-12, atol=1e-12)
    assert any(g is not None and g.abs().max() > 1e-6 for g in g_l)  # a check that can fail
    for gt, gl in zip(g_t, g_l, strict=True):
        assert (gt is None) == (gl is None)
        if gl is not None:
            torch.testing.assert_close(gt, gl, rtol=1e-10, atol=1e-12)
