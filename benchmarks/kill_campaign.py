"""Kill -9 campaign: SIGKILL a small glyphs run at random moments, resume it each time, and check
that what it ends with is bit-identical to an uninterrupted run's.

Per round, a fresh run folder is started, killed (SIGKILL) after a random delay, restarted with
`--resume` (or afresh when no checkpoint had been written yet), killed again, and so on until a
start runs to the end; rounds repeat until `--kills` kills were made. Each finished round is
compared with the reference run: `results.json` (all but the wall-clock `seconds`), every tensor
of `checkpoint.safetensors` and `best.safetensors` (weights, optimiser state, RNG state),
`metrics.csv` (all but the wall-clock columns) and `config.json` (bytes); no `.lock` or
temporary file may be left. Exits 1 on any difference.

    OMP_NUM_THREADS=1 python benchmarks/kill_campaign.py --kills 20 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from metazoo.engine import checkpoint
from metazoo.engine.log import read

CLOCK_COLUMNS = ("seconds", "episodes_per_s")
LOG_EVERY = 4


def settings(steps: int) -> list[str]:
    return ["data.ways=5", "data.queries=5", "eval.episodes=10", "eval.every=20",
            "eval.val_episodes=10", "eval.queries=5", f"train.meta_steps={steps}",
            "train.checkpoint_every=5", f"train.log_every={LOG_EVERY}", "train.progress=false",
            "train.tensorboard=false", "model.hidden=16"]


def start(out: Path, steps: int, resume: bool) -> subprocess.Popen:
    args = ["--resume"] if resume else ["--set", *settings(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metazoo.cli", "train", "--out", str(out),
                             *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{what} exited {proc.returncode}:\n{err}")


def modified(run: Path) -> int:
    """metrics.csv's modification time in ns (-1 when absent)."""
    try:
        return (run / "metrics.csv").stat().st_mtime_ns
    except FileNotFoundError:
        return -1


def logged_step(run: Path) -> int:
    """The step of the last row of metrics.csv (-1 when none)."""
    try:
        lines = (run / "metrics.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            return int(line.split(",")[0])
        except ValueError:
            continue
    return -1


def snapshot(run: Path) -> dict[str, Any]:
    results = json.loads((run / "results.json").read_text())
    results.pop("seconds")
    rows = [{k: v for k, v in r.items() if k not in CLOCK_COLUMNS}
            for r in read(run / "metrics.csv")]
    return {"results": results, "rows": rows, "config": (run / "config.json").read_bytes(),
            "tensors": {n: checkpoint.load(run / n)[0]
                        for n in ("checkpoint.safetensors", "best.safetensors")}}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = [k for k in ("results", "rows", "config") if a[k] != b[k]]
    for name, ta in a["tensors"].items():
        tb = b["tensors"][name]
        if ta.keys() != tb.keys():
            out.append(f"{name}: tensor names")
        out += [f"{name}:{k}" for k in ta if k in tb and not torch.equal(ta[k], tb[k])]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", help="working folder (default: a temporary one)")
    a = p.parse_args()
    rng = random.Random(a.seed)
    work = Path(a.dir or tempfile.mkdtemp(prefix="kill_campaign."))

    ref = work / "reference"
    t0 = time.perf_counter()
    proc = start(ref, a.steps, resume=False)
    seen: dict[str, float] = {}  # when the files that mark the phases appear
    while proc.poll() is None:
        for name in (".lock", "config.json", "results.json"):
            if name not in seen and (ref / name).exists():
                seen[name] = time.perf_counter() - t0
        time.sleep(0.005)
    finish(proc, "reference run")
    t_run = time.perf_counter() - t0
    t_train, t_tested = seen.get("config.json", 0.0), seen.get("results.json", t_run)
    expected = snapshot(ref)
    metric = expected["results"]["metric"]
    print(f"reference: {a.steps} steps, {t_run:.1f} s wall (imports {seen.get('.lock', 0):.1f} s, "
          f"training from {t_train:.1f} s to about {t_tested:.1f} s); "
          f"test {metric} {expected['results'][metric]:.4f}")

    def wait_and_kill(proc: subprocess.Popen, run: Path, step: int, before: int) -> bool:
        """Kill `proc` (SIGKILL) at a random moment: mostly just after a random step of what is
        left of its training (once metrics.csv has a row at or past it), else at a random time;
        False when it ended first."""
        if step >= a.steps or rng.random() < 0.3:
            deadline = time.perf_counter() + rng.uniform(0.0, 1.1 * t_run)
            while proc.poll() is None and time.perf_counter() < deadline:
                time.sleep(0.002)
        else:
            target = rng.randint(step + 1, a.steps)
            while proc.poll() is None and (modified(run) == before
                                           or logged_step(run) < target):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.03))
        if proc.poll() is not None:
            return False
        proc.kill()
        proc.communicate()
        return True

    kills, rounds, starts, failures = 0, 0, 0, 0
    killed_at: list[int] = []  # checkpoint step found after each kill (-1: none yet)
    while kills < a.kills:
        rounds += 1
        run = work / f"round{rounds}"
        while True:
            ck = run / "checkpoint.safetensors"
            step = checkpoint.read_meta(ck)["step"] if ck.exists() else 0
            before = modified(run)  # metrics.csv is rewritten once the start has set up
            proc = start(run, a.steps, resume=ck.exists())
            starts += 1
            if wait_and_kill(proc, run, step, before):
                kills += 1
                killed_at.append(checkpoint.read_meta(ck)["step"] if ck.exists() else -1)
                continue
            finish(proc, f"round {rounds} start {starts}")
            break
        left = [q.name for q in run.iterdir() if q.name.startswith(".")]
        diff = differences(expected, snapshot(run)) + [f"left behind: {n}" for n in left]
        status = "identical" if not diff else "DIFFERENT: " + ", ".join(diff[:6])
        failures += bool(diff)
        print(f"round {rounds}: {kills} kills so far, {status}")

    during = sum(0 < s < a.steps for s in killed_at)
    print(f"{kills} SIGKILLs in {rounds} rounds ({starts} starts): {killed_at.count(-1)} before "
          f"the first checkpoint, {during} mid-training, "
          f"{sum(s == a.steps for s in killed_at)} after the last step; "
          f"checkpoint steps at the kills: {sorted(set(killed_at))}")
    print(f"rounds bit-identical to the uninterrupted run: {rounds - failures}/{rounds}")
    print(f"work folder: {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
