"""Figures of a run folder: learning curves; for regression runs the adaptation figure or the
predictive band; for classifiers the reliability diagram (`metazoo.plot_reliability`).

matplotlib with the Agg backend, imported inside the functions so `import metazoo` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from metazoo.engine.log import read
from metazoo.errors import CheckpointError
from metazoo.figure_file import save

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class SinusoidPlot:
    """What a sinusoid figure's caller draws with: the run's algorithm (eval mode), the test
    task's support set, the x grid `[200, 1]` and the axes."""

    alg: Any
    support_x: Tensor
    support_y: Tensor
    x: Tensor
    ax: Any


def _series(rows: list[dict[str, str]], split: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if r["split"] == split and r.get(key)]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_learning_curves(run_dir: Path) -> Path:
    """`learning_curves.png`: training loss, and training/validation accuracy or MSE by step,
    each split labelled with its episodes (N-way K-shot, inner steps where they differ), the
    validation's 95% CI as a band, the test result marked at the last step. Series of few points
    get markers, so a short run still shows."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metazoo.engine.run import RESULTS, read_config

    path = run_dir / "metrics.csv"
    if not path.exists():
        raise CheckpointError(f"no metrics.csv in '{run_dir}'; is it a run folder?")
    rows = read(path)
    cfg = read_config(run_dir)
    metric = "mse" if any(r.get("mse") for r in rows) else "acc"
    name = "MSE" if metric == "mse" else "accuracy"
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))

    def marker(points: list[int]) -> str | None:
        return "o" if len(points) < 20 else None

    steps, loss = _series(rows, "train", "loss")
    ax_loss.plot(steps, loss, marker=marker(steps), label="train")
    ax_loss.set(xlabel="meta-step", ylabel="meta-loss", title="meta-training loss")
    inner = getattr(cfg.algorithm.config, "inner_steps", None)
    test_inner = getattr(cfg.algorithm.config, "eval_inner_steps", None) or inner
    labels = {"train": _episodes(cfg.data.ways, cfg.data.shots, inner),
              "val": _episodes(cfg.eval.ways, cfg.eval.shots, test_inner)}
    for split in ("train", "val"):
        steps, values = _series(rows, split, metric)
        if not steps:
            continue
        line, = ax_metric.plot(steps, values, marker="o" if split == "val" else marker(steps),
                               label=f"{split} ({labels[split]})")
        _, band = _series(rows, split, "ci95")
        if split == "val" and len(band) == len(values):
            ax_metric.fill_between(steps, [v - c for v, c in zip(values, band, strict=True)],
                                   [v + c for v, c in zip(values, band, strict=True)],
                                   color=line.get_color(), alpha=0.2, label="val 95% CI")
    try:
        result = json.loads((run_dir / RESULTS).read_text())
        mean, ci = float(result[result["metric"]]), float(result["ci95"])
        at = max((int(r["step"]) for r in rows), default=0)
        ax_metric.errorbar([at], [mean], yerr=[ci], fmt="*", ms=12, color="tab:red", capsize=4,
                           label=f"test {mean:.4f} ± {ci:.4f} ({result['episodes']} episodes, "
                                 f"{_episodes(result['ways'], result['shots'], test_inner)})")
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no test yet (a run still training): the curves alone
    ax_metric.set(xlabel="meta-step", ylabel=f"query {name}", title=f"query {name}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, run_dir / "learning_curves.png")


def _episodes(ways: int, shots: int, inner_steps: int | None) -> str:
    """`5-way 1-shot` (`, 3 inner steps`), or `10-shot` for regression (one "way")."""
    text = f"{shots}-shot" if ways == 1 else f"{ways}-way {shots}-shot"
    return text if inner_steps is None else f"{text}, {inner_steps} inner steps"


def plot_presentations(run_dir: Path) -> Path:
    """`presentations.png`: accuracy by presentation number with 95% CIs, from the run's
    `results.offset_labels.json` (`metazoo eval RUN --protocol offset_labels`), as Santoro et
    al.'s Table 1 reads: the 1st presentation of a class is a guess (1/N), later ones show
    what the learner kept from the earlier labelled ones."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metazoo.engine.offset_eval import RESULTS

    try:
        data = json.loads((run_dir / RESULTS).read_text())
        rows = data["by_presentation"]
        k = [int(r["presentation"]) for r in rows]
        acc, ci = [float(r["accuracy"]) for r in rows], [float(r["ci95"]) for r in rows]
        ways, episodes, split = int(data["ways"]), int(data["episodes"]), str(data["split"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"'{run_dir / RESULTS}' is not what `metazoo eval RUN --protocol "
                              f"offset_labels` writes ({type(e).__name__}: {e}); run that "
                              "again") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(k, acc, yerr=ci, marker="o", capsize=3,
                label=f"{data.get('algorithm', 'run')} ({episodes} episodes)")
    ax.axhline(1 / ways, color="tab:gray", ls="--", label=f"chance (1/{ways})")
    ax.set(xlabel="presentation of the class", ylabel="accuracy", ylim=(0, 1), xticks=k,
           title=f"{ways} classes, offset labels ({split} split)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, run_dir / "presentations.png")


@contextmanager
def _sinusoid_figure(run_dir: Path, task: int, kind: str, name: str) -> Iterator[SinusoidPlot]:
    """A figure of test task `task` of a regression run (any family with `truth(task)`), with
    the true curve and the support points drawn; the caller adds its predictions, then the
    figure is saved as `name`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from metazoo.engine.run import load_run
    from metazoo.tasks import make_task_source

    cfg, alg = load_run(run_dir, writes=False)  # its PNGs are not the run's files
    src = make_task_source(cfg.data.name, "test", ways=1, shots=cfg.eval.shots, queries=1,
                           seed=cfg.seed)
    batch = src.batch(task, 1)
    truth = cast("Callable[[int], Callable[[Tensor], Tensor]]", src.truth)  # type: ignore[attr-defined]
    x = torch.linspace(-5, 5, 200).unsqueeze(1)  # [200, 1]
    alg.eval()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, truth(task)(x), "k", label="ground truth")
    ax.plot(batch.support_x[0], batch.support_y[0], "^", color="tab:purple",
            label=f"{cfg.eval.shots} support points")
    yield SinusoidPlot(alg, batch.support_x[0], batch.support_y[0], x, ax)
    ax.set(xlabel="x", ylabel="y", title=f"{cfg.algorithm.name} {kind}, test task {task}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, run_dir / name)
    plt.close(fig)


def plot_adaptation(run_dir: Path, *, task: int = 0, steps: tuple[int, ...] = (1, 10)) -> Path:
    """`adaptation.png` for a regression run: the MAML paper's Fig. 2 on test task `task`.

    Draws the true curve, the K support points, the prediction at the meta-learned parameters
    and after each number of inner steps in `steps`.
    """
    import copy
    from dataclasses import replace

    with _sinusoid_figure(run_dir, task, "adaptation", "adaptation.png") as p:
        p.ax.plot(p.x, p.alg(p.x).detach(), ":", color="tab:green",
                  label="meta-learned initialisation")
        for k in steps:
            stepped = copy.copy(p.alg)  # shares the weights; only the inner step count differs
            stepped.config = replace(p.alg.config, eval_inner_steps=k)  # type: ignore[call-arg,type-var]
            pred = stepped.adapt(p.support_x, p.support_y)(p.x).detach()
            p.ax.plot(p.x, pred, "--", label=f"after {k} step{'s' if k > 1 else ''}")
    return run_dir / "adaptation.png"


def plot_predictive(run_dir: Path, *, task: int = 0, samples: int = 10) -> Path:
    """`predictive.png` for a regression run of a probabilistic method (ALPaCA, the Bayesian
    family): on test task `task`, the true curve, the support points, the posterior predictive
    mean and its 95% band, the prior's too where the method can predict from no support
    (ALPaCA's `context`), and `samples` sampled functions where it draws them, as the papers'
    figures."""
    import inspect

    import torch

    with _sinusoid_figure(run_dir, task, "predictive", "predictive.png") as p, torch.no_grad():
        predictive = cast("Callable[..., tuple[Tensor, Tensor]] | None",
                          getattr(p.alg, "predictive", None))
        sampler = getattr(p.alg, "function_samples", None)
        if sampler is not None:
            drawn = sampler(p.support_x, p.support_y, p.x, samples).detach()
            for i, f in enumerate(drawn):
                p.ax.plot(p.x, f[:, 0], "-", color="tab:orange", alpha=0.5, lw=0.8,
                          label="sampled functions" if i == 0 else None)
        contexts: list[tuple[int | None, str, str]] = []
        if predictive is not None:
            contexts.append((None, "tab:blue", "posterior"))
            if "context" in inspect.signature(predictive).parameters:
                contexts.insert(0, (0, "tab:gray", "prior"))
        for context, color, name in contexts:
            assert predictive is not None
            args = () if context is None else (context,)
            mean, cov = predictive(p.support_x, p.support_y, p.x, *args)
            half = 1.96 * cov[:, 0, 0].sqrt()
            p.ax.plot(p.x, mean[:, 0], "--", color=color, label=f"{name} predictive mean")
            p.ax.fill_between(p.x[:, 0], mean[:, 0] - half, mean[:, 0] + half, color=color,
                              alpha=0.2, label=f"{name} 95% interval")
    return run_dir / "predictive.png"


def plot_run(run_dir: Path) -> list[Path]:
    """Every figure that fits the run; returns the paths written."""
    from metazoo import algorithms
    from metazoo.data import get_spec
    from metazoo.engine.run import read_config

    if (run_dir / "metrics.csv").exists() and read_config(run_dir).rl.family is not None:
        from metazoo.plot_rl import plot_rl_run  # a meta-RL run: its own figures

        return plot_rl_run(run_dir)
    paths = [plot_learning_curves(run_dir)]
    cfg = read_config(run_dir)
    if get_spec(cfg.data.name).kind == "regression":  # a probabilistic method: its predictive
        cls = algorithms.get(cfg.algorithm.name).cls
        probabilistic = hasattr(cls, "predictive") or hasattr(cls, "function_samples")
        paths.append(plot_predictive(run_dir) if probabilistic else plot_adaptation(run_dir))
    from metazoo.engine.offset_eval import RESULTS

    if (run_dir / RESULTS).exists():
        paths.append(plot_presentations(run_dir))
    from metazoo.plot_reliability import has_reliability, plot_reliability

    if has_reliability(run_dir):
        paths.append(plot_reliability(run_dir))
    return paths
