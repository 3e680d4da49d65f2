#!/usr/bin/env python3
"""Defect or budget? metazoo against a peer library's implementation of the same method, at the
same number of updates, on the same real-Omniglot episodes (issue 28).

For `--preset P` (e.g. maml-omniglot-5w1s) and `--updates U`: ours is `build_algorithm` of the
preset (its paper's settings: inner lr and steps, outer lr, meta-batch, schedule); the peer is
learn2learn 0.2.0 (maml, fomaml, meta_sgd, anil) or easyfsl 1.5.0 (protonet, matching,
relation) set up with the same numbers, on a torch.nn copy of our Conv-4 holding OUR initial
weights (`fidelity_adapters.py`). One stream of training episodes, metazoo's own
`make_task_source("omniglot", "train", ...)` with the preset's ways/shots/queries and seed, is
drawn once per update and fed to both, ours then the peer's (interleaved, so the machine's load
hits both alike). Every `--every` updates both are validated on the same fixed validation
episodes; at the end both are tested (final weights) on the same fixed test episodes, mean ± 95%
CI over episodes (`metazoo.metrics.mean_and_ci95`).

Verdict (issue 28): "defect" if ours' CI lies wholly below the peer's; "budget" if ours' mean is
within the peer's CI or above and both validation curves are still rising (last point above the
one at least --every updates before it); "par" if ours is within/above but a curve has stopped
rising; else "inconclusive".

Run it in the peers' venv (../shared/bench/peers/install_peers.sh: torch 2.13.0 CPU, learn2learn
0.2.0, easyfsl 1.5.0), which imports metazoo from ../src, in one process (as the other
benchmarks/*_vs_*.py):
    METAZOO_DATA=../shared/data ~/.cache/metazoo-peers-venv/bin/python \\
        benchmarks/fidelity_vs_peers.py --preset maml-omniglot-5w1s --updates 300 --every 100
Writes <out>/<preset>-U<updates>.json (curves, results, wall times, setup) and .png (both curves).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fidelity_adapters import GRADIENT_FAMILY, build_peer  # noqa: E402

from metazoo import batching  # noqa: E402
from metazoo.config_files import load_config, preset_dict  # noqa: E402
from metazoo.engine.run import build_algorithm  # noqa: E402
from metazoo.engine.train import lr_factor, make_optimizer  # noqa: E402
from metazoo.metrics import accuracy, mean_and_ci95  # noqa: E402
from metazoo.tasks import make_task_source  # noqa: E402


class Ours:
    """metazoo's side: the trainer's step (engine/train.py) without its folder and logging."""

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.cfg, self.step = cfg, 0
        self.alg = build_algorithm(cfg, (1, 28, 28))
        self.opt = make_optimizer(self.alg, cfg.train)

    def train_step(self, batch) -> float:  # type: ignore[no-untyped-def]
        t, alg = self.cfg.train, self.alg
        alg.train()
        self.opt.zero_grad(set_to_none=True)
        alg.begin_step(self.step, t.meta_steps)
        loss, _ = batching.meta_backward(alg, batch)
        alg.end_step(batch)
        lr = alg.outer_lr(t.outer_lr * lr_factor(t, self.step))
        for group in self.opt.param_groups:
            group["lr"] = lr
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(alg.parameters(), t.grad_clip)
        self.opt.step()
        self.step += 1
        return float(loss)

    def accuracies(self, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
        alg = self.alg
        alg.eval()
        try:
            with torch.enable_grad() if alg.adapts_with_gradients else torch.no_grad():
                out = alg.predict(batch.support_x, batch.support_y, batch.query_x, ways=batch.ways)
        finally:
            alg.train()
        return accuracy(out.detach(), batch.query_y)


def score(side, source, episodes: int, chunk: int = 16) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Mean and 95% CI (percent) of per-episode accuracy over episodes 0..episodes-1."""
    accs = [side.accuracies(source.batch(i, min(chunk, episodes - i)))
            for i in range(0, episodes, chunk)]
    m, h = mean_and_ci95(torch.cat(accs))
    return 100 * m, 100 * h


def still_rising(curve: list[dict[str, float]], every: int) -> bool:
    """The last validation above the latest one at least `every` updates before it (an --every
    that does not divide --updates adds a last point a few updates after the one before)."""
    last = curve[-1]
    before = [p for p in curve if p["update"] <= last["update"] - every]
    return bool(before) and last["acc"] > before[-1]["acc"]


def verdict(ours: tuple[float, float], peer: tuple[float, float], rising: bool) -> str:
    if ours[0] + ours[1] < peer[0] - peer[1]:
        return "defect"
    if ours[0] >= peer[0] - peer[1]:
        return "budget" if rising else "par"
    return "inconclusive"


def plot(path: Path, curves: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        x = [p["update"] for p in pts]
        y, h = [p["acc"] for p in pts], [p["ci95"] for p in pts]
        ax.errorbar(x, y, yerr=h, marker="o", capsize=3, label=name)
    ax.set(xlabel="updates (meta-batches)", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, help="e.g. maml-omniglot-5w1s")
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--every", type=int, default=100, help="validate both every V updates")
    ap.add_argument("--val-episodes", type=int, default=100)
    ap.add_argument("--test-episodes", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], help="preset override, key=value")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/fidelity")
    ap.add_argument("--authors-code", default=None, help="the authors' code, for methods no "
                    "library has (the checkout or the folder holding it; default "
                    "$METAZOO_AUTHORS_CODE/<repo>, else /work/peers-code/<repo>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, overrides=args.set)
    method, d, e = cfg.algorithm.name, cfg.data, cfg.eval

    def src(split: str, shape) -> object:  # type: ignore[no-untyped-def]
        return make_task_source(d.name, split, ways=shape.ways, shots=shape.shots,
                                queries=shape.queries, seed=cfg.seed, root=d.root)

    train_src, val_src, test_src = src("train", d), src("val", e), src(e.split, e)
    ours = Ours(cfg)
    peer = build_peer(method, ours.alg, cfg, authors_code=args.authors_code)
    peer_name = ("learn2learn 0.2.0" if method in GRADIENT_FAMILY
                 else "learn2learn's Reptile example" if method == "reptile" else "easyfsl 1.5.0")
    peer_name = getattr(peer, "name", peer_name)  # a peer that names itself (authors' code)
    sides = {"metazoo": ours, peer_name: peer}
    curves: dict[str, list] = {k: [] for k in sides}
    wall = dict.fromkeys(sides, 0.0)
    losses = dict.fromkeys(sides, 0.0)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{args.preset}-U{args.updates}"
    record = {"preset": args.preset, "method": method, "peer": peer_name,
              "updates": args.updates, "every": args.every, "meta_batch": cfg.train.meta_batch_size,
              "train": [d.ways, d.shots, d.queries], "eval": [e.ways, e.shots, e.queries],
              "val_episodes": args.val_episodes, "test_episodes": args.test_episodes,
              "test_split": e.split, "seed": cfg.seed, "threads": args.threads,
              "torch": torch.__version__, "paper": preset_dict(args.preset).get("paper"),
              "curves": curves, "train_wall_s": wall}

    def save(**final: object) -> None:  # after every validation too: a killed run leaves curves
        record.update(final, load_avg_1min=os.getloadavg()[0])
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
        plot(stem.with_suffix(".png"), curves, f"{args.preset}: same episodes, "
             f"{curves['metazoo'][-1]['update']} of {args.updates} updates")

    def validate(update: int) -> None:
        for k, side in sides.items():
            t0 = time.perf_counter()
            m, h = score(side, val_src, args.val_episodes)
            curves[k].append({"update": update, "acc": m, "ci95": h,
                              "train_loss": losses[k] / max(args.every, 1),
                              "eval_s": time.perf_counter() - t0})
            losses[k] = 0.0
        print(f"# update {update}: " + "  ".join(
            f"{k} {c[-1]['acc']:.2f} ± {c[-1]['ci95']:.2f}" for k, c in curves.items()),
            f"(train s: {', '.join(f'{w:.0f}' for w in wall.values())})", flush=True)
        save()

    validate(0)
    for u in range(args.updates):
        batch = train_src.batch(u, cfg.train.meta_batch_size)
        for k, side in sides.items():
            t0 = time.perf_counter()
            losses[k] += side.train_step(batch)
            wall[k] += time.perf_counter() - t0
        if not all(math.isfinite(v) for v in losses.values()):
            raise SystemExit(f"a loss is not finite at update {u + 1}: {losses}")
        if (u + 1) % args.every == 0 or u + 1 == args.updates:
            validate(u + 1)
    test = {}
    for k, side in sides.items():
        t0 = time.perf_counter()
        m, h = score(side, test_src, args.test_episodes)
        test[k] = {"acc": m, "ci95": h, "test_s": time.perf_counter() - t0}
    rising = all(still_rising(c, args.every) for c in curves.values())
    v = verdict((test["metazoo"]["acc"], test["metazoo"]["ci95"]),
                (test[peer_name]["acc"], test[peer_name]["ci95"]), rising)
    save(test=test, rising=rising, verdict=v)
    o, p = test["metazoo"], test[peer_name]
    print(f"VERDICT {args.preset} U={args.updates}: metazoo {o['acc']:.2f} ± {o['ci95']:.2f} vs "
          f"{peer_name} {p['acc']:.2f} ± {p['ci95']:.2f} ({args.test_episodes} test episodes); "
          f"train wall s {wall['metazoo']:.0f} vs {wall[peer_name]:.0f}; rising={rising} -> {v}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
