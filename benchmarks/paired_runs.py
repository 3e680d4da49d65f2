#!/usr/bin/env python3
"""Two run folders on the same fixed episodes, paired: is B better than A beyond noise?

Each run's trained weights (best, else latest: `engine.run.load_run`) predict the same episodes
`0..N-1` of SPLIT, batched as `metazoo eval` batches them, so each mean equals what `metazoo eval`
reports; the per-episode accuracy differences give the mean difference +- 95% CI (normal
approximation over episodes), far tighter than two unpaired CIs when the runs agree on most
episodes. Used for the tuned-against-paper comparison of docs/results.md (issue 27).

    METAZOO_DATA=../shared/data python benchmarks/paired_runs.py RUN_A RUN_B \\
        [--split val] [--episodes 500]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import torch

from metazoo.engine.distributed import episode_share
from metazoo.engine.run import load_run, task_source
from metazoo.engine.scoring import Scores


def per_episode_accuracy(run: Path, split: str, episodes: int) -> torch.Tensor:
    cfg, alg = load_run(run, writes=False)
    cfg = replace(cfg, eval=replace(cfg.eval, split=split, episodes=episodes))
    source = task_source(cfg, split, training=False)
    alg.eval()
    scores = Scores()
    for index, size in episode_share(episodes, cfg.eval.batch_size):
        b = source.batch(index, size)
        out = alg.predict(b.support_x, b.support_y, b.query_x, ways=b.ways)
        scores.add(alg, b, out.detach(), None, index * size)
    return torch.cat(scores.values["accuracy"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--episodes", type=int, default=600)
    args = p.parse_args()
    a, b = (per_episode_accuracy(r, args.split, args.episodes) for r in (args.run_a, args.run_b))
    print(f"A {args.run_a}: {100 * float(a.mean()):.2f}; B {args.run_b}: "
          f"{100 * float(b.mean()):.2f} ({args.split}, {args.episodes} episodes)")
    d = 100 * (b - a)
    half = 1.96 * float(d.std(unbiased=True)) / math.sqrt(len(d))
    print(f"B - A: {float(d.mean()):.2f} +- {half:.2f} points over {len(d)} paired episodes; "
          f"B better in {int((d > 0).sum())}, worse in {int((d < 0).sum())}, tied in "
          f"{int((d == 0).sum())}")


if __name__ == "__main__":
    main()
