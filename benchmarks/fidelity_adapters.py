"""The peers' side of `fidelity_vs_peers.py`: thin adapters from a metazoo `TaskBatch` to the
peer libraries' own training and test calls (learn2learn 0.2.0, easyfsl 1.5.0), nothing else.

Each side is an object with `train_step(batch) -> loss` (zero the gradients, the meta-loss of
one meta-batch, backward, one optimiser step) and `accuracies(batch) -> [B]` (per-episode query
accuracy after the side's own test-time adaptation). The peers' code stays in the peers' venv
(`../shared/bench/peers/install_peers.sh`); here it is only called.

The peer network is a torch.nn Conv-4 laid out exactly as metazoo's (conv 3x3 64 -> batch norm
-> ReLU -> max-pool 2, four times; + Linear(64, N) for the gradient family), with torch's
`BatchNorm2d(track_running_stats=False)` (batch statistics, as metazoo's), and metazoo's initial
weights copied in (same parameter order). learn2learn's own `vision.models.OmniglotCNN` is NOT
that network (stride-2 convolutions instead of max-pooling, running-statistics batch norm), so
it is not used: its weights could not be shared.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT.parent / "shared" / "bench" / "peers"  # peers_compat: torchvision import shim
GRADIENT_FAMILY = {"maml": "MAML", "fomaml": "MAML", "meta_sgd": "MetaSGD", "anil": "MAML"}
METRIC_FAMILY = {"protonet": "PrototypicalNetworks", "matching": "MatchingNetworks",
                 "relation": "RelationNetworks"}


def _peers_compat():  # type: ignore[no-untyped-def]
    sys.path.insert(0, os.environ.get("METAZOO_PEERS", str(PEERS)))
    import peers_compat

    return peers_compat


def authors_code(repo: str, marker: str, given: str | Path | None, commit: str) -> Path:
    """The folder of the authors' checkout `repo` (e.g. "few-shot-gnn") holding `marker` (a file
    of theirs): `given` (`--authors-code`: the checkout or the folder holding it), else
    `$METAZOO_AUTHORS_CODE/<repo>`, else `/work/peers-code/<repo>`. Exits with what to export."""
    base = Path(given or os.environ.get("METAZOO_AUTHORS_CODE", "/work/peers-code"))
    base = base.expanduser().resolve()
    for code in (base, base / repo):
        if (code / marker).is_file():
            return code
    raise SystemExit(f"no {marker} under {base}: export the authors' {repo} at commit "
                     f"{commit[:7]} there (git archive), or pass --authors-code DIR")


def peer_conv4(head_ways: int | None, pools: int = 4, flatten: bool = True) -> nn.Sequential:
    """metazoo's Conv-4 (and head) in plain torch.nn, batch statistics only; max-pool in the
    first `pools` blocks (Relation Net's embedding: 2, feature maps kept)."""
    layers: list[nn.Module] = []
    for i, c in enumerate((1, 64, 64, 64)):
        layers += [nn.Conv2d(c, 64, 3, padding=1), nn.BatchNorm2d(64, track_running_stats=False),
                   nn.ReLU()] + ([nn.MaxPool2d(2)] if i < pools else [])
    if flatten:
        layers.append(nn.Flatten())
    if head_ways is not None:
        layers.append(nn.Linear(64, head_ways))
    return nn.Sequential(*layers)


def network_params(ours: nn.Module) -> list[Tensor]:
    """metazoo's backbone and head parameters, in order (not Meta-SGD's rates, not extras)."""
    return [p for n, p in ours.named_parameters() if n.split(".")[0] in ("backbone", "head")]


def copy_weights(source: list[Tensor], target: nn.Module) -> None:
    """Copy `source` (metazoo's parameters, in order) into `target`'s parameters, in order;
    `source` may be longer (a head the peer builds itself): its leading part is copied."""
    params = list(target.parameters())
    source = source[:len(params)]
    if [tuple(p.shape) for p in params] != [tuple(s.shape) for s in source]:
        raise ValueError("the peer network's parameters do not line up with metazoo's")
    with torch.no_grad():
        for p, s in zip(params, source, strict=True):
            p.copy_(s.detach())


def episodes(batch) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:  # type: ignore[no-untyped-def]
    """The adapter proper: a `TaskBatch` as the per-episode NCHW tensors the peers take."""
    return [(batch.support_x[i].contiguous(), batch.support_y[i], batch.query_x[i].contiguous(),
             batch.query_y[i]) for i in range(len(batch))]


class L2LGradient:
    """learn2learn's MAML / MetaSGD wrapper (ANIL: MAML over the head only, as its ANIL example)."""

    def __init__(self, method: str, ours: nn.Module, cfg) -> None:  # type: ignore[no-untyped-def]
        l2l = _peers_compat().import_learn2learn()
        a = cfg.algorithm.config
        net = peer_conv4(cfg.data.ways)
        copy_weights(network_params(ours), net)
        fo = bool(getattr(a, "first_order", False)) or method == "fomaml"
        wrap = l2l.algorithms.MetaSGD if method == "meta_sgd" else l2l.algorithms.MAML
        if method == "anil":
            self.features: nn.Module | None = net[:-1]
            self.learner = wrap(net[-1], lr=a.inner_lr, first_order=fo)
        else:
            self.features = None
            self.learner = wrap(net, lr=a.inner_lr, first_order=fo)
        self.steps, self.eval_steps = a.inner_steps, a.eval_inner_steps or a.inner_steps
        params = list(self.learner.parameters())
        if self.features is not None:
            params += list(self.features.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.train.outer_lr)

    def _adapted(self, sx: Tensor, sy: Tensor, steps: int) -> nn.Module:
        clone = self.learner.clone()
        for _ in range(steps):
            clone.adapt(F.cross_entropy(clone(sx), sy))
        return clone

    def _feat(self, x: Tensor) -> Tensor:
        return x if self.features is None else self.features(x)

    def train_step(self, batch) -> float:  # type: ignore[no-untyped-def]
        self.opt.zero_grad(set_to_none=True)
        eps, total = episodes(batch), 0.0
        for sx, sy, qx, qy in eps:
            clone = self._adapted(self._feat(sx), sy, self.steps)
            loss = F.cross_entropy(clone(self._feat(qx)), qy) / len(eps)
            loss.backward()
            total += float(loss)
        self.opt.step()
        return total

    def accuracies(self, batch) -> Tensor:  # type: ignore[no-untyped-def]
        out = []
        for sx, sy, qx, qy in episodes(batch):
            clone = self._adapted(self._feat(sx), sy, self.eval_steps)
            with torch.no_grad():
                out.append((clone(self._feat(qx)).argmax(-1) == qy).float().mean())
        return torch.stack(out)


def peer_relation_module(ours: nn.Module) -> nn.Sequential:
    """metazoo's Relation Net module (two [conv 3x3, batch norm, ReLU, max-pool 2] blocks, FC 8,
    ReLU, FC 1, sigmoid) in torch.nn with metazoo's initial weights: easyfsl takes it as its
    `relation_module` (its default, with adaptive pooling, is not the paper's 28x28 network)."""
    rel = ours.relation
    blocks: list[nn.Module] = []
    for conv, pool in zip(rel.convs, rel.pools, strict=True):
        c = conv[0].out_channels
        blocks += [nn.Conv2d(conv[0].in_channels, c, 3, padding=1),
                   nn.BatchNorm2d(c, track_running_stats=False), nn.ReLU()]
        blocks += [nn.MaxPool2d(2)] if pool else []
    fc1 = nn.Linear(rel.fc1.in_features, rel.fc1.out_features)
    module = nn.Sequential(*blocks, nn.Flatten(), fc1, nn.ReLU(),
                           nn.Linear(rel.fc2.in_features, 1), nn.Sigmoid())
    copy_weights([p for n, p in ours.named_parameters() if n.startswith("relation.")], module)
    return module


class NoContext(nn.Module):
    """easyfsl's Matching support encoder, switched off: a zero bidirectional-LSTM output, so
    g(x_i, S) = g'(x_i) (easyfsl always applies full context embeddings)."""

    def forward(self, features: Tensor) -> tuple[Tensor]:
        return (features.new_zeros(*features.shape[:2], 2 * features.shape[-1]),)


class NoQueryContext(nn.Module):
    """easyfsl's Matching query cell, switched off: h = 0 each step, so f(x, S) = f'(x)."""

    def forward(self, _: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(state[0]), state[1]


class EasyFSLMetric:
    """easyfsl's few-shot classifiers: `process_support_set(xs, ys)` then `forward(xq)`.
    Relation Net: our embedding (pools in the first two blocks, maps kept) and our relation
    module with our weights, the paper's MSE to the one-hot match (Eq. 2) and gradient clipping
    as the preset; easyfsl averages a class's support maps (ours sums them: equal at 1 shot)."""

    def __init__(self, method: str, ours: nn.Module, cfg) -> None:  # type: ignore[no-untyped-def]
        _peers_compat().import_torchvision()
        import easyfsl.methods as methods

        self.method, self.clip = method, cfg.train.grad_clip
        relation = method == "relation"
        backbone = peer_conv4(None, pools=(cfg.model.pools or 4) if relation else 4,
                              flatten=not relation)
        theirs = getattr(methods, METRIC_FAMILY[method])
        copy_weights(network_params(ours), backbone)  # Matching: its own extra modules
        if method == "protonet":
            self.model = theirs(backbone)
        elif relation:
            self.model = theirs(backbone, feature_dimension=64,
                                relation_module=peer_relation_module(ours))
        elif getattr(cfg.algorithm.config, "fce", False):
            self.model = theirs(backbone, feature_dimension=64)
        else:  # Matching without FCE (the paper's Omniglot setting): easyfsl's encoders off
            self.model = theirs(backbone, feature_dimension=64, support_encoder=NoContext(),
                                query_encoder=NoQueryContext())
        t = cfg.train
        self.opt = torch.optim.Adam(self.model.parameters(), lr=t.outer_lr)
        gamma = t.lr_gamma if t.schedule == "step" else 1.0
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, max(t.lr_step_every, 1), gamma)

    def train_step(self, batch) -> float:  # type: ignore[no-untyped-def]
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        eps, total = episodes(batch), 0.0
        for sx, sy, qx, qy in eps:
            self.model.process_support_set(sx, sy)
            out = self.model(qx)
            if self.method == "relation":  # scores in (0, 1) regressed to the match (Eq. 2)
                loss = F.mse_loss(out, F.one_hot(qy, out.shape[-1]).to(out.dtype)) / len(eps)
            else:
                loss = F.cross_entropy(out, qy) / len(eps)
            loss.backward()
            total += float(loss)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        return total

    def accuracies(self, batch) -> Tensor:  # type: ignore[no-untyped-def]
        out = []
        with torch.no_grad():
            for sx, sy, qx, qy in episodes(batch):
                self.model.process_support_set(sx, sy)
                out.append((self.model(qx).argmax(-1) == qy).float().mean())
        return torch.stack(out)


def build_peer(method: str, ours: nn.Module, cfg,  # type: ignore[no-untyped-def]
               authors_code: str | None = None):
    if method in GRADIENT_FAMILY:
        return L2LGradient(method, ours, cfg)
    if method in METRIC_FAMILY:
        return EasyFSLMetric(method, ours, cfg)
    if method == "reptile":
        from fidelity_reptile import ReptileExample

        return ReptileExample(ours, cfg)
    if method == "imaml":  # no library has it: the authors' reference code
        from fidelity_imaml_authors import AuthorsIMAML

        return AuthorsIMAML(ours, cfg, authors_code)
    if method == "gnn":  # no library has it: the authors' reference code
        from fidelity_gnn_authors import AuthorsGNN

        return AuthorsGNN(ours, cfg, authors_code)
    raise SystemExit(f"no peer adapter for '{method}' (have: "
                     f"{', '.join([*GRADIENT_FAMILY, *METRIC_FAMILY, 'reptile', 'imaml', 'gnn'])})")
