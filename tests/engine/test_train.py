import json

import pytest
import torch

from metazoo.config_files import load_config
from metazoo.engine import checkpoint
from metazoo.engine.log import read
from metazoo.engine.run import load_run
from metazoo.engine.train import lr_factor, make_optimizer, train

FAST = ["data.name=synthetic", "model.hidden=8", "train.progress=false", "train.log_every=2",
        "train.tensorboard=false", "eval.every=4", "eval.val_episodes=8", "eval.episodes=20",
        "eval.queries=3", "data.queries=3", "train.meta_batch_size=2"]


def _cfg(*extra):
    return load_config(overrides=FAST + list(extra))


def test_run_folder_holds_config_metrics_checkpoint_results(tmp_path, synthetic_data):
    out = train(_cfg("train.meta_steps=8"), tmp_path)
    for name in ("config.json", "metrics.csv", "checkpoint.safetensors", "best.safetensors",
                 "results.json"):
        assert (tmp_path / name).exists(), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["episodes"] == 20 and 0.0 <= results["accuracy"] <= 1.0
    assert results["ci95"] > 0 and out["accuracy"] == results["accuracy"]
    rows = read(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["split"] == "val"] == [4, 8]


def test_resume_reaches_the_same_numbers_as_an_uninterrupted_run(tmp_path, synthetic_data):
    full = train(_cfg("train.meta_steps=8"), tmp_path / "full")
    train(_cfg("train.meta_steps=4"), tmp_path / "half")
    resumed = train(_cfg("train.meta_steps=8"), tmp_path / "half", resume=True)
    assert resumed["accuracy"] == full["accuracy"]
    a, _ = checkpoint.load(tmp_path / "full" / "checkpoint.safetensors")
    b, _ = checkpoint.load(tmp_path / "half" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_full = [r for r in read(tmp_path / "full" / "metrics.csv") if r["split"] == "train"]
    rows_half = [r for r in read(tmp_path / "half" / "metrics.csv") if r["split"] == "train"]
    assert [r["loss"] for r in rows_full] == [r["loss"] for r in rows_half]


def test_training_improves_over_initial_weights(tmp_path, synthetic_data):
    before = train(_cfg("train.meta_steps=0", "eval.every=0"), tmp_path / "zero")
    after = train(_cfg("train.meta_steps=40", "eval.every=0", "train.outer_lr=0.003"),
                  tmp_path / "trained")
    assert after["accuracy"] > before["accuracy"] + 0.1, (before["accuracy"], after["accuracy"])


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    checkpoint.save(path, {"w": torch.ones(3)}, {"step": 1})

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError):
        checkpoint.save(path, {"w": torch.zeros(3)}, {"step": 2})
    tensors, meta = checkpoint.load(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


def test_load_run_restores_best_weights(tmp_path, synthetic_data):
    train(_cfg("train.meta_steps=4"), tmp_path)
    cfg, alg = load_run(tmp_path)
    tensors, _ = checkpoint.load(tmp_path / "best.safetensors")
    state = alg.state_dict()
    assert all(torch.equal(state[k[6:]], v) for k, v in tensors.items())
    assert cfg.train.meta_steps == 4


def test_lr_schedules():
    cfg = load_config(overrides=["train.schedule=cosine", "train.meta_steps=100"]).train
    assert lr_factor(cfg, 0) == 1.0 and lr_factor(cfg, 50) == pytest.approx(0.5)
    cfg = load_config(overrides=["train.schedule=step", "train.lr_step_every=10"]).train
    assert lr_factor(cfg, 9) == 1.0 and lr_factor(cfg, 25) == 0.25
    cfg = load_config(overrides=["train.schedule=linear", "train.meta_steps=100"]).train
    assert lr_factor(cfg, 0) == 1.0 and lr_factor(cfg, 75) == 0.25 and lr_factor(cfg, 100) == 0


def test_sgd_optimizer_steps_by_lr_times_gradient():
    cfg = load_config(overrides=["train.optimizer=sgd", "train.outer_lr=0.5"]).train
    layer = torch.nn.Linear(2, 1)
    opt = make_optimizer(layer, cfg)  # type: ignore[arg-type]
    assert isinstance(opt, torch.optim.SGD)
    before = layer.weight.detach().clone()
    layer.weight.grad = torch.ones_like(layer.weight)
    layer.bias.grad = torch.zeros_like(layer.bias)
    opt.step()
    assert torch.allclose(layer.weight, before - 0.5)


def test_trainer_calls_begin_step_and_end_step_around_each_step(tmp_path, synthetic_data,
                                                                monkeypatch):
    from metazoo.algorithms.base import Algorithm
    seen: list[tuple[int, int] | str] = []
    monkeypatch.setattr(Algorithm, "begin_step", lambda self, s, n: seen.append((s, n)))
    monkeypatch.setattr(Algorithm, "end_step", lambda self, batch: seen.append("end"))
    train(_cfg("train.meta_steps=3", "eval.every=0"), tmp_path / "run")
    assert seen == [(0, 3), "end", (1, 3), "end", (2, 3), "end"]


def test_time_limit_stops_early_and_still_tests(tmp_path, synthetic_data):
    out = train(_cfg("train.meta_steps=100000", "train.time_limit_min=0.00001"), tmp_path)
    _, meta = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 1 and out["episodes"] == 20


def test_a_timed_run_resumes_with_a_budget_of_its_own(tmp_path, synthetic_data):
    """The time budget does not change what a step computes: a resume may set another one
    (`engine.resume.PLACE`), and the run continues from where the first budget ended."""
    from metazoo.engine.resume import SavedRun

    train(_cfg("train.meta_steps=6", "train.time_limit_min=0.00001"), tmp_path)
    assert checkpoint.read_meta(tmp_path / "checkpoint.safetensors")["step"] == 1
    cfg = SavedRun(tmp_path, tensors=False).config_with(["train.time_limit_min=60",
                                                         "train.time_clock=cpu"])
    train(cfg, tmp_path, resume=True)
    assert checkpoint.read_meta(tmp_path / "checkpoint.safetensors")["step"] == 6
