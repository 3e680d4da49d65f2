"""The peer side of `fidelity_vs_peers.py` for Reptile: learn2learn's Reptile example.

learn2learn has no Reptile class; the issue names the procedure of its example script
(`examples/vision/reptile_miniimagenet.py` in learnables/learn2learn), which uses plain torch:
per task a deep copy of the model trained by `torch.optim.Adam(betas=(0, 0.999))` whose state is
carried from task to task (saved after each training task, loaded by the next and by the
evaluation copies, which do not save it), `steps` mini-batches of `batch` rows drawn WITH
replacement from the support set (`torch.randint`); then the outer "gradient" phi - mean W_i is
handed to `torch.optim.SGD` at the meta step size. Evaluation: the same inner loop with the
evaluation steps and batch, then the held-out queries in one batch (batch statistics: the
transductive evaluation, as our preset's `bn_mode`).

Set-up as our preset (`reptile-omniglot-5w1s`): inner lr, steps and batch, evaluation steps and
batch, meta-batch, epsilon with the preset's linear anneal over `train.meta_steps` (the example's
own anneal line evaluates to a constant), on `peer_conv4` holding our initial weights. What
differs from ours by construction: ours draws inner mini-batches as the authors' code does
(shuffled passes without replacement), the example with replacement.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from fidelity_adapters import copy_weights, episodes, network_params, peer_conv4
from torch import Tensor, nn


class ReptileExample:
    """learn2learn's Reptile example procedure on our episodes (the class contract of
    `fidelity_adapters`: `train_step(batch) -> loss`, `accuracies(batch) -> [B]`)."""

    def __init__(self, ours: nn.Module, cfg) -> None:  # type: ignore[no-untyped-def]
        a, t = cfg.algorithm.config, cfg.train
        self.model = peer_conv4(cfg.data.ways)
        copy_weights(network_params(ours), self.model)
        self.lr, self.beta1 = a.inner_lr, a.adam_beta1
        self.steps, self.batch = a.inner_steps, a.inner_batch_size
        self.eval_steps = a.eval_inner_steps or a.inner_steps
        self.eval_batch = a.eval_inner_batch_size or a.inner_batch_size
        self.epsilon, self.total, self.step = t.outer_lr, t.meta_steps, 0
        self.linear = t.schedule == "linear"
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.epsilon)
        self.adam_state = self._adam(self.model).state_dict()
        self.rng = torch.Generator().manual_seed(cfg.seed)

    def _adam(self, net: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam(net.parameters(), lr=self.lr, betas=(self.beta1, 0.999))

    def _adapt(self, sx: Tensor, sy: Tensor, steps: int, batch: int
               ) -> tuple[nn.Module, torch.optim.Adam]:
        learner = copy.deepcopy(self.model)
        opt = self._adam(learner)
        opt.load_state_dict(self.adam_state)
        for _ in range(steps):
            idx = torch.randint(sx.shape[0], (batch,), generator=self.rng)
            opt.zero_grad()
            F.cross_entropy(learner(sx[idx]), sy[idx]).backward()
            opt.step()
        return learner, opt

    def train_step(self, batch) -> float:  # type: ignore[no-untyped-def]
        eps, total = episodes(batch), 0.0
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        for sx, sy, qx, qy in eps:
            learner, opt = self._adapt(sx, sy, self.steps, self.batch)
            self.adam_state = opt.state_dict()  # carried to the next task
            with torch.no_grad():
                total += float(F.cross_entropy(learner(qx), qy)) / len(eps)
            for p, w in zip(self.model.parameters(), learner.parameters(), strict=True):
                p.grad.sub_(w.detach())  # type: ignore[union-attr]
        for p in self.model.parameters():
            p.grad.div_(len(eps)).add_(p.detach())  # type: ignore[union-attr]
        frac = self.step / self.total if self.linear else 0.0
        for group in self.opt.param_groups:
            group["lr"] = self.epsilon * (1.0 - frac)
        self.opt.step()
        self.step += 1
        return total

    def accuracies(self, batch) -> Tensor:  # type: ignore[no-untyped-def]
        out = []
        for sx, sy, qx, qy in episodes(batch):
            learner, _ = self._adapt(sx, sy, self.eval_steps, self.eval_batch)
            with torch.no_grad():
                out.append((learner(qx).argmax(-1) == qy).float().mean())
        return torch.stack(out)
