"""The peer side of `fidelity_vs_peers.py` for iMAML: the authors' own reference code (issue 28).

Rajeswaran, Finn, Kakade, Levine, "Meta-Learning with Implicit Gradients", NeurIPS 2019: no peer
library implements it, so the peer is github.com/aravindr93/imaml_dev at commit
6a2a6697d8b7be72e098d524852eacb448935fbf (2020-01-18), kept outside metazoo (`--authors-code`,
see `fidelity_adapters.authors_code`) and imported from there, unedited.
Used as is: their `Learner` (`learn_task` = the inner loop, GD by their `inner_opt`;
`regularization_loss`; `get_loss`; `matrix_evaluator` + `hessian_vector_product`; the outer step
`outer_step_with_grad`, Adam with their eps=1e-3), `utils.cg_solve` and `utils.measure_accuracy`;
the per-task loop is that of examples/omniglot_implicit_maml.py (train) and
examples/measure_accuracy.py (test), re-typed here (a script, not importable).

Adaptations (all at runtime, none in their files; nothing else was needed under torch 2.13):
* `GPU=False` (their script's `--use_gpu` default is True: every `.cuda()` sits behind it).
* MPLBACKEND=Agg before import: learner_model imports pyplot before utils selects Agg.
* Episodes are metazoo's `TaskBatch`, one dict {x_train, y_train, x_val, y_val} per episode (their
  dataset class, a pre-generated pool of tasks drawn with replacement, is not used).
* Settings from OUR preset where theirs take arguments: inner lr, inner steps (train, eval),
  lambda, CG steps, `cg_damping` -> `regu_coef`, `lam_damping`, outer lr (and its schedule via
  their `set_outer_lr`), outer algorithm. `inner_prox: every_step` (the paper, our default) uses
  their `learn_task(add_regularization=True, w_0, lam)`; `final_step` their script's procedure
  (plain GD, then one `inner_opt` step on lam/2 ||w - w_k||^2). Eval lambda: `eval_lam` or lam.

Differences that remain (theirs vs ours):
* Network: our Conv-4 (max-pool, Linear(64, N)) in torch.nn with our initial weights, not their
  `make_conv_network` (stride-2 convs, a zero pad, Linear(256, N), Xavier gain 1.73 and U(0, 0.05)
  biases): their weights could not be shared. Their Learner takes any nn.Module; batch norm uses
  batch statistics in both (query loss: the query batch's, = our "transductive").
* Outer Adam eps 1e-3 (hard-coded in their Learner) vs torch's 1e-8 in ours.
* CG: theirs spends one extra Hessian-vector product at x=0, rebuilds the support graph for
  each product, stops on an absolute residual r.r < 1e-10 and never on non-positive curvature;
  ours stops at a direction p with p.Ap <= 0. cg_steps <= 1 means no CG at all in their script.
* Their `outer_step_with_grad` takes the mean over tasks of the CG solutions (= ours).
* `grad_clip` / `weight_decay` do not exist in their code: refused if the preset sets them.

`python benchmarks/fidelity_imaml_authors.py --check` (peers' venv, METAZOO_DATA set): cosine
similarity of the two meta-gradients at identical weights on the same meta-batch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from fidelity_adapters import authors_code, copy_weights, network_params, peer_conv4
from torch import Tensor, nn

AUTHORS_COMMIT = "6a2a6697d8b7be72e098d524852eacb448935fbf"
NAME = f"authors' code (aravindr93/imaml_dev@{AUTHORS_COMMIT[:7]})"
def import_authors(code_dir: str | Path | None):  # type: ignore[no-untyped-def]
    """Their `implicit_maml.learner_model` and `implicit_maml.utils`, from `code_dir`."""
    code = authors_code("imaml_dev", "implicit_maml/learner_model.py", code_dir, AUTHORS_COMMIT)
    os.environ.setdefault("MPLBACKEND", "Agg")
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    import implicit_maml.learner_model as learner_model
    import implicit_maml.utils as utils

    return learner_model, utils


class AuthorsIMAML:
    """iMAML by the authors' Learner on our episodes, with our preset's settings."""

    name = NAME

    def __init__(self, ours: nn.Module, cfg,  # type: ignore[no-untyped-def]
                 code_dir: str | Path | None = None) -> None:
        learner_model, self.utils = import_authors(code_dir)
        self.a, self.t, self.step = cfg.algorithm.config, cfg.train, 0
        if self.t.grad_clip or self.t.weight_decay:
            raise SystemExit("the authors' iMAML has no grad_clip / weight_decay")
        meta_net, fast_net = peer_conv4(cfg.data.ways), peer_conv4(cfg.data.ways)
        copy_weights(network_params(ours), meta_net)

        def learner(net: nn.Module):  # type: ignore[no-untyped-def]
            return learner_model.Learner(model=net, loss_function=nn.CrossEntropyLoss(),
                                         inner_lr=self.a.inner_lr, outer_lr=self.t.outer_lr,
                                         GPU=False, inner_alg="gradient",
                                         outer_alg=self.t.optimizer)

        self.meta, self.fast = learner(meta_net), learner(fast_net)  # as their script: two nets
        self.lam = torch.tensor(float(self.a.lam))  # their script's scalar lambda
        eval_lam = self.a.lam if self.a.eval_lam is None else self.a.eval_lam
        self.eval_lam = torch.tensor(float(eval_lam))

    @staticmethod
    def tasks(batch) -> list[dict[str, Tensor]]:  # type: ignore[no-untyped-def]
        return [{"x_train": batch.support_x[i].contiguous(), "y_train": batch.support_y[i],
                 "x_val": batch.query_x[i].contiguous(), "y_val": batch.query_y[i]}
                for i in range(len(batch))]

    def solve(self, task: dict[str, Tensor], w_k: Tensor, steps: int, lam: Tensor) -> None:
        """The fast learner at the approximate inner solution, from the meta-parameters w_k."""
        fast, final = self.fast, self.a.inner_prox == "final_step"
        fast.set_params(w_k.clone())  # "sync weights"
        fast.learn_task(task, num_steps=steps, add_regularization=not final, w_0=w_k, lam=lam)
        if final:  # their script's "pull back for regularization"
            fast.inner_opt.zero_grad()
            fast.regularization_loss(w_k, lam).backward()
            fast.inner_opt.step()

    def meta_gradient(self, batch) -> tuple[Tensor, float]:  # type: ignore[no-untyped-def]
        """Their flat meta-gradient (mean over tasks) and the mean query loss at the solutions."""
        a, fast, w_k = self.a, self.fast, self.meta.get_params()
        tasks = self.tasks(batch)
        meta_grad, total = torch.zeros_like(w_k), 0.0
        for task in tasks:
            self.solve(task, w_k, a.inner_steps, self.lam)
            valid_loss = fast.get_loss(task["x_val"], task["y_val"])
            valid_grad = torch.autograd.grad(valid_loss, fast.model.parameters())
            flat_grad = torch.cat([g.contiguous().view(-1) for g in valid_grad])
            if a.cg_steps <= 1:
                task_outer_grad = flat_grad
            else:
                evaluator = fast.matrix_evaluator(task, self.lam, a.cg_damping, a.lam_damping)
                task_outer_grad = self.utils.cg_solve(evaluator, flat_grad, a.cg_steps,
                                                      x_init=None)
            meta_grad += task_outer_grad / len(tasks)
            total += float(valid_loss) / len(tasks)
        return meta_grad, total

    def train_step(self, batch) -> float:  # type: ignore[no-untyped-def]
        from metazoo.engine.train import lr_factor

        meta_grad, loss = self.meta_gradient(batch)
        self.meta.set_outer_lr(self.t.outer_lr * lr_factor(self.t, self.step))
        self.meta.outer_step_with_grad(meta_grad, flat_grad=True)
        self.step += 1
        return loss

    def accuracies(self, batch) -> Tensor:  # type: ignore[no-untyped-def]
        """measure_accuracy.py's test: inner solve from the meta-parameters, query accuracy."""
        w_k, steps = self.meta.get_params(), self.a.eval_inner_steps or self.a.inner_steps
        out = []
        for task in self.tasks(batch):
            self.solve(task, w_k, steps, self.eval_lam)
            out.append(self.utils.measure_accuracy(task, self.fast, train=False) / 100.0)
        return torch.tensor(out, dtype=torch.float32)


def check() -> int:
    """Meta-gradients of metazoo's iMAML and the authors' at identical weights, same episodes."""
    ap = argparse.ArgumentParser(description="iMAML meta-gradient: metazoo vs the authors' code")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--preset", default="imaml-omniglot-5w1s")
    ap.add_argument("--tasks", type=int, default=8, help="meta-batch of the check")
    ap.add_argument("--set", action="append", default=[], help="preset override, key=value")
    ap.add_argument("--authors-code", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from metazoo import batching
    from metazoo.config_files import load_config
    from metazoo.engine.run import build_algorithm
    from metazoo.tasks import make_task_source

    cfg = load_config(args.preset, overrides=args.set)
    d = cfg.data
    batch = make_task_source(d.name, "train", ways=d.ways, shots=d.shots, queries=d.queries,
                             seed=cfg.seed, root=d.root).batch(0, args.tasks)
    ours = build_algorithm(cfg, (1, 28, 28))
    theirs = AuthorsIMAML(ours, cfg, args.authors_code)
    ours.train()
    ours.zero_grad(set_to_none=True)
    loss, _ = batching.meta_backward(ours, batch)
    g_ours = torch.cat([p.grad.reshape(-1) for p in network_params(ours)])
    g_theirs, loss_theirs = theirs.meta_gradient(batch)
    cos = torch.nn.functional.cosine_similarity(g_ours, g_theirs, dim=0)
    print(f"{args.preset} ({args.tasks} tasks): query loss {float(loss):.5f} (metazoo) vs "
          f"{loss_theirs:.5f} (authors); |g| {g_ours.norm():.5g} vs {g_theirs.norm():.5g}; "
          f"cosine {float(cos):.6f}; max |diff| {float((g_ours - g_theirs).abs().max()):.3g}")
    return 0


if __name__ == "__main__":
    ROOT = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(check())
