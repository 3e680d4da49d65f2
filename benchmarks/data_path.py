#!/usr/bin/env python3
"""Is the augmented data path at least 10x faster than a training step on 84x84 RGB episodes?

Data path: `AugmentedEpisodes(EpisodeSampler(dataset, 5, 5, 15), MetaOptNet's augmentation)
.batch(i, 1)`: draw the episode, index the resident uint8 `ClassDataset`, convert its 100
images to float, then pad-crop (8), colour jitter (0.4), flip and normalise (miniImageNet
statistics), as `metazoo.tasks.augment` does for a training run. The dataset is synthetic: random
uint8 images, `--classes` x `--per-class` (default 64 x 600, miniImageNet's training split, about
813 MB), so the indexing works on miniImageNet's footprint. Reported beside it: the episode alone
(no augmentation) and the augmentation alone.

Step: one ProtoNet training step on one such episode as the trainer runs it
(`batching.meta_backward`, then Adam), for conv4 (hidden 64) and resnet12 (MetaOptNet's
64-160-320-640, DropBlock on) from `metazoo.models`.

Timing: rounds alternate, so the machine's other load hits both alike: each round times
`--data-per-round` data-path episodes, then one step of each backbone; medians over the rounds,
after one untimed round. `metazoo.tune_allocator()` as `metazoo train` runs (`--no-tune` for
glibc's defaults).

    OMP_NUM_THREADS=2 python benchmarks/data_path.py [--rounds 5] [--per-class 100]

Prints one JSON object per measurement, then a markdown table with one row per backbone: the
step's median time, data-path episodes per second, and their ratio (step time / data time; the
target is >= 10).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metazoo import algorithms, batching, models
from metazoo.allocator import tune_allocator
from metazoo.data.base import ClassDataset
from metazoo.tasks import EpisodeSampler, TaskBatch
from metazoo.tasks.augment import AugmentConfig, AugmentedEpisodes, augment

SHAPE = (3, 84, 84)
WAYS, SHOTS, QUERIES = 5, 5, 15
METAOPTNET = AugmentConfig(crop="pad", padding=8, jitter=0.4, flip=True, normalize="miniimagenet")
TARGET = 10.0


def synthetic_split(classes: int, per_class: int) -> ClassDataset:
    """Random uint8 `[classes * per_class, 3, 84, 84]` images, rows sorted by class."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, *SHAPE), generator=g, dtype=torch.uint8)
    return ClassDataset(images, torch.arange(classes).repeat_interleave(per_class),
                        tuple(f"class{i}" for i in range(classes)), "synthetic84/train")


def training_step(backbone: str, batch: TaskBatch) -> Callable[[], None]:
    """One ProtoNet step (meta_backward + Adam) of `backbone` on `batch`."""
    torch.manual_seed(0)
    net = (models.build("conv4", input_shape=SHAPE, hidden=64) if backbone == "conv4"
           else models.build("resnet12", input_shape=SHAPE))
    alg = algorithms.build("protonet", net, ways=WAYS)
    alg.train()
    opt = torch.optim.Adam(alg.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        batching.meta_backward(alg, batch)
        opt.step()

    return step


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=600, help="images per class (600: "
                    "miniImageNet, ~813 MB resident; 100: ~135 MB)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (one step per backbone "
                    "each)")
    ap.add_argument("--data-per-round", type=int, default=10, help="data-path episodes per round")
    ap.add_argument("--backbones", default="conv4,resnet12")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--no-tune", action="store_true", help="glibc's malloc as shipped")
    args = ap.parse_args()
    if not args.no_tune:
        tune_allocator()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = synthetic_split(args.classes, args.per_class)
    sampler = EpisodeSampler(ds, WAYS, SHOTS, QUERIES, seed=0)
    source = AugmentedEpisodes(sampler, METAOPTNET)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "dataset_mb": round(ds.images.numel() / 2**20, 1),
                      "setup_s": round(time.perf_counter() - t0, 2)}), flush=True)
    backbones = args.backbones.split(",")
    steps = {b: training_step(b, source.batch(0, 1)) for b in backbones}
    g = torch.Generator().manual_seed(0)
    plain = sampler.batch(0, 1)
    both = torch.cat([plain.support_x, plain.query_x], dim=1)
    times: dict[str, list[float]] = {k: [] for k in ["data", "episode", "augment", *backbones]}
    episode = 0
    for r in range(args.rounds + 1):
        per: dict[str, list[float]] = {k: [] for k in ("data", "episode", "augment")}
        for _ in range(args.data_per_round):
            episode += 1
            per["data"].append(timed(lambda e=episode: source.batch(e, 1)))
            per["episode"].append(timed(lambda e=episode: sampler.batch(e, 1)))
            per["augment"].append(timed(lambda: augment(both, METAOPTNET, g)))
        step_s = {b: timed(steps[b]) for b in backbones}
        if r == 0:
            continue  # warm-up
        for k, v in per.items():
            times[k].append(statistics.median(v))
        for b in backbones:
            times[b].append(step_s[b])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"data_path_s": med["data"], "episode_only_s": med["episode"],
                      "augment_only_s": med["augment"], "episodes_per_s": 1 / med["data"],
                      "rounds": args.rounds, "data_per_round": args.data_per_round}), flush=True)
    rows = []
    for b in backbones:
        ratio = med[b] / med["data"]
        rows.append((b, med[b], ratio))
        print(json.dumps({"backbone": b, "step_s": med[b], "step_s_all": times[b],
                          "step_over_data": ratio, "meets_target": ratio >= TARGET}), flush=True)
    print(f"\nload average (1, 5, 15 min): {[round(x, 2) for x in os.getloadavg()]}; "
          f"elapsed {time.perf_counter() - t0:.0f} s; dataset {args.classes} x {args.per_class}")
    print("\n| backbone | step s (ProtoNet 5w5s15q) | data path ms/episode (episode + augment) "
          "| data path episodes/s | step / data | >= 10x |")
    print("|---|---|---|---|---|---|")
    for b, step_s, ratio in rows:
        print(f"| {b} | {step_s:.3f} | {1e3 * med['data']:.1f} ({1e3 * med['episode']:.1f} + "
              f"{1e3 * med['augment']:.1f}) | {1 / med['data']:.1f} | {ratio:.1f}x | "
              f"{'yes' if ratio >= TARGET else 'no'} |")
    return 0 if all(r >= TARGET for _, _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
