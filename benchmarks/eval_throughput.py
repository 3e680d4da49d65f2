#!/usr/bin/env python3
"""Test-episode throughput of every registered classification method (issue 22).

For each method: its Omniglot preset when the Omniglot archives are under the data root
(`$METAZOO_DATA`, else `~/.cache/metazoo`), else its glyphs preset (a method without one gets
its other dataset's preset with `data.name` switched); `--setting` picks the N-way K-shot preset
(5w1s by default; a method without that preset falls back to its 5w1s one). Untrained weights
(a pre-trained backbone is not loaded: `model.pretrained=null`), since only time is measured.
What is timed is what `metazoo train` and `metazoo eval` run on the test split:
`engine.evaluate.evaluate` over the fixed test episodes of `engine.run.task_source(cfg, "test")`,
at the preset's `eval.batch_size` (or `--episodes`, if fewer), after one untimed warm-up batch
of that size. Reported per method: episodes/s, images/s (support + query images through the
method), and the projected time of the preset's own test protocol (`eval.episodes` at the
measured rate), in wall-clock time and in the process's CPU time (with one thread, the
second is what the method costs even when other jobs share the core).

    METAZOO_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py \
        [--methods protonet,maml] [--episodes 8] [--setting 20w1s] [--threads 1] \
        [--out eval.json]

Prints one JSON line per method, then a markdown table. Absolute times depend on the machine's
other load (`os.getloadavg()` is printed): compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metazoo import algorithms
from metazoo.allocator import tune_allocator
from metazoo.config_files import load_config
from metazoo.data import load_split
from metazoo.engine.evaluate import evaluate
from metazoo.engine.run import build_algorithm, resolved, task_source

PRESETS = Path(__file__).resolve().parents[1] / "src" / "metazoo" / "presets"


@dataclass(frozen=True)
class Choice:
    preset: str
    overrides: tuple[str, ...]


def omniglot_present() -> bool:
    """Whether the Omniglot test split loads from the data root (archives or decoded cache)."""
    try:
        load_split("omniglot", "test", root=None, download=False, image_size=28, seed=0)
    except Exception:  # any failure means: use glyphs
        return False
    return True


def choose_preset(method: str, data: str, setting: str) -> Choice | None:
    """`method`'s preset for `data` and `setting`, falling back to 5w1s, then to the other
    dataset's preset with `data.name` switched."""
    other = "glyphs" if data == "omniglot" else "omniglot"
    for dataset in (data, other):
        for shape in dict.fromkeys((setting, "5w1s")):
            if (PRESETS / f"{method}-{dataset}-{shape}.yaml").exists():
                switch = () if dataset == data else (f"data.name={data}",)
                return Choice(f"{method}-{dataset}-{shape}", switch)
    return None


def measure(method: str, data: str, setting: str, episodes: int) -> dict[str, Any]:
    choice = choose_preset(method, data, setting)
    if choice is None:
        return {"method": method, "error": "no omniglot or glyphs preset"}
    row: dict[str, Any] = {"method": method, "preset": " ".join((choice.preset,
                                                              *choice.overrides)),
                           "data": data}
    try:
        t0 = time.perf_counter()
        overrides = [*choice.overrides, "model.pretrained=null"]
        cfg = resolved(load_config(preset=choice.preset, overrides=overrides))
        source = task_source(cfg, cfg.eval.split, training=False)
        alg = build_algorithm(cfg, source.input_shape)
        setup = time.perf_counter() - t0
        batch = min(cfg.eval.batch_size, episodes)
        evaluate(alg, source, episodes=batch, batch_size=batch)  # warm-up
        cpu = time.process_time()
        result = evaluate(alg, source, episodes=episodes, batch_size=batch)
        cpu = time.process_time() - cpu
    except Exception as e:  # one method's failure must not end the sweep
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row
    e = cfg.eval
    per_episode = result.seconds / episodes
    images = e.ways * (e.shots + e.queries)
    row.update({"ways": e.ways, "shots": e.shots, "queries": e.queries,
                "eval_batch_size": e.batch_size, "episodes_timed": episodes,
                "seconds": round(result.seconds, 3), "cpu_s": round(cpu, 3),
                "setup_s": round(setup, 2),
                "episodes_per_s": round(1 / per_episode, 3),
                "images_per_s": round(images / per_episode, 1),
                "protocol_episodes": e.episodes,
                "projected_protocol_s": round(e.episodes * per_episode, 1),
                "projected_protocol_cpu_s": round(e.episodes * cpu / episodes, 1),
                "adapts_with_gradients": alg.adapts_with_gradients})
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="", help="comma-separated names (default: every "
                    "registered classification method)")
    ap.add_argument("--episodes", type=int, default=8, help="timed test episodes per method")
    ap.add_argument("--setting", default="5w1s", help="preset suffix, e.g. 20w1s (falls back "
                    "to 5w1s where a method has no such preset)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads "
                    "(default: torch's, as the engine)")
    ap.add_argument("--data", choices=["auto", "omniglot", "glyphs"], default="auto")
    ap.add_argument("--out", type=Path, default=None, help="write all rows as one JSON file")
    args = ap.parse_args()
    tune_allocator()  # as `metazoo train` and `metazoo eval` run
    if args.threads:
        torch.set_num_threads(args.threads)
    classification = [n for n in algorithms.names()
                      if "classification" in algorithms.get(n).tasks]
    methods = args.methods.split(",") if args.methods else classification
    data = args.data if args.data != "auto" else (
        "omniglot" if omniglot_present() else "glyphs")
    head = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)), "data": data,
            "data_root": os.environ.get("METAZOO_DATA", "~/.cache/metazoo"),
            "setting": args.setting, "episodes": args.episodes,
            "command": " ".join(sys.argv)}
    print(json.dumps(head), flush=True)
    start, rows = time.perf_counter(), []
    for method in methods:
        rows.append(measure(method, data, args.setting, args.episodes))
        print(json.dumps(rows[-1]), flush=True)
    load = [round(x, 2) for x in os.getloadavg()]
    total = time.perf_counter() - start
    print(f"\n{data}, {torch.get_num_threads()} thread(s), {args.episodes} timed episodes per "
          f"method; load average (1, 5, 15 min) {load}; sweep {total:.0f} s\n")
    print("| method | preset | N-K-Q | episodes/s | images/s | projected test (episodes) | "
          "projected, process CPU time |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r.get('preset', '-')} | - | - | - | error: "
                  f"{r['error'][:80]} | - |")
            continue
        print(f"| {r['method']} | {r['preset']} | {r['ways']}-{r['shots']}-{r['queries']} | "
              f"{r['episodes_per_s']:.2f} | {r['images_per_s']:.0f} | "
              f"{r['projected_protocol_s']:.0f} s ({r['protocol_episodes']}) | "
              f"{r['projected_protocol_cpu_s']:.0f} s |")
    if args.out:
        args.out.write_text(json.dumps({**head, "load_average": load, "sweep_s": round(total, 1),
                                        "rows": rows}, indent=2) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
