#!/usr/bin/env python3
"""ProtoNet training episodes: metazoo against easyfsl 1.5.0, compute only and end to end.

One training episode = zero the gradients, the query cross-entropy of one N-way K-shot episode,
backward, one Adam step (lr 1e-3), conv4 (4 x [conv3x3 64, batch norm, ReLU, maxpool 2]).
Configurations: 60w5s5q (the paper's Omniglot training episodes) and 5w1s15q.

Modes:
  compute      fixed random Omniglot-shaped tensors (1x28x28), made before timing, and the same
               initial weights for both (metazoo's conv4 is loaded from the torch.nn conv4).
               easyfsl: `PrototypicalNetworks(conv4)` with torch.nn BatchNorm2d in train mode,
               `process_support_set(xs, ys)` then `forward(xq)`: TWO backbone passes (batch-norm
               statistics per set) and logits -cdist (Euclidean). metazoo:
               `algorithms.build("protonet", models.build("conv4"), ways=N).meta_loss(batch)`:
               ONE pass over [support; query] and logits -squared distance (Snell et al.'s code).
               The two losses differ by design, so each implementation's `loss_abs_diff` is
               against a reference of ITS OWN semantics, built from the OTHER side's pieces on the
               same data and weights (float64): easyfsl's PrototypicalNetworks wrapping metazoo's
               conv4 for easyfsl; a plain torch.nn conv4 with one pass and squared distances for
               metazoo.
  end_to_end   the real Omniglot archives ($METAZOO_DATA, else ../shared/data/omniglot; skipped
               with a message when absent), the Vinyals training split (1100 characters x 4
               rotations = 4400 classes, the same characters for both), time per episode
               including the data. easyfsl: the archives are extracted once (untimed) to a temp
               folder of PNGs;
               a minimal torch Dataset (`PngOmniglot` below, what an easyfsl user writes without
               torchvision) opens each PNG with PIL per access, converts to L, resizes to 28x28
               (LANCZOS), rotates by the class's multiple of 90 degrees, inverts and scales to
               [0, 1]; easyfsl's `TaskSampler` + `episodic_collate_fn` in a DataLoader
               (`--workers`, default 0) feed `PrototypicalNetworks`. metazoo:
               `data.make_task_source("omniglot", "train", ...)` (decoded once, cached), then
               `.batch(i, 1)` -> `meta_loss` -> backward -> Adam step. Setup (extraction, indexing,
               cache load) is reported as `setup_s`, not in `median_s`.

Allocator: by default both run with glibc's malloc as shipped; `--tune-allocator` runs both with
`metazoo.tune_allocator()`, which `metazoo train` applies (see metazoo/allocator.py). The pair
shares one process, so it cannot mix the two; compare across two runs for the as-shipped view.

Timing: one child process per (config, mode) builds both implementations and runs them
interleaved (episode i: easyfsl then metazoo for even i, the reverse for odd i), 2 torch threads,
warm-up, then the median of >= 20 episodes each, so the machine's other load hits both alike.
Peak RSS and the loss check: one more child per (impl, config, mode) that sets up, checks and
runs 3 episodes (peak RSS = its VmHWM; DataLoader workers, if any, are not counted).
Run with the peers' venv (../shared/bench/peers/README.md); metazoo is imported from ../src:
    ~/.cache/metazoo-peers-venv/bin/python benchmarks/protonet_vs_easyfsl.py [--quick]
Output (stdout): one JSON object per line (impl, config, mode, median_s, peak_rss_mib, ...), then
one summary object with the ratios easyfsl time / metazoo time. Progress goes to stderr.
Absolute times depend on the machine and on its other load: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
PEERS = ROOT.parent / "shared" / "bench" / "peers"  # peers_compat: torchvision import shim

THREADS, LR, POOL = 2, 1e-3, 3
CONFIGS = {"60w5s5q": (60, 5, 5), "5w1s15q": (5, 1, 15)}
MODES = ("compute", "end_to_end")
IMPLS = ("easyfsl", "metazoo")
TARGETS = {"compute": 1.2, "end_to_end": 2.0}  # issue 2: ours at least this much faster
SEMANTICS = {"easyfsl": "two backbone passes (BN statistics per set), logits -cdist",
             "metazoo": "one backbone pass over [support; query], logits -squared distance"}
Batch = tuple[Tensor, Tensor, Tensor, Tensor]
Step = Callable[[int], None]  # one training episode; the argument is the episode index


# ----------------------------------------------------------------------------- common pieces

def torch_conv4() -> nn.Sequential:
    """The conv4 an easyfsl user writes: torch.nn layers, BatchNorm2d defaults (train mode)."""
    layers: list[nn.Module] = []
    for c_in in (1, 64, 64, 64):
        layers += [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                   nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


def metazoo_conv4_like(reference: nn.Sequential) -> nn.Module:
    """metazoo's conv4 holding the weights of `reference` (a `torch_conv4()`)."""
    import metazoo.models

    model = metazoo.models.build("conv4", input_shape=(1, 28, 28), hidden=64)
    state = {}
    for block in range(4):
        conv, bn = reference[4 * block], reference[4 * block + 1]
        state |= {f"features.{block}.0.weight": conv.weight, f"features.{block}.0.bias": conv.bias,
                  f"features.{block}.1.weight": bn.weight, f"features.{block}.1.bias": bn.bias}
    model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return model


def random_episode(ways: int, shots: int, queries: int, seed: int) -> Batch:
    """Fixed random Omniglot-shaped support/query tensors, class-major labels."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(ways * shots, 1, 28, 28, generator=g)
    xq = torch.rand(ways * queries, 1, 28, 28, generator=g)
    ys = torch.arange(ways).repeat_interleave(shots)
    yq = torch.arange(ways).repeat_interleave(queries)
    return xs, ys, xq, yq


def import_easyfsl() -> tuple[type, type]:
    """easyfsl's PrototypicalNetworks and TaskSampler (torchvision imported via the peers shim)."""
    sys.path.insert(0, str(PEERS))
    import peers_compat

    protonet_cls = peers_compat.import_easyfsl_protonet()
    from easyfsl.samplers import TaskSampler

    return protonet_cls, TaskSampler


def easyfsl_loss(model: nn.Module, batch: Batch) -> Tensor:
    xs, ys, xq, yq = batch
    model.process_support_set(xs, ys)
    return F.cross_entropy(model(xq), yq)


def metazoo_protonet(backbone: nn.Module, ways: int) -> nn.Module:
    import metazoo.algorithms

    return metazoo.algorithms.build("protonet", backbone, ways=ways)


def metazoo_loss(algo: nn.Module, batch: Batch, ways: int, shots: int, queries: int) -> Tensor:
    from metazoo import TaskBatch

    xs, ys, xq, yq = batch
    task = TaskBatch(xs[None], ys[None], xq[None], yq[None], ways, shots, queries)
    return algo.meta_loss(task)[0]


def joint_sqdist_reference(backbone: nn.Module, batch: Batch, ways: int) -> Tensor:
    """metazoo's semantics in plain torch: one pass over [support; query], -squared distance."""
    xs, ys, xq, yq = batch
    z = backbone(torch.cat([xs, xq]))
    protos = torch.stack([z[: len(xs)][ys == c].mean(0) for c in range(ways)])
    d2 = ((z[len(xs):, None, :] - protos[None]) ** 2).sum(-1)
    return F.cross_entropy(-d2, yq)


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- compute mode

def prepare_compute(impl: str, ways: int, shots: int, queries: int) -> tuple[Step, dict]:
    """One implementation's training step on fixed random episodes, and its loss check."""
    torch.manual_seed(0)
    base = torch_conv4()
    pool = [random_episode(ways, shots, queries, seed=100 + k) for k in range(POOL)]
    protonet_cls = import_easyfsl()[0] if impl == "easyfsl" else None

    # correctness first, float64, on pool[0]: each impl against its own semantics' reference
    batch64 = tuple(t.double() if t.is_floating_point() else t for t in pool[0])
    ref64 = copy.deepcopy(base).double()
    if impl == "easyfsl":
        loss = easyfsl_loss(protonet_cls(copy.deepcopy(ref64)), batch64)
        other = easyfsl_loss(protonet_cls(metazoo_conv4_like(ref64).double()), batch64)
        check = "easyfsl(torch conv4) vs easyfsl.PrototypicalNetworks(metazoo conv4)"
    else:
        loss = metazoo_loss(metazoo_protonet(metazoo_conv4_like(ref64).double(), ways), batch64,
                            ways, shots, queries)
        other = joint_sqdist_reference(ref64, batch64, ways)
        check = "metazoo vs plain torch.nn conv4, one pass, -squared distance"
    diff = abs(loss.item() - other.item())

    if impl == "easyfsl":
        model = protonet_cls(base).train()

        def loss_fn(b: Batch) -> Tensor:
            return easyfsl_loss(model, b)
    else:
        model = metazoo_protonet(metazoo_conv4_like(base), ways).train()

        def loss_fn(b: Batch) -> Tensor:
            return metazoo_loss(model, b, ways, shots, queries)

    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(pool[i % POOL]).backward()
        opt.step()

    return step, {"loss_abs_diff": diff, "loss_check": check, "loss_f64": loss.item(),
                  "semantics": SEMANTICS[impl]}


# ----------------------------------------------------------------------------- end to end

def data_root() -> Path | None:
    for cand in (os.environ.get("METAZOO_DATA"), ROOT.parent / "shared" / "data" / "omniglot"):
        if cand is None:
            continue
        for folder in (Path(cand), Path(cand) / "omniglot"):
            if all((folder / z).is_file() for z in ("images_background.zip",
                                                     "images_evaluation.zip")):
                return folder
    return None


def extract_pngs(root: Path, dest: Path) -> Path:
    """Both archives extracted under `dest` once (a marker file records completion)."""
    marker = dest / ".complete"
    if not marker.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("images_background.zip", "images_evaluation.zip"):
            with zipfile.ZipFile(root / name) as zf:
                zf.extractall(dest)  # the archives are the trusted local copies
        marker.write_text("ok\n")
    return dest


class PngOmniglot(torch.utils.data.Dataset):
    """The minimal Omniglot dataset an easyfsl user writes without torchvision.

    Items are (PNG path, quarter turns); `__getitem__` decodes the PNG with PIL on every access,
    converts it to L, resizes it to 28x28 (LANCZOS), rotates it, inverts it (ink high) and returns
    a `[1, 28, 28]` float tensor in [0, 1] with its class label (an int), as easyfsl expects.
    """

    def __init__(self, folder: Path, characters: list[str]) -> None:
        self.items: list[tuple[str, int]] = []
        self.labels: list[int] = []
        where = {f"{p.parent.name}/{p.name}": p for p in folder.glob("*/*/*") if p.is_dir()}
        pngs = {c: sorted(str(f) for f in where[c].glob("*.png")) for c in characters}
        for turns in range(4):  # rotations as new classes (Santoro et al.), as metazoo does
            for idx, char in enumerate(characters):
                for path in pngs[char]:
                    self.items.append((path, turns))
                    self.labels.append(turns * len(characters) + idx)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        import numpy as np
        from PIL import Image

        path, turns = self.items[i]
        with Image.open(path) as img:
            gray = img.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
        if turns:
            gray = gray.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                   Image.Transpose.ROTATE_270)[turns])
        arr = 255 - np.asarray(gray, dtype=np.uint8)
        return torch.from_numpy(arr).to(torch.float32).div_(255.0)[None], self.labels[i]

    def get_labels(self) -> list[int]:
        return self.labels


def make_task_sampler(cls: type, *args: object, **kwargs: object) -> object:
    """easyfsl's `TaskSampler(...)` on torch 2.13.

    easyfsl 1.5.0 calls `Sampler.__init__(data_source=None)`, an argument torch 2.13 no longer
    takes (TypeError). For the duration of the constructor only, `Sampler.__init__` accepts and
    ignores it; easyfsl's own constructor and sampling code run unchanged. Not timed.
    """
    sampler_init = torch.utils.data.Sampler.__init__

    def accepting(self: object, data_source: object = None) -> None:
        sampler_init(self)

    torch.utils.data.Sampler.__init__ = accepting  # type: ignore[method-assign]
    try:
        return cls(*args, **kwargs)
    finally:
        torch.utils.data.Sampler.__init__ = sampler_init  # type: ignore[method-assign]


def train_characters(folder: Path) -> list[str]:
    """The Vinyals training characters ("Alphabet/characterNN"), the same ones metazoo uses."""
    from metazoo.data.omniglot import vinyals_split

    names = sorted(f"{p.parent.name}/{p.name}" for p in folder.glob("*/*/*") if p.is_dir())
    return vinyals_split(names)["train"]


def prepare_end_to_end(impl: str, ways: int, shots: int, queries: int, n_tasks: int,
                       workers: int) -> tuple[Step | None, dict]:
    """One implementation's training step that also fetches its episode from Omniglot."""
    root = data_root()
    if root is None:
        return None, {"skipped": "Omniglot archives not found ($METAZOO_DATA or "
                                 "../shared/data/omniglot)"}
    torch.manual_seed(0)
    base = torch_conv4()
    t0 = time.perf_counter()
    extra: dict = {}
    if impl == "easyfsl":
        protonet_cls, task_sampler_cls = import_easyfsl()
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "metazoo-bench-omniglot-png"
        folder = extract_pngs(root, tmp)
        dataset = PngOmniglot(folder, train_characters(folder))
        random.seed(0)  # TaskSampler draws with Python's `random`
        sampler = make_task_sampler(task_sampler_cls, dataset, n_way=ways, n_shot=shots,
                                    n_query=queries, n_tasks=n_tasks)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                             collate_fn=sampler.episodic_collate_fn)
        model = protonet_cls(base).train()
        episodes = iter(loader)

        def loss_at(i: int) -> Tensor:
            xs, ys, xq, yq, _ = next(episodes)
            return easyfsl_loss(model, (xs, ys, xq, yq))

        extra = {"classes": len(set(dataset.labels)), "images": len(dataset), "workers": workers,
                 "pipeline": "PngOmniglot (PIL decode+resize per access) + TaskSampler + "
                             "DataLoader"}
    else:
        import metazoo.tasks

        source = metazoo.tasks.make_task_source("omniglot", "train", ways=ways, shots=shots,
                                                queries=queries, seed=0, root=root)
        model = metazoo_protonet(metazoo_conv4_like(base), ways).train()

        def loss_at(i: int) -> Tensor:
            return model.meta_loss(source.batch(i, 1))[0]

        extra = {"classes": source.dataset.num_classes, "images": len(source.dataset.labels),
                 "pipeline": "make_task_source (cached uint8 split) + EpisodeSampler.batch"}
    setup_s = time.perf_counter() - t0
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss_at(i).backward()
        opt.step()

    return step, {"setup_s": round(setup_s, 2), "semantics": SEMANTICS[impl], **extra}


# ----------------------------------------------------------------------------- driver

def prepare(impl: str, config: str, mode: str, n_tasks: int, workers: int
            ) -> tuple[Step | None, dict]:
    ways, shots, queries = CONFIGS[config]
    if mode == "compute":
        return prepare_compute(impl, ways, shots, queries)
    return prepare_end_to_end(impl, ways, shots, queries, n_tasks, workers)


def run_memory(spec: str, workers: int) -> dict:
    """Child process of one implementation: setup, checks, 3 episodes, then its peak RSS."""
    impl, config, mode = spec.split("/")
    torch.set_num_threads(THREADS)
    step, info = prepare(impl, config, mode, 3, workers)
    if step is not None:
        for i in range(3):
            step(i)
    return {"impl": impl, "config": config, "mode": mode,
            "peak_rss_mib": round(peak_rss_mib(), 1), **info}


def run_pair(spec: str, warmup: int, iters: int, workers: int) -> dict:
    """Child process timing both implementations of one config/mode, interleaved.

    Episode i runs easyfsl then metazoo for even i and the reverse for odd i, so a change in the
    machine's other load hits both alike (this machine is shared). Each is timed per episode.
    """
    config, mode = spec.split("/")
    torch.set_num_threads(THREADS)
    steps = {}
    for impl in IMPLS:
        step, info = prepare(impl, config, mode, warmup + iters, workers)
        if step is None:
            return {"config": config, "mode": mode, **info}
        steps[impl] = step
    for i in range(warmup):
        for impl in IMPLS:
            steps[impl](i)
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for i in range(warmup, warmup + iters):
        for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
            t0 = time.perf_counter()
            steps[impl](i)
            times[impl].append(time.perf_counter() - t0)
    out: dict = {"config": config, "mode": mode}
    for impl, ts in times.items():
        s = sorted(ts)
        out[impl] = {"median_s": statistics.median(s), "min_s": s[0],
                     "iqr_s": s[3 * len(s) // 4] - s[len(s) // 4], "n": len(s), "warmup": warmup}
    return out


def child(args: argparse.Namespace, *flag: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *flag, "--warmup", str(args.warmup),
           "--iters", str(args.iters), "--workers", str(args.workers)]
    cmd += ["--tune-allocator"] if args.tune_allocator else []
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"child {' '.join(flag)} exited {p.returncode}"}
    return json.loads(lines[-1])


def summary(records: list[dict], elapsed: float) -> dict:
    by = {(r["impl"], r["config"], r["mode"]): r for r in records}
    ratios = {}
    for mode in MODES:
        for config in CONFIGS:
            a, b = by.get(("easyfsl", config, mode)), by.get(("metazoo", config, mode))
            if a and b and "median_s" in a and "median_s" in b:
                r = a["median_s"] / b["median_s"]
                ratios[f"{config}/{mode}"] = {"easyfsl_over_metazoo": round(r, 3),
                                              "target": TARGETS[mode],
                                              "meets_target": r >= TARGETS[mode]}
    return {"summary": "easyfsl median time / metazoo median time (> 1: metazoo faster)",
            "ratios": ratios, "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": THREADS,
            "elapsed_s": round(elapsed, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="warm-up 2, 20 timed episodes")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " +
                    ", ".join(CONFIGS))
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    ap.add_argument("--warmup", type=int, default=None, help="untimed episodes (default 5)")
    ap.add_argument("--iters", type=int, default=None, help="timed episodes (default 50, >= 20)")
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader workers of the easyfsl end-to-end pipeline (default 0)")
    ap.add_argument("--tune-allocator", action="store_true",
                    help="both implementations with metazoo.tune_allocator() (as `metazoo train`"
                    " runs); default: glibc's malloc as shipped, for both")
    ap.add_argument("--memory", help=argparse.SUPPRESS)  # child: impl/config/mode
    ap.add_argument("--pair", help=argparse.SUPPRESS)  # child: config/mode
    args = ap.parse_args()
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.iters = max(20, args.iters if args.iters is not None else (20 if args.quick else 50))
    if args.tune_allocator and (args.memory or args.pair):
        from metazoo.allocator import tune_allocator

        tune_allocator()
    if args.memory:
        print(json.dumps(run_memory(args.memory, args.workers)), flush=True)
        return 0
    if args.pair:
        print(json.dumps(run_pair(args.pair, args.warmup, args.iters, args.workers)), flush=True)
        return 0
    for name, chosen, known in (("config", args.configs, CONFIGS), ("mode", args.modes, MODES)):
        bad = [c for c in chosen.split(",") if c not in known]
        if bad:
            print(f"unknown {name} {bad[0]!r}; choose from {', '.join(known)}", file=sys.stderr)
            return 2
    if "end_to_end" in args.modes.split(",") and data_root() is None:
        log("end_to_end skipped: Omniglot archives not found (set METAZOO_DATA)")
    t0 = time.perf_counter()
    records = []
    for mode in args.modes.split(","):
        for config in args.configs.split(","):
            log(f"{config}/{mode}: both implementations, interleaved ...")
            timing = child(args, "--pair", f"{config}/{mode}")
            for impl in IMPLS:
                log(f"{impl}/{config}/{mode}: checks and peak RSS ...")
                rec = {"impl": impl, "config": config, "mode": mode}
                rec |= timing.get(impl, {k: v for k, v in timing.items() if k not in rec})
                rec |= child(args, "--memory", f"{impl}/{config}/{mode}")
                print(json.dumps(rec), flush=True)
                records.append(rec)
    print(json.dumps(summary(records, time.perf_counter() - t0)), flush=True)
    failed = any("error" in r for r in records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
