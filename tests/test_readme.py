"""The README is what a newcomer runs first: keep its table and commands true."""

from pathlib import Path

from metazoo.cli import algorithm_table
from metazoo.rl.catalog import rl_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_algorithm_table_equals_the_registry():
    assert algorithm_table() in (ROOT / "README.md").read_text(), (
        "regenerate the table with `metazoo list --markdown`")


def test_readme_meta_rl_table_equals_the_registry():
    assert rl_table() in (ROOT / "README.md").read_text(), (
        "regenerate the table with `metazoo list --markdown`")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install torch==2.13.0 -e ".[dev,rl,mujoco,tune]" && pytest' in readme
    assert 'pip install -q torch==2.13.0 -e ".[dev,rl,mujoco,tune]"' in ci and "pytest" in ci
