"""The time budget of a run: wall-clock or the process's CPU time (`train.time_clock`)."""

import time

from metazoo.engine.checkpoint import load
from metazoo.engine.stopping import deadline
from metazoo.engine.train import train
from tests.engine.test_train import _cfg


def test_deadline_counts_wall_or_cpu_time():
    wall, cpu = deadline(0.05 / 60, "wall"), deadline(0.05 / 60, "cpu")
    time.sleep(0.1)  # sleeping spends wall time, not CPU time
    assert wall() and not cpu()
    end = time.perf_counter() + 5
    while not cpu() and time.perf_counter() < end:
        sum(range(1000))  # spend CPU time
    assert cpu()
    assert not deadline(None, "cpu")()


def test_cpu_clock_time_limit_stops_a_run(tmp_path, synthetic_data):
    train(_cfg("train.meta_steps=100000", "train.time_limit_min=0.00001",
               "train.time_clock=cpu"), tmp_path)
    assert load(tmp_path / "checkpoint.safetensors")[1]["step"] == 1
