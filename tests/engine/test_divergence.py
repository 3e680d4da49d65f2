"""A diverging run stops in one line with its last finite checkpoint; non-finite or impossible
checkpoints are refused before anything is evaluated or allocated."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from metazoo.cli import main
from metazoo.engine import checkpoint

QUICK = ["data.ways=5", "eval.every=0", "eval.episodes=4", "train.progress=false",
         "train.tensorboard=false", "model.hidden=8"]


def test_a_diverging_run_stops_with_one_line_and_keeps_a_finite_checkpoint(tmp_path, capsys):
    run = tmp_path / "r"
    status = main(["train", "--out", str(run), "--set", "train.outer_lr=1e30",
                   "train.meta_steps=30", "train.checkpoint_every=1", *QUICK])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err
    assert "training diverged at step" in err and "is kept" in err and "train.outer_lr" in err
    tensors = load_file(str(run / "checkpoint.safetensors"))
    assert all(t.isfinite().all() for t in tensors.values() if t.is_floating_point())
    assert not (run / "results.json").exists()
    said = (run / "error.txt").read_text()  # the folder says why it has no results
    assert "training diverged at step" in said and said.count("\n") == 1


def _trained(tmp_path, capsys):
    run = tmp_path / "ok"
    assert main(["train", "--out", str(run), "--set", "train.meta_steps=2", *QUICK]) == 0
    capsys.readouterr()
    return run


def test_nan_weights_are_refused_by_eval(tmp_path, capsys):
    run = _trained(tmp_path, capsys)
    path = run / "checkpoint.safetensors"
    tensors, meta = checkpoint.load(path)
    name = next(k for k, t in tensors.items() if t.is_floating_point() and k.startswith("model."))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    checkpoint.save(path, tensors, meta)
    assert main(["eval", str(run), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "not finite" in err and name.removeprefix("model.") in err


@pytest.mark.parametrize("shape", [[1, 1000000, 1000000], "abc", [1, -28, 28], [True]])
def test_an_impossible_input_shape_is_refused_before_allocating(tmp_path, capsys, shape):
    run = _trained(tmp_path, capsys)
    path = run / "checkpoint.safetensors"
    tensors = load_file(str(path))
    _, meta = checkpoint.load(path)
    meta["input_shape"] = shape
    save_file(tensors, str(path), metadata={"metazoo": json.dumps(meta)})
    assert main(["eval", str(run), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert f"input_shape {str(shape)[:20]}" in err and "damaged" in err and err.count("\n") == 1


def test_checkpoint_metadata_that_is_not_a_mapping(tmp_path, capsys):
    run = _trained(tmp_path, capsys)
    path = run / "checkpoint.safetensors"
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"metazoo": json.dumps([1, 2, 3])})
    assert main(["eval", str(run), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "metadata is not a mapping" in err and err.count("\n") == 1
