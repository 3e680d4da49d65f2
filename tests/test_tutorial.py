"""docs/tutorial.md works as written: its practice folder, and its commands (shortened)."""

import re
import shlex
import sys
from pathlib import Path

import pytest

from metazoo import models
from metazoo.cli import main

TUTORIAL = Path(__file__).parents[1] / "docs" / "tutorial.md"
SHORT = ["train.meta_steps=2", "eval.every=0", "eval.episodes=4", "train.tensorboard=false"]


def commands(text: str) -> list[list[str]]:
    """The `$ metazoo ...` commands of the tutorial, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line.split("$ metazoo ", 1)[1])
            for line in joined.splitlines() if line.startswith("$ metazoo ")]


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path, monkeypatch, capsys):
    text = TUTORIAL.read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, re.S)
    monkeypatch.chdir(tmp_path)
    exec(snippets[0], {})  # the practice folder
    (tmp_path / "my_backbone.py").write_text(snippets[1])
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for args in commands(text):
            if args[0] == "train":
                args = [*args[:args.index("--out")], *SHORT, *args[args.index("--out"):]]
            assert main(args) == 0, args
    finally:  # the tutorial's backbone stays out of the registry other tests walk
        sys.modules.pop("my_backbone", None)
        models.BACKBONES._specs.pop("small_net", None)
    out = capsys.readouterr().out
    assert "60 class folders, 600 images" in out and "file\tclass\tprobability" in out
    assert (tmp_path / "runs" / "mine-small" / "results.json").exists()
