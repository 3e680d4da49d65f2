"""The layers import downwards only: data < tasks < engine, and the config dataclasses read no
files. Checked on the source (every import statement, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "metazoo"


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in `path` (`from a import b` counts as a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _files(package: str) -> list[Path]:
    path = SRC / package
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("data", ["metazoo.tasks", "metazoo.engine", "metazoo.algorithms", "metazoo.models",
              "metazoo.config", "metazoo.cli"]),
    ("tasks", ["metazoo.engine", "metazoo.algorithms", "metazoo.models", "metazoo.config",
               "metazoo.cli"]),
    ("config", ["yaml", "importlib", "metazoo.config_files", "metazoo.engine", "metazoo.cli"]),
    ("engine", ["metazoo.cli"]),
])
def test_layer_imports_nothing_from_above(package, forbidden):
    files = _files(package)
    assert files and all(f.exists() for f in files)
    for f in files:
        bad = sorted(m for m in _imports(f)
                     if any(m == x or m.startswith(x + ".") for x in forbidden))
        assert not bad, f"{f.relative_to(SRC)} imports {bad}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from metazoo.tasks import TaskBatch\n    import yaml\n")
    assert {"metazoo.tasks", "metazoo.tasks.TaskBatch", "yaml"} <= _imports(f)


def test_no_algorithm_file_imports_a_private_name_of_another():
    for path in _files("algorithms"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "metazoo.algorithms."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_no_private_torch_api_in_algorithms_or_models():
    for package in ("algorithms", "models"):
        for path in _files(package):
            assert "torch._C" not in path.read_text(), f"{package}/{path.name}"


def test_batching_imports_no_algorithm():
    assert not {m for m in _imports(SRC / "batching.py") if m.startswith("metazoo.algorithms")}
