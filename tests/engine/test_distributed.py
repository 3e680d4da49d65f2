"""Data-parallel meta-training (`engine.distributed`): 2 gloo processes on 127.0.0.1 reach the
numbers of one process, whether they split the meta-batch or (where a split is not exact) each run
all of it; bad devices and precisions are one-line errors."""

import contextlib
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from metazoo import algorithms, models
from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.engine import checkpoint, distributed, sharding
from metazoo.engine.distributed import World, episode_share
from metazoo.engine.evaluate import evaluate_run
from metazoo.engine.log import read
from metazoo.engine.precision import Precision
from metazoo.engine.train import train
from tests.conftest import tiny_batch

FAST = ["data.name=synthetic", "train.progress=false", "train.tensorboard=false",
        "train.log_every=2", "train.meta_steps=4", "train.meta_batch_size=4", "eval.every=4",
        "eval.val_episodes=6", "eval.episodes=20", "data.ways=3", "eval.ways=3",
        "data.queries=3", "eval.queries=3"]
# Small networks, few steps; Reptile with its Adam state reset per task. Conv4 takes SGD here,
# and Reptile (whose inner loop is Adam) an MLP: Adam turns the rounding-noise gradients of
# parameters that change no output (a conv bias before batch norm, ProtoNet's last batch-norm
# bias) into steps of ~lr either way, so those differ by ~1e-3 between any two summation
# orders (thread counts included) while every other weight agrees to ~1e-7.
CASES = {
    "maml": ["algorithm.name=maml", "model.name=mlp", "model.widths=[16]"],
    "protonet": ["algorithm.name=protonet", "model.hidden=8", "train.optimizer=sgd",
                 "train.outer_lr=0.1"],
    "reptile": ["algorithm.name=reptile", "algorithm.inner_adam_state=reset", "model.name=mlp",
                "model.widths=[16]",
                "train.optimizer=sgd", "train.outer_lr=1.0", "algorithm.inner_steps=2",
                "algorithm.eval_inner_steps=2"],
    # not splittable exactly: each process runs the whole meta-batch
    "reptile_carry": ["algorithm.name=reptile", "algorithm.inner_adam_state=carry",
                      "model.name=mlp", "model.widths=[16]", "train.optimizer=sgd",
                      "train.outer_lr=1.0", "algorithm.inner_steps=2",
                      "algorithm.eval_inner_steps=2"],
    "maml_one_task": ["algorithm.name=maml", "model.name=mlp", "model.widths=[16]",
                      "train.meta_batch_size=1"],
}


def _join(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


def _train_rank(rank: int, port: int, cfg, out, resume: bool) -> None:
    _join(rank, port)
    train(cfg, out, resume=resume)


def _eval_rank(rank: int, port: int, run) -> None:
    _join(rank, port)
    evaluate_run(run, episodes=37, device="cpu")


def _two_processes(fn, *args) -> None:
    """`fn(rank, port, *args)` in 2 processes, forked: they share the test's imports and its
    registered 'synthetic' dataset."""
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(fn, args=(port, *args), nprocs=2, start_method="fork")


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes: the same kernels
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_process(cfg, out, resume=False):
    with _one_thread():
        return train(cfg, out, resume=resume)


def _same_weights(a_dir, b_dir) -> None:
    a, _ = checkpoint.load(a_dir / "checkpoint.safetensors")
    b, _ = checkpoint.load(b_dir / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for k in a.keys() - {"rng.torch"}:  # several processes draw a seed per step
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_reach_the_numbers_of_one(tmp_path, synthetic_data, name):
    cfg = load_config(overrides=FAST + CASES[name])
    one = _one_process(cfg, tmp_path / "one")
    _two_processes(_train_rank, cfg, tmp_path / "two", False)
    _same_weights(tmp_path / "one", tmp_path / "two")
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["episodes"] == one["episodes"] == 20
    for key in ("accuracy", "ci95", "nll", "ece"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    rows = [[(r["split"], float(r["loss"] or r["acc"])) for r in read(d / "metrics.csv")]
            for d in (tmp_path / "one", tmp_path / "two")]
    assert [s for s, _ in rows[0]] == [s for s, _ in rows[1]] == ["train", "train", "val"]
    assert [v for _, v in rows[1]] == pytest.approx([v for _, v in rows[0]], rel=1e-4)


def test_eval_in_two_processes_writes_the_numbers_of_one(tmp_path, synthetic_data):
    run = tmp_path / "run"
    _one_process(load_config(overrides=FAST + CASES["protonet"] + ["train.meta_steps=0"]), run)
    with _one_thread():
        one, path = evaluate_run(run, episodes=37, device="cpu")
    path.unlink()
    _two_processes(_eval_rank, run)
    two = json.loads(path.read_text())  # written by process 0 alone
    assert two["episodes"] == 37
    for key in ("accuracy", "ci95", "nll", "brier", "ece"):
        assert two[key] == pytest.approx(one.to_json()[key], rel=1e-12), key
    assert two["reliability"]["count"] == one.reliability["count"]


def test_a_two_process_run_resumed_in_one_reaches_an_uninterrupted_run(tmp_path,
                                                                      synthetic_data):
    steps = FAST + CASES["maml"]
    _one_process(load_config(overrides=[*steps, "train.meta_steps=8"]), tmp_path / "full")
    _two_processes(_train_rank, load_config(overrides=steps), tmp_path / "half", False)
    resumed = _one_process(load_config(overrides=[*steps, "train.meta_steps=8"]),
                           tmp_path / "half", resume=True)
    _same_weights(tmp_path / "full", tmp_path / "half")
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert resumed["accuracy"] == pytest.approx(full["accuracy"], rel=1e-5)


def test_shares_cover_the_meta_batch_and_the_episodes_in_order():
    for size in (1, 2, 3, 4):
        for tasks in range(size, 10):
            shares = [World(r, size).shard(tasks) for r in range(size)]
            assert [i for s in shares for i in s] == list(range(tasks))
            assert all(len(s) >= 1 for s in shares)
        for episodes in (1, 7, 20, 33):
            whole = episode_share(episodes, 16)
            assert [i for r in range(size) for i in episode_share(episodes, 16, World(r, size))
                    ] == whole
            assert sum(n for _, n in whole) == episodes


def _alg(name, **options):
    backbone = models.build("mlp", input_shape=(1, 28, 28), hidden=(8,))
    return algorithms.build(name, backbone, ways=3, **options)


def test_what_cannot_be_split_exactly_says_why_and_runs_whole(capsys, caplog):
    two = World(0, 2)
    carry = sharding.unsplittable(_alg("reptile"), 4, two)
    assert carry is not None and "inner_adam_state=reset" in carry and "\n" not in carry
    assert sharding.unsplittable(_alg("reptile", inner_adam_state="reset"), 4, two) is None
    assert sharding.unsplittable(_alg("reptile"), 4, World()) is None  # one process: all
    assert "meta_batch_size=1" in (sharding.unsplittable(_alg("maml"), 1, two) or "")
    assert sharding.unsplittable(_alg("maml"), 3, two) is None  # shares of 1 and 2 tasks
    assert sharding.announce(_alg("reptile"), 4, two)
    said = capsys.readouterr().out + caplog.text  # stdout once the CLI configured the logger
    assert "every process runs the whole meta-batch" in said
    assert not sharding.announce(_alg("maml"), 4, two)


def test_a_share_of_a_reptile_batch_draws_the_inner_orders_of_its_positions():
    alg = _alg("reptile", inner_adam_state="reset", inner_steps=2)
    batch = tiny_batch(tasks=4)
    loss, _ = alg.meta_loss(batch)
    loss.backward()
    whole = [p.grad.clone() for p in alg.parameters()]
    alg.zero_grad()
    for part in (range(0, 1), range(1, 4)):
        share = sharding.shard_batch(batch, part)
        part_loss, _ = alg.meta_loss(share)
        (part_loss * len(part) / 4).backward()
    for g, p in zip(whole, alg.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_keeps_float32_meta_gradients_close_to_float32():
    alg = _alg("maml")
    batch = tiny_batch(tasks=2)
    opt = torch.optim.SGD(alg.parameters(), lr=0.1)
    grads = {}
    for name in ("float32", "bf16"):
        alg.zero_grad()
        sharding.meta_backward(alg, batch, distributed.SINGLE,
                                  Precision(name, torch.device("cpu"), opt))
        grads[name] = torch.cat([p.grad.reshape(-1) for p in alg.parameters()])
    assert grads["bf16"].dtype == torch.float32
    assert not torch.equal(grads["bf16"], grads["float32"])  # autocast did act
    cos = torch.nn.functional.cosine_similarity(grads["bf16"], grads["float32"], dim=0)
    assert cos > 0.99, float(cos)


@pytest.mark.parametrize("args, message", [
    (["--set", "train.precision=fp16", "--device", "cpu"], "train.precision=fp16 needs a CUDA"),
    (["--device", "cuda"], "no CUDA device is available"),
])
def test_bad_device_and_precision_are_one_line_errors(tmp_path, synthetic_data, capsys,
                                                      args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    status = main(["train", "--set", *FAST, "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and "\n" not in err, err
    assert not out.exists()  # refused before the run started
