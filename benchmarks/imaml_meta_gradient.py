#!/usr/bin/env python3
"""How close is iMAML's CG meta-gradient to the gradient of the inner loop it stands for?

A diagnostic for the paper's variant of iMAML on Omniglot (docs/results.md): for real 5-way
1-shot training tasks and given meta-parameters theta (the preset's initialisation, or a run
folder's weights), it compares per task
  * `cg`: the algorithm's implicit meta-gradient (its `cg_steps`, damping and truncation);
  * `unrolled`: the exact gradient w.r.t. theta of the query loss after the inner loop as run
    (16 GD steps, with the proximal term at every step or once at the end), by backprop
    through all the steps (second order), which the implicit gradient approximates;
  * `first_order`: grad of the query loss at phi (what CG starts from).
and prints the mean cosine of `cg` and `first_order` with `unrolled`, the norms, the fraction
of tasks whose CG stopped at the first direction (non-positive curvature: `cg` = first order),
the support loss left at phi, the support-loss Hessian's largest eigenvalue h at phi (power
iteration), and the fraction of tasks where GD at the inner learning rate is stable in that
direction: lr * (h + lambda) < 2 with the proximal term in every step, lr * h < 2 without.

    python benchmarks/imaml_meta_gradient.py --data-root ../shared/data/omniglot \
        [--preset imaml-omniglot-5w1s] [--run RUN_FOLDER] [--tasks 8]
        [--set algorithm.inner_prox=final_step ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metazoo.config_files import load_config
from metazoo.engine import checkpoint
from metazoo.engine.run import build_algorithm, task_source
from metazoo.functional import call, params_of
from metazoo.inner_loop import sgd_steps
from metazoo.solvers import conjugate_gradient


def flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


def top_eigenvalue(matvec, start: dict[str, torch.Tensor], lam: float, identity: float,
                   iterations: int = 30) -> float:
    """The support-loss Hessian's eigenvalue of largest magnitude, by power iteration on
    H u = lam * (matvec(u) - identity * u)."""
    u = {k: v / flat(start).norm() for k, v in start.items()}
    value = 0.0
    for _ in range(iterations):
        au = matvec(u)
        hu = {k: lam * (au[k] - identity * u[k]) for k in u}
        value = float(torch.dot(flat(hu), flat(u)))
        norm = flat(hu).norm()
        u = {k: t / norm for k, t in hu.items()}
    return value


def unrolled_gradient(alg, sx, sy, qx, qy) -> dict[str, torch.Tensor]:
    """d L_query(phi(theta)) / d theta through every inner step (the finite procedure's own):
    the inner loop of `IMAML.inner_solve`, run second order from a live theta."""
    cfg = alg.config
    theta = {k: v.detach().clone().requires_grad_() for k, v in params_of(alg).items()}
    every = cfg.inner_prox == "every_step"

    def objective(p: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = F.cross_entropy(call(alg, p, sx), sy)
        prox = sum(((p[k] - theta[k]) ** 2).sum() for k in p) if every else 0
        return loss + cfg.lam / 2 * prox

    phi = sgd_steps(objective, theta, steps=cfg.inner_steps, lr=cfg.inner_lr, first_order=False)
    if not every:
        phi = {k: v - cfg.inner_lr * cfg.lam * (v - theta[k]) for k, v in phi.items()}
    query = F.cross_entropy(call(alg, phi, qx), qy)
    return dict(zip(theta, torch.autograd.grad(query, list(theta.values())), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--run", help="a run folder whose best (else latest) weights are theta")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--preset", default="imaml-omniglot-5w1s")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides (KEY=VALUE)")
    args = parser.parse_args()
    overrides = [f"data.root={args.data_root}", *args.set]
    cfg = load_config(preset=args.preset, overrides=[
        "algorithm.inner_prox=every_step", "algorithm.cg_damping=0", "algorithm.lam_damping=0",
        *overrides])  # the paper's variant unless --set says otherwise
    alg = build_algorithm(cfg, (1, 28, 28))  # Omniglot's shape
    if args.run:
        folder = Path(args.run)
        weights = folder / "best.safetensors"
        tensors, _ = checkpoint.load(weights if weights.exists() else
                                     folder / "checkpoint.safetensors")
        alg.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    alg.train()
    batch = task_source(cfg, "train", training=True).batch(0, args.tasks)
    rows = []
    for i in range(args.tasks):
        sx, sy, qx, qy = (batch.support_x[i], batch.support_y[i], batch.query_x[i],
                          batch.query_y[i])
        phi = {k: v.requires_grad_() for k, v in alg.inner_solve(sx, sy).items()}
        support_loss = float(F.cross_entropy(call(alg, phi, sx), sy).detach())
        query_loss = F.cross_entropy(call(alg, phi, qx), qy)
        v = dict(zip(phi, torch.autograd.grad(query_loss, list(phi.values())), strict=True))
        cg = alg.implicit_gradient(phi, sx, sy, v)
        matvec = alg.implicit_matrix(phi, sx, sy)
        long = conjugate_gradient(matvec, v, 50)
        top = top_eigenvalue(matvec, v, alg.config.lam + alg.config.lam_damping,
                             1 + alg.config.cg_damping)
        true = flat(unrolled_gradient(alg, sx, sy, qx, qy))
        rows.append({"cos_cg": cosine(flat(cg), true), "cos_cg50": cosine(flat(long), true),
                     "cos_first_order": cosine(flat(v), true),
                     "norm_cg": float(flat(cg).norm()), "norm_unrolled": float(true.norm()),
                     "cg_stopped_at_once": bool(torch.equal(flat(cg), flat(v))),
                     "support_loss": support_loss, "hessian_top": top,
                     "gd_stable": top + (alg.config.lam if alg.config.inner_prox == "every_step"
                                         else 0) < 2 / alg.config.inner_lr})
    mean = {k: round(sum(float(r[k]) for r in rows) / len(rows), 4) for k in rows[0]}
    print(json.dumps({"preset": args.preset, "run": args.run or "initialisation",
                      "set": args.set, **mean}))


if __name__ == "__main__":
    main()
