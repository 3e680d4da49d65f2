"""Lake et al.'s one-shot classification challenge: 20 within-alphabet 20-way 1-shot runs.

What: the official challenge (`python/one-shot-classification/all_runs.zip` of the Omniglot
repository) is a folder of `runNN/` folders, each holding `training/class01.png..class20.png`
(one drawing of each of 20 characters of one alphabet), `test/item01.png..item20.png` (another
drawing of each, in shuffled order) and `class_labels.txt` whose lines read
`runNN/test/itemXX.png runNN/training/classYY.png`. A method sees the 20 training images, labels
each test image, and is scored by its error rate, averaged over the runs (Lake et al. 2015 report
humans at 4.5% error).

Why a separate format: these runs are harder than random N-way episodes (all classes come from one
alphabet) and they are the number the Omniglot paper reports. Images get the same preprocessing as
`omniglot.py` (`images.decode_gray`: inverted so ink is high, antialiased resize), so a model
trained on `omniglot` is evaluated on identical pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metazoo.data.images import decode_gray
from metazoo.errors import DataError

LABELS_FILE = "class_labels.txt"


@dataclass(frozen=True)
class OneShotRun:
    """One 20-way 1-shot run.

    Attributes:
        support_x: `[N, 1, H, W]` float32 in [0, 1], ink high; one image per class.
        support_y: `[N]` int64, `0..N-1` in the order of the training files.
        query_x: `[M, 1, H, W]` float32 test images, in the order of the test files.
        query_y: `[M]` int64 true class of each test image.
        name: the run's folder name, e.g. "run01".
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    name: str


def _images(paths: list[Path], image_size: int) -> Tensor:
    """Decode drawings into `[len(paths), 1, S, S]` float32 in [0, 1]."""
    arrays = [torch.from_numpy(decode_gray(p, image_size, invert=True)) for p in paths]
    return torch.stack(arrays).unsqueeze(1).to(torch.float32).div_(255.0)


def _pngs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"one-shot run folder {folder} is missing; expected training/ and test/ "
                        "folders of PNGs in every runNN/")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"no PNG images in {folder}")
    return files


def read_run(run_dir: Path, image_size: int = 28) -> OneShotRun:
    """Read one `runNN/` folder.

    Raises:
        DataError: a missing folder or label file, a malformed label line, or a corrupt image.
    """
    train_files, test_files = _pngs(run_dir / "training"), _pngs(run_dir / "test")
    class_of = {p.name: i for i, p in enumerate(train_files)}
    item_of = {p.name: i for i, p in enumerate(test_files)}
    labels_path = run_dir / LABELS_FILE
    if not labels_path.is_file():
        raise DataError(f"{labels_path} is missing; it must list 'runNN/test/itemXX.png "
                        "runNN/training/classYY.png' per line")
    query_y = [-1] * len(test_files)
    for lineno, line in enumerate(labels_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        item = Path(fields[0]).name if len(fields) == 2 else ""
        cls = Path(fields[1]).name if len(fields) == 2 else ""
        if item not in item_of or cls not in class_of:
            raise DataError(f"{labels_path}:{lineno}: cannot parse '{line.strip()}'; expected "
                            "'runNN/test/itemXX.png runNN/training/classYY.png' naming existing "
                            "files")
        query_y[item_of[item]] = class_of[cls]
    missing = [test_files[i].name for i, y in enumerate(query_y) if y < 0]
    if missing:
        raise DataError(f"{labels_path} gives no label for {', '.join(missing)}")
    return OneShotRun(_images(train_files, image_size), torch.arange(len(train_files)),
                      _images(test_files, image_size), torch.tensor(query_y, dtype=torch.long),
                      run_dir.name)


def read_runs(runs_dir: str | os.PathLike[str], image_size: int = 28) -> list[OneShotRun]:
    """Read every `run*/` folder of the challenge (also accepts the folder above `all_runs/`).

    Args:
        runs_dir: folder holding `run01/` ... `run20/`.
        image_size: side of the square images, pixels.

    Raises:
        DataError: the folder is missing, holds no runs, or a run is malformed.
    """
    folder = Path(runs_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"one-shot runs folder {folder} does not exist; unzip all_runs.zip of "
                        "the Omniglot repository and pass its folder")
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("run"))
    if not runs and (folder / "all_runs").is_dir():
        return read_runs(folder / "all_runs", image_size)
    if not runs:
        raise DataError(f"no runNN/ folders in {folder}")
    return [read_run(r, image_size) for r in runs]


Predict = Callable[[Tensor, Tensor, Tensor], Tensor]


def error_rates(predict: Predict, runs: list[OneShotRun]) -> dict[str, float]:
    """Error rate of `predict` on each run and their mean.

    Args:
        predict: `(support_x [N,1,H,W], support_y [N], query_x [M,1,H,W]) -> logits [M, N]` for
            one task.
        runs: from `read_runs`.

    Returns:
        `{run name: error rate in [0, 1], ..., "mean": mean over runs}`.
    """
    if not runs:
        raise DataError("no one-shot runs to evaluate")
    out: dict[str, float] = {}
    for run in runs:  # no torch.no_grad here: gradient-based predictors differentiate inside
        logits = predict(run.support_x, run.support_y, run.query_x)
        if logits.shape != (run.query_x.shape[0], run.support_x.shape[0]):
            raise DataError(f"{run.name}: predict returned {tuple(logits.shape)}, expected "
                            f"[{run.query_x.shape[0]}, {run.support_x.shape[0]}]")
        pred = logits.detach().argmax(dim=-1)
        out[run.name] = float((pred != run.query_y).float().mean())
    out["mean"] = sum(out.values()) / len(runs)
    return out
