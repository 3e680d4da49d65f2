"""`metazoo attack`: attack a graph, then score it the way Metattack's paper does (Sec. 5).

For the clean graph, random flips and each configured variant, `eval.retrainings` fresh GCNs
(seeds 0..n-1, Kipf & Welling's settings, ReLU) are trained on the labeled nodes of that graph
and the misclassification rate on the unlabeled nodes is reported as mean ± 95% CI
(1.96 std / sqrt(n), `metazoo.metrics.mean_and_ci95`). `results.json` in the output folder holds
the config, the graph's size, the budget, every rate and every flipped pair.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metazoo.atomic import write_text
from metazoo.errors import MetazooError
from metazoo.graph.config import AttackRunConfig, GraphEvalConfig
from metazoo.graph.datasets import prepared
from metazoo.graph.gcn import TrainSettings, normalize_adjacency, predict, train_gcn
from metazoo.graph.graphs import Graph
from metazoo.graph.metattack import budget, metattack, random_flips, self_training_labels
from metazoo.metrics import mean_and_ci95


def settings_of(ev: GraphEvalConfig) -> TrainSettings:
    """The victim GCN's training settings."""
    return TrainSettings(hidden=ev.hidden, lr=ev.lr, weight_decay=ev.weight_decay,
                         dropout=ev.dropout, epochs=ev.epochs)


def misclassification(adjacency: Tensor, graph: Graph, labeled: Tensor, unlabeled: Tensor,
                      ev: GraphEvalConfig) -> list[float]:
    """Misclassification rate on `unlabeled` of each of `ev.retrainings` GCNs trained on
    `adjacency` with the true labels of `labeled`."""
    a_hat = normalize_adjacency(adjacency.float())
    rates = []
    for seed in range(ev.retrainings):
        params = train_gcn(a_hat, graph.features, graph.labels, labeled, settings_of(ev),
                           seed=seed)
        wrong = predict(params, a_hat, graph.features)[unlabeled] != graph.labels[unlabeled]
        rates.append(float(wrong.double().mean()))
    return rates


def _row(rates: list[float], flips: list[tuple[int, int]], seconds: float) -> dict[str, Any]:
    mean, ci = mean_and_ci95(rates)
    return {"misclassification": mean, "ci95": ci, "rates": rates, "flips": flips,
            "attack_seconds": round(seconds, 3)}


def run_attack(cfg: AttackRunConfig, out: Path) -> list[str]:
    """Run `cfg`, write `out/results.json`; returns the lines to print."""
    if (out / "results.json").exists():
        raise MetazooError(f"'{out}' already holds results.json; choose another --out")
    start = time.perf_counter()
    graph, labeled, unlabeled = prepared(cfg.data)
    rows: dict[str, dict[str, Any]] = {
        "clean": _row(misclassification(graph.adjacency, graph, labeled, unlabeled, cfg.eval),
                      [], 0.0)}
    if cfg.eval.random_baseline:
        res = random_flips(graph, cfg.attack, seed=cfg.seed)
        rows["random"] = _row(misclassification(res.adjacency, graph, labeled, unlabeled,
                                                cfg.eval), res.flips, res.seconds)
    targets = self_training_labels(graph, labeled, settings_of(cfg.eval), seed=cfg.seed)
    for variant in cfg.attack.variants:
        res = metattack(graph, labeled, unlabeled, targets, variant, cfg.attack, seed=cfg.seed)
        rows[variant] = _row(misclassification(res.adjacency, graph, labeled, unlabeled,
                                               cfg.eval), res.flips, res.seconds)
    info = {"graph": graph.name, "nodes": graph.num_nodes, "edges": graph.num_edges,
            "labeled": len(labeled), "unlabeled": len(unlabeled),
            "budget": budget(graph, cfg.attack.budget), "torch_threads": torch.get_num_threads(),
            "seconds": round(time.perf_counter() - start, 3)}
    write_text(out / "results.json", json.dumps({"config": cfg.to_dict(), **info,
                                                 "results": rows}, indent=1) + "\n")
    lines = [f"{graph.name}: {graph.num_nodes} nodes, {graph.num_edges} edges, "
             f"{len(labeled)} labeled; budget {info['budget']} flips"]
    for name, r in rows.items():
        lines.append(f"{name:<13} misclassification {100 * r['misclassification']:5.1f} ± "
                     f"{100 * r['ci95']:.1f}% over {len(r['rates'])} GCNs "
                     f"({len(r['flips'])} flips, {r['attack_seconds']:.1f} s)")
    lines.append(f"written: {out / 'results.json'} ({info['seconds']:.0f} s)")
    return lines
