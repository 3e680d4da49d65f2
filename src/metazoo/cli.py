"""`metazoo`: train, evaluate, predict, list and plot from the command line.

Each subcommand is a thin function over the Python API. A user error (`MetazooError`) prints one
line on stderr and exits with status 2; there is no traceback for mistakes in input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metazoo.allocator import tune_allocator
from metazoo.errors import MetazooError


def _cmd_list(args: argparse.Namespace) -> int:
    from metazoo import algorithms
    from metazoo.config_files import preset_names
    from metazoo.data import list_datasets

    what = args.what
    if args.markdown:
        print(algorithm_table())
        return 0
    if what in ("all", "algorithms"):
        print("algorithms:")
        specs = [algorithms.get(name) for name in algorithms.names()]
        width = max(len(s.display) for s in specs)
        for name, s in zip(algorithms.names(), specs, strict=True):
            print(f"  {name:<12} {s.display:<{width}} {s.family:<11} {s.paper}")
    if what in ("all", "datasets"):
        print("datasets:")
        datasets = list_datasets()
        width = max(12, *(len(d.name) for d in datasets))
        for d in datasets:
            print(f"  {d.name:<{width}} {d.description}")
    if what in ("all", "presets"):
        print("presets:")
        for p in preset_names():
            print(f"  {p}")
    return 0


def algorithm_table() -> str:
    """The README's algorithm table (Markdown), made from the registry and the presets."""
    from metazoo import algorithms
    from metazoo.config_files import preset_names

    rows = ["| family | algorithm | paper | file | presets |", "|---|---|---|---|---|"]
    presets = preset_names()
    for name in sorted(algorithms.names(), key=lambda n: (algorithms.get(n).family, n)):
        s = algorithms.get(name)
        stem = s.cls.__module__.rsplit(".", 1)[1]
        mine = ", ".join(f"`{p}`" for p in presets if p.split("-")[0] == name) or "-"
        rows.append(f"| {s.family} | {s.display} (`{name}`) | {s.paper} | "
                    f"[{stem}.py](src/metazoo/algorithms/{stem}.py) | {mine} |")
    return "\n".join(rows)


def _cmd_train(args: argparse.Namespace) -> int:
    from metazoo.config_files import load_config
    from metazoo.engine.run import CHECKPOINT
    from metazoo.engine.train import train

    cfg = load_config(args.preset, args.config, args.set)
    out = Path(args.out or f"runs/{args.preset or 'default'}")
    if not args.resume and (out / CHECKPOINT).exists():
        raise MetazooError(f"'{out}' already holds a run; pass --resume to continue it or "
                           "--out NEW_DIR to start another")
    train(cfg, out, resume=args.resume)
    print(f"run folder: {out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.oneshot_runs:
        from metazoo.engine.oneshot import evaluate_oneshot_run

        evaluate_oneshot_run(args.run_dir, args.oneshot_runs, data_root=args.data_root,
                             options=args.set)  # prints the error rate of every run
        return 0
    from metazoo.engine.evaluate import evaluate_run

    result, path = evaluate_run(args.run_dir, episodes=args.episodes, split=args.split,
                                ways=args.ways, shots=args.shots, queries=args.queries,
                                data_root=args.data_root, options=args.set)
    print(result.line())
    print(f"written: {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from metazoo.engine.predict import predict_folders

    for path, label, prob in predict_folders(Path(args.run_dir), Path(args.support),
                                             Path(args.query), invert=args.invert):
        print(f"{path}\t{label}\t{prob:.3f}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from metazoo.plots import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metazoo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="algorithms, datasets and presets")
    ls.add_argument("what", nargs="?", default="all",
                    choices=["all", "algorithms", "datasets", "presets"])
    ls.add_argument("--markdown", action="store_true",
                    help="print the README's algorithm table")
    ls.set_defaults(func=_cmd_list)

    tr = sub.add_parser("train", help="meta-train, then evaluate on the test split")
    tr.add_argument("--preset", help="a bundled preset (metazoo list presets)")
    tr.add_argument("--config", help="a YAML config file")
    tr.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config values, e.g. train.meta_steps=100")
    tr.add_argument("--out", help="run folder (default runs/<preset or default>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run on fixed episodes")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=int)
    ev.add_argument("--split")
    ev.add_argument("--ways", type=int)
    ev.add_argument("--shots", type=int)
    ev.add_argument("--queries", type=int)
    ev.add_argument("--data-root")
    ev.add_argument("--set", nargs="*", default=[], metavar="algorithm.KEY=VALUE",
                    help="test-time algorithm options, e.g. algorithm.bn_mode=non_transductive "
                         "(results go to results.<options>.json)")
    ev.add_argument("--oneshot-runs", metavar="DIR",
                    help="Lake et al.'s one-shot runs (runNN/ folders): error rate per run")
    ev.set_defaults(func=_cmd_eval)

    pr = sub.add_parser("predict", help="classify your own images with a trained run")
    pr.add_argument("run_dir")
    pr.add_argument("--support", required=True, help="folder with one sub-folder per class")
    pr.add_argument("--query", required=True, help="folder of images to classify")
    pr.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                    help="invert grey levels (auto: when the run saw ink-high images and these "
                         "have light backgrounds)")
    pr.set_defaults(func=_cmd_predict)

    pl = sub.add_parser("plot", help="learning curves (and adaptation plots) as PNG")
    pl.add_argument("run_dir")
    pl.set_defaults(func=_cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `metazoo` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    tune_allocator()  # large activations reuse heap pages: see metazoo.allocator
    try:
        return int(args.func(args))
    except MetazooError as e:
        print(f"metazoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metazoo: interrupted; the last checkpoint is intact (use --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
