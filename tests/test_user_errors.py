"""Issue 23's ordinary mistakes: each is one line on stderr and exit status 2, never a traceback,
and nothing in an existing run folder changes. Ends with a fuzz test over `--set`."""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from metazoo.cli import main
from metazoo.config import SECTIONS

QUICK = ["train.meta_steps=2", "data.ways=5", "eval.episodes=2", "eval.every=0",
         "train.progress=false", "train.tensorboard=false", "model.hidden=8"]


def _fails_in_one_line(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metazoo: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--out", str(folder), "--set", *QUICK]) == 0
    return folder


def test_bad_config_files(tmp_path, capsys):
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  meta_steps: 3\n  meta_steps: 4\n")
    _fails_in_one_line(capsys, ["train", "--config", str(dup), "--out", str(tmp_path / "a")],
                       "key 'meta_steps' appears twice (line 3)")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train:\n  # caf\xe9\n  meta_steps: 3\n".encode("latin-1"))
    _fails_in_one_line(capsys, ["train", "--config", str(latin), "--out", str(tmp_path / "b")],
                       "is not UTF-8 text")
    _fails_in_one_line(capsys, ["train", "--config", str(tmp_path), "--out", str(tmp_path / "c")],
                       "is a folder")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_out_naming_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("mine")
    _fails_in_one_line(capsys, ["train", "--out", str(target), "--set", *QUICK],
                       "is a file, not a folder")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("option, needle", [
    (["--episodes", "-3"], "eval.episodes must be >= 1"),
    (["--ways", "0"], "eval.ways must be >= 1"),
    (["--queries", "0"], "eval.queries must be >= 1"),
    (["--split", "bogus"], "has no split 'bogus'"),
    (["--episodes", "9" * 23], "eval.episodes must fit in 64 bits"),
    (["--set", "algorithm.distance=" + "9" * 300], "characters)"),
])
def test_eval_options_that_mean_nothing(run, capsys, option, needle):
    before = _snapshot(run)
    _fails_in_one_line(capsys, ["eval", str(run), *option], needle)
    assert _snapshot(run) == before


def test_garbled_metrics_csv_is_named_by_plot(tmp_path, run, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in run.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    (copy / "metrics.csv").write_text("step,split,loss,acc\n1,train,abc,0.5\n")
    _fails_in_one_line(capsys, ["plot", str(copy)], "metrics.csv' is damaged")
    (copy / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage")
    _fails_in_one_line(capsys, ["plot", str(copy)], "metrics.csv' is damaged")


@pytest.mark.parametrize("option, needle", [
    ("eval.ways=5000", "5000-way episodes need 5000 classes"),
    ("eval.split=bogus", "has no split 'bogus'"),
])
def test_an_impossible_test_split_is_refused_before_training(tmp_path, capsys, option, needle):
    _fails_in_one_line(capsys, ["train", "--out", str(tmp_path / "r"), "--set", *QUICK,
                                "train.meta_steps=100000", option], needle)
    assert not (tmp_path / "r").exists()


def test_folder_dataset_without_a_root(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METAZOO_DATA", raising=False)
    _fails_in_one_line(capsys, ["train", "--out", str(tmp_path / "f"), "--set", "data.name=folder",
                                *QUICK], "pass --set data.root=DIR")


def _images(root: Path, mode: str) -> Path:
    rng = np.random.default_rng(0)
    for c in range(12):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            shape = (20, 20) if mode == "L" else (20, 20, 3)
            pixels = rng.integers(0, 255, shape, dtype=np.uint8)
            if mode == "RGB":
                pixels[..., 0] = 255
            Image.fromarray(pixels, mode).save(root / f"c{c}" / f"{i}.png")
    return root


def test_evaluating_a_grey_run_on_colour_images(tmp_path, capsys):
    gray, rgb = _images(tmp_path / "gray", "L"), _images(tmp_path / "rgb", "RGB")
    run = tmp_path / "r"
    assert main(["train", "--out", str(run), "--set", "data.name=folder", f"data.root={gray}",
                 "data.ways=2", "eval.ways=2", "data.queries=2", "eval.queries=2",
                 *QUICK[:1], *QUICK[2:]]) == 0
    capsys.readouterr()
    _fails_in_one_line(capsys, ["eval", str(run), "--data-root", str(rgb)],
                       "trained on inputs of shape (1, 28, 28)", "gives (3, 28, 28)")


def test_weights_of_another_model_say_what_differs(run, tmp_path, capsys):
    from metazoo.engine import checkpoint

    tensors, meta = checkpoint.load(run / "checkpoint.safetensors")
    first = next(k for k in tensors if k.startswith("model."))
    tensors[first] = tensors[first][..., :1].contiguous()
    del tensors[next(k for k in reversed(list(tensors)) if k.startswith("model."))]
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_bytes((run / "config.json").read_bytes())
    checkpoint.save(copy / "checkpoint.safetensors", tensors, meta)
    _fails_in_one_line(capsys, ["eval", str(copy)], "do not fit the run's config: 1 missing (",
                       "1 of another shape (")


KEYS = [(section, f.name, f.type) for section, cls in SECTIONS.items()
        for f in cls.__dataclass_fields__.values()]
VALUES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", ".inf", "-.inf", "true", "false", "null", "[]", "[1, 2]", "{}",
                     "abc", "", "[1, [2]]", "1e999", "0", "-1", "0.0"]),
    st.text(alphabet=string.printable, max_size=12),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.sampled_from(KEYS), value=VALUES, unknown=st.booleans())
def test_fuzzed_set_never_tracebacks_nor_touches_a_run(run, capsys, choice, value, unknown):
    """Random values of every config field (and random unknown keys) given to `train --out` an
    existing run: each is read and checked like any `--set`, then refused in one line (a bad
    value, or the folder already holding a run); the run's files never change."""
    section, name, _ = choice
    key = f"{section}.{name}{'x' if unknown else ''}"
    before = _snapshot(run)
    status = main(["train", "--out", str(run), "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("metazoo: error: "), err
    assert _snapshot(run) == before
