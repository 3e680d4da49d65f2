"""`metazoo pretrain`: a backbone trained by plain classification over the train split's classes.

The training stage of Baseline and Baseline++ (Chen et al., ICLR 2019, Sec. 3.1-3.2), also the
pre-training of SimpleShot (Wang et al. 2019) and RFS (Tian et al., ECCV 2020): the run's backbone
(`model`) and a head over every class of the train split, linear or cosine with a scale
(`pretrain.head`), trained by cross-entropy on mini-batches of its images under their global
labels (`pretrain.*`; the `augment` section as in meta-training). Batch `s` is a pure function of
(seed, s): each epoch is a shuffled pass drawn from (seed, split, epoch), the last partial batch
dropped. The run folder then holds `config.json`, `backbone.safetensors` (the backbone's weights
and the mean feature of the train split: `metazoo.models.pretrained`, what `model.pretrained`
loads), `metrics.csv` and `results.json`: the head's accuracy over the whole train split after
training and, with `eval.val_episodes`, a few-shot accuracy on validation episodes by nearest
centroid on centred, L2-normalised features (SimpleShot). `train.device`, `time_limit_min`,
`log_every`, `progress` and `tensorboard` say where and how it runs; other `train.*` and
`algorithm` keys are not read. A stop (Ctrl-C, SIGTERM, the time limit) ends training after the
current step and saves the weights reached; a pre-training does not resume. Then, e.g.:
`metazoo train --preset simpleshot-omniglot-5w1s --set model.pretrained=RUN_DIR`.
"""

from __future__ import annotations

import math
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from metazoo import algorithms, models, output
from metazoo.algorithms.baseline import head_logits, init_head
from metazoo.allocator import tune_allocator
from metazoo.config import PretrainConfig, RunConfig
from metazoo.data import get_spec, load_split
from metazoo.data.base import ClassDataset
from metazoo.engine import lock
from metazoo.engine.evaluate import evaluate
from metazoo.engine.log import MetricsLog
from metazoo.engine.resume import normal
from metazoo.engine.run import (
    CHECKPOINT,
    CONFIG,
    RESULTS,
    image_size,
    resolve_device,
    resolved,
    task_source,
    write_json,
)
from metazoo.engine.stopping import Interrupted, deadline, signal_name, stop_after_step
from metazoo.errors import CheckpointError, ConfigError, TrainingError
from metazoo.models import pretrained
from metazoo.tasks.augment import augment, normalize
from metazoo.tasks.episodes import episode_seed

WEIGHTS = pretrained.FILE


class Classifier(nn.Module):
    """The backbone and a head over `classes` classes: linear (Baseline; bias starting at 0 as
    Chen et al.'s code) or cosine with a scale (Baseline++; None: 2 up to 200 classes, else 10)."""

    def __init__(self, backbone: nn.Module, classes: int, cfg: PretrainConfig, seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        g = torch.Generator().manual_seed(seed)
        features = int(backbone.feature_dim)  # type: ignore[arg-type]
        head = init_head(features, classes, cfg.head, cfg.class_norm, g, torch.get_default_dtype())
        if "bias" in head:
            head["bias"].zero_()
        self.head = nn.ParameterDict({k: nn.Parameter(v) for k, v in head.items()})
        scale = torch.tensor(cfg.scale or (2.0 if classes <= 200 else 10.0))
        if cfg.learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def logits(self, z: Tensor) -> Tensor:
        """Class scores `[M, classes]` of features `z` `[M, D]`."""
        return head_logits(dict(self.head.items()), z, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.backbone(x))


class Batches:
    """Mini-batch `s` of the train split: images (augmented per `cfg.augment`) and labels."""

    def __init__(self, ds: ClassDataset, cfg: RunConfig) -> None:
        self.ds, self.cfg, self.size = ds, cfg, cfg.pretrain.batch_size
        self.per_epoch = len(ds) // self.size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def generator(self, what: str, index: int) -> torch.Generator:
        seed = episode_seed(self.cfg.seed, f"{self.ds.name}/{what}", index)
        return torch.Generator().manual_seed(seed)

    def get(self, step: int) -> tuple[Tensor, Tensor]:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(len(self.ds), generator=self.generator("pretrain", epoch))
        rows = self._order[i * self.size:(i + 1) * self.size]
        x = augment(self.ds.as_float(rows), self.cfg.augment, self.generator("pretrain-aug", step))
        return x, self.ds.labels[rows]


def lr_factor(cfg: PretrainConfig, step: int, per_epoch: int) -> float:
    """`lr_gamma` to the number of `lr_milestones` (in epochs) that `step` has passed."""
    return cfg.lr_gamma ** sum(step >= m * per_epoch for m in cfg.lr_milestones)


@torch.no_grad()
def train_split_pass(net: Classifier, batches: Batches, device: torch.device
                     ) -> tuple[Tensor, float]:
    """Mean feature `[D]` and head accuracy over every image of the train split, without random
    augmentation (its normalisation kept), in batches of about `batch_size` in a shuffled order
    (batch norm sees batches like the training ones)."""
    ds, stats = batches.ds, batches.cfg.augment.statistics
    order = torch.randperm(len(ds), generator=batches.generator("pretrain-pass", 0))
    total, correct = None, 0
    net.eval()
    for rows in torch.tensor_split(order, max(1, len(ds) // batches.size)):
        x = ds.as_float(rows)
        z = net.backbone((x if stats is None else normalize(x, *stats)).to(device))
        correct += int((net.logits(z).argmax(-1).cpu() == ds.labels[rows]).sum())
        part = z.double().sum(0)
        total = part if total is None else total + part
    net.train()
    assert total is not None
    return (total / len(ds)).float().cpu(), correct / len(ds)


def pretrain(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Pre-train per `cfg` into `run_dir` (held for the run: `engine.lock`); returns the results.
    A start that fails leaves the folder as it was."""
    tune_allocator()
    run_dir = Path(run_dir)
    with lock.claim(run_dir, "pretrain") as claimed:
        try:
            return _pretrain(resolved(cfg), run_dir, claimed)
        except KeyboardInterrupt as e:
            if isinstance(e, Interrupted) and e.message:
                raise
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            where = (f"before the weights were saved: '{run_dir}' holds none; start again"
                     if claimed.started else f"before the run started; '{run_dir}' is as it was")
            raise Interrupted(signum, f"{signal_name(signum)} {where}") from None


def _pretrain(cfg: RunConfig, run_dir: Path, claimed: lock.Claim) -> dict[str, Any]:
    if (run_dir / WEIGHTS).exists() or (run_dir / CHECKPOINT).exists():
        raise CheckpointError(f"'{run_dir}' already holds a run; name a new folder with --out")
    d, p, t = cfg.data, cfg.pretrain, cfg.train
    if get_spec(d.name).kind != "images":
        raise ConfigError(f"metazoo pretrain classifies images; '{d.name}' is not an image "
                          "dataset")
    ds = load_split(d.name, "train", root=d.root, download=d.download,
                    image_size=image_size(cfg), seed=cfg.seed)
    batches = Batches(ds, cfg)
    if batches.per_epoch < 1:
        raise ConfigError(f"pretrain.batch_size={p.batch_size} is more than the {len(ds)} images "
                          f"of {ds.name}")
    total = p.steps or max(1, math.ceil(p.epochs * batches.per_epoch))
    device = resolve_device(t.device)
    torch.manual_seed(cfg.seed)
    net = Classifier(models.build_from_config(cfg.model, ds.image_shape), ds.num_classes, p,
                     cfg.seed).to(device)
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum,
                        weight_decay=p.weight_decay) if p.optimizer == "sgd" else
        torch.optim.Adam(net.parameters(), lr=p.lr, weight_decay=p.weight_decay))
    val_src = task_source(cfg, "val", training=False) if cfg.eval.val_episodes else None

    claimed.started = True  # from here on the run changes the folder
    for stale in (RESULTS, "metrics.csv"):  # of an earlier start that saved no weights
        (run_dir / stale).unlink(missing_ok=True)
    write_json(run_dir / CONFIG, normal(cfg.to_dict()))
    log = MetricsLog(run_dir, tensorboard=t.tensorboard)
    sums: dict[str, float] = defaultdict(float)
    count, done, stopped = 0, 0, ""
    start = window = time.perf_counter()
    out_of_time = deadline(t.time_limit_min, t.time_clock)
    bar = tqdm(range(total), disable=None if t.progress and output.progress_on() else True,
               desc="pretrain", unit="step",
               dynamic_ncols=True)
    try:
        with stop_after_step() as stop:
            for step in bar:
                x, y = batches.get(step)
                x, y = x.to(device), y.to(device)
                lr = p.lr * lr_factor(p, step, batches.per_epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                if not math.isfinite(float(loss.detach())):
                    raise TrainingError(f"pre-training diverged at step {step + 1} (the loss is "
                                        f"{float(loss.detach())}); nothing was saved: lower "
                                        "pretrain.lr and start again")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["loss"] += float(loss.detach())
                sums["acc"] += float((logits.detach().argmax(-1) == y).float().mean())
                count, done = count + 1, step + 1
                if out_of_time():
                    stopped = f"train.time_limit_min={t.time_limit_min} reached"
                elif stop.signum:
                    stopped = f"{signal_name(stop.signum)}"
                if done % t.log_every == 0 or done == total or stopped:
                    means = {k: v / count for k, v in sums.items()}
                    log.write(done, "train", lr=lr, seconds=time.perf_counter() - window, **means)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
                    sums.clear()
                    count, window = 0, time.perf_counter()
                if stopped:
                    break
        bar.close()
        mean, train_acc = train_split_pass(net, batches, device)
        meta = {"model": normal(cfg.to_dict())["model"], "input_shape": list(ds.image_shape),
                "dataset": d.name, "classes": ds.num_classes, "steps": done, "head": p.head,
                "train_acc": train_acc, "seed": cfg.seed}
        pretrained.save(run_dir / WEIGHTS, net.backbone.state_dict(), mean, meta)
        results: dict[str, Any] = {
            "train_acc": train_acc, "steps": done, "epochs": done / batches.per_epoch,
            "classes": ds.num_classes, "images": len(ds), "seconds": time.perf_counter() - start,
            "stopped": stopped or None, "dataset": d.name, "model": cfg.model.name,
            "head": p.head, "device": str(device)}
        output.result(f"train split accuracy {train_acc:.4f} ({len(ds)} images of "
                      f"{ds.num_classes} classes, after {done} steps); weights: "
                      f"{run_dir / WEIGHTS}")
        if val_src is not None:
            net.backbone.pretrained_mean = mean  # SimpleShot's CL2N centring
            probe = algorithms.build("simpleshot", net.backbone, ways=cfg.eval.ways).to(device)
            val = evaluate(probe, val_src, episodes=cfg.eval.val_episodes,
                           batch_size=cfg.eval.batch_size, split="val", device=device)
            log.write(done, "val", seconds=val.seconds, ci95=val.ci95, acc=val.mean)
            results["val"] = {**val.to_json(), "method": "simpleshot (CL2N nearest centroid)"}
            output.result(val.line())
        write_json(run_dir / RESULTS, results)
    finally:
        bar.close()
        log.close()
    if stopped and stop.signum:
        raise Interrupted(stop.signum, f"{stopped}: stopped after step {done}; the weights "
                          f"reached are saved in '{run_dir / WEIGHTS}'")
    return results
