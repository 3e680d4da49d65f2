"""The peer side of `fidelity_vs_peers.py` for GNN: the authors' own reference code (issue 28).

Garcia, Bruna, "Few-Shot Learning with Graph Neural Networks", ICLR 2018: no peer library
implements it, so the peer is github.com/vgsatorras/few-shot-gnn at commit
6ad156333e998d26f3d5da6a325c5df6f694a4d1 (2021-09-13, "upgrade"), kept outside metazoo
(`--authors-code`: the checkout or the folder holding it, `fidelity_adapters.authors_code`; a folder
holding few-shot-gnn/ also works) and imported from there, unedited. Used as is: their
`models.models.create_models` (EmbeddingOmniglot(64) + MetricNN -> `gnn_iclr.GNN_nl_omniglot`,
nf=96, J=1), MetricNN's forward (node list: query first with a zero label, then the supports
with one-hot labels), `SoftmaxModule`, and their loss `F.nll_loss` of that log-softmax. Their
`train_batch` (main.py), `adjust_learning_rate` (main.py) and `test_one_shot` (test.py) are
re-typed here (main.py parses argv and makes folders on import; both build their own loaders).

Adaptations (at runtime, none in their files; nothing else was needed under torch 2.13):
* args: a namespace with their README's Omniglot command (dataset omniglot, metric_network
  gnn_iclr_nl, train/test_N_way = our ways) and cuda=False (every `.cuda()` sits behind it).
* Initial weights: theirs, from `torch.manual_seed(1)` (their --seed default) right before
  `create_models`, as their script, in a forked RNG so ours' stream is untouched.
* Episodes: each of our tasks' N*Q queries becomes one of their graphs (their batch_size = B*N*Q,
  300 for the 5-way 1-shot preset = their README's), with the task's supports as their
  `batches_xi` / one-hot `labels_yi` lists; images mapped to their range, x' = 1 - 2x (theirs
  /127.5 - 1 of the white-background PNG: background +1, ink -1; ours ink 1 on 0).
* Torch 2.x warnings from their code, harmless: implicit-dim `F.softmax` / `F.log_softmax` (2-D
  inputs: dim 1, as before) and deprecated `F.sigmoid`.
* lr, decay interval from our preset (= their README: lr 1e-3, dec_lr 10000); their two Adams
  (weight decay 0 for Omniglot) and their x0.5 decay set after each step from the step index.

Differences (theirs vs ours, architecture not shared, so their init is used):
* Embedding: convs without bias, conv3/conv4 unpadded and unpooled, leaky ReLU 0.1, then
  FC(576, 64) + BatchNorm1d + leaky ReLU; ours conv4 (bias, ReLU, 4 max-pools, 64 features).
  Theirs embeds the query batch and each support position's batch in separate calls (train-mode
  batch norm over B*N*Q images each; ours once over a task's images), so supports are embedded
  once per graph (N*Q times per task).
* Batch norm with running statistics (momentum 0.1), used at test (their `.eval()`); ours uses
  batch statistics. GNN batch norm over all graphs of the batch; ours per graph.
* Query label part zero (ours 1/N); dropout 0.3 in the last adjacency MLP (ours none); biases
  in the adjacency 1x1 convs and in Gconv before batch norm (ours none); leaky ReLU 0.01 in both.
* Graphs: each of theirs has its own classes and supports in shuffled order; here the N*Q graphs
  of a task share its supports, in our order. Their decay lags ours by one step.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from fidelity_adapters import authors_code
from torch import Tensor, nn

AUTHORS_COMMIT = "6ad156333e998d26f3d5da6a325c5df6f694a4d1"
NAME = f"authors' code (vgsatorras/few-shot-gnn@{AUTHORS_COMMIT[:7]})"
AUTHORS_SEED = 1  # main.py --seed default: torch.manual_seed before create_models


def import_authors(code_dir: str | Path | None = None):  # type: ignore[no-untyped-def]
    """Their `models.models` (which imports `models.gnn_iclr`) from `code_dir`."""
    code = authors_code("few-shot-gnn", "models/gnn_iclr.py", code_dir, AUTHORS_COMMIT)
    loaded = sys.modules.get("models")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent != code / "models":
        raise SystemExit(f"another top-level 'models' package is already imported: {loaded}")
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    import models.models as models  # their package name

    return models


class AuthorsGNN:
    """GNN by the authors' modules on our episodes, with their Omniglot settings."""

    name = NAME

    def __init__(self, ours: nn.Module, cfg, code_dir: str | Path | None = None) -> None:  # type: ignore[no-untyped-def]
        del ours  # architectures differ (module docstring): nothing to copy
        self.models = import_authors(code_dir)
        d, e, t = cfg.data, cfg.eval, cfg.train
        if d.ways != e.ways:
            raise SystemExit("the authors' GNN asserts train_N_way == test_N_way")
        if t.grad_clip or t.weight_decay or t.schedule not in ("step", "constant") or (
                t.schedule == "step" and t.lr_gamma != 0.5):
            raise SystemExit("the authors' GNN has no grad_clip / weight_decay (Omniglot) and a "
                             "fixed x0.5 step decay")
        self.ways, self.step, self.lr = d.ways, 0, t.outer_lr
        self.dec_lr = t.lr_step_every if t.schedule == "step" else 0  # 0: constant
        self.args = SimpleNamespace(dataset="omniglot", metric_network="gnn_iclr_nl", cuda=False,
                                    train_N_way=d.ways, test_N_way=e.ways, unlabeled_extra=0,
                                    active_random=0, seed=AUTHORS_SEED)
        with torch.random.fork_rng(), contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(AUTHORS_SEED)
            self.enc_nn, self.metric_nn = self.models.create_models(args=self.args)  # prints
        self.softmax_module = self.models.SoftmaxModule()
        self.opts = [torch.optim.Adam(m.parameters(), lr=self.lr, weight_decay=0)
                     for m in (self.enc_nn, self.metric_nn)]
        self.enc_nn.train()
        self.metric_nn.train()

    def graphs(self, batch) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:  # type: ignore[no-untyped-def]
        """Our TaskBatch as their generator's `batch_x, label_x, batches_xi, labels_yi`: one graph
        per query (task-major), the query's one-hot label, one [G, ...] tensor per support slot."""
        b, m = batch.query_x.shape[:2]
        n = self.ways
        batch_x = 1 - 2 * batch.query_x.reshape(b * m, *batch.query_x.shape[2:])
        label_x = F.one_hot(batch.query_y.reshape(-1), n).float()
        sx = (1 - 2 * batch.support_x).repeat_interleave(m, dim=0)  # [G, N*K, 1, 28, 28]
        sy = F.one_hot(batch.support_y, n).float().repeat_interleave(m, dim=0)  # [G, N*K, N]
        batches_xi = [sx[:, i].contiguous() for i in range(sx.shape[1])]
        labels_yi = [sy[:, i].contiguous() for i in range(sy.shape[1])]
        return batch_x.contiguous(), label_x, batches_xi, labels_yi

    def logits(self, batch_x: Tensor, batches_xi: list[Tensor], labels_yi: list[Tensor]) -> Tensor:
        """Their forward (main.py train_batch / test.py): embeddings, MetricNN, log-softmax."""
        z = self.enc_nn(batch_x)[-1]
        zi_s = [self.enc_nn(batch_xi)[-1] for batch_xi in batches_xi]
        _, out_logits = self.metric_nn(inputs=[z, zi_s, labels_yi, None, None])
        return self.softmax_module.forward(out_logits)

    def train_step(self, batch) -> float:  # type: ignore[no-untyped-def]
        batch_x, label_x, batches_xi, labels_yi = self.graphs(batch)
        for opt in self.opts:
            opt.zero_grad()
        logsoft_prob = self.logits(batch_x, batches_xi, labels_yi)
        loss = F.nll_loss(logsoft_prob, label_x.argmax(1))  # their argmax of the one-hot label
        loss.backward()
        for opt in self.opts:
            opt.step()
        if self.dec_lr:  # their adjust_learning_rate(iter=batch_idx), after the step
            new_lr = self.lr * (0.5 ** int(self.step / self.dec_lr))
            for opt in self.opts:
                for group in opt.param_groups:
                    group["lr"] = new_lr
        self.step += 1
        return loss.item()  # as their main.py

    def accuracies(self, batch) -> Tensor:  # type: ignore[no-untyped-def]
        """test.py's test_one_shot on our episodes: eval mode, argmax of the log-softmax; the
        share of a task's N*Q graphs that are right."""
        batch_x, label_x, batches_xi, labels_yi = self.graphs(batch)
        self.enc_nn.eval()
        self.metric_nn.eval()
        try:
            with torch.no_grad():
                pred = self.logits(batch_x, batches_xi, labels_yi).argmax(1)
        finally:
            self.enc_nn.train()
            self.metric_nn.train()
        return (pred == label_x.argmax(1)).float().view(len(batch), -1).mean(1)
