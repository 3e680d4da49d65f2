"""Every module outside `metazoo.algorithms` that imports from it can be imported first.

`metazoo.algorithms`' package imports every algorithm (to register it), so a module outside the
package that imports `metazoo.algorithms.*` and is itself imported by an algorithm is half
initialised when its first importer is the user: `from metazoo.metagan import ...` failed so.
Each such module (found by scanning the sources) is imported in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
IMPORTS_ALGORITHMS = re.compile(r"^(from metazoo\.algorithms\b|import metazoo\.algorithms\b|"
                                r"from metazoo import .*\balgorithms\b)", re.M)


def modules_importing_the_algorithms() -> list[str]:
    out = []
    for path in sorted((SRC / "metazoo").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        if rel.parts[1] == "algorithms" or rel.name == "__main__":
            continue
        if IMPORTS_ALGORITHMS.search(path.read_text()):
            out.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return out


def test_each_module_that_imports_the_algorithms_can_be_imported_first() -> None:
    names = modules_importing_the_algorithms()
    assert "metazoo.trainer" in names  # the scan finds them
    code = ("import importlib, sys\nfor n in sys.argv[1:]:\n"
            "    for k in [k for k in sys.modules if k.split('.')[0] == 'metazoo']:\n"
            "        del sys.modules[k]\n"
            "    importlib.import_module(n)\n")
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
