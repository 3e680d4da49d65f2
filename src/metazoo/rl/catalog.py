"""What `metazoo list` shows of meta-RL: its learners and task families (with the pip extra each
family needs, `register_family(..., extra=)`), and `rl_table()`, the learners' Markdown table (as
`cli.algorithm_table`).
Without gymnasium (the `rl` extra) the lines say how to install it instead of failing."""

from __future__ import annotations

from metazoo.rl import base

NO_GYMNASIUM = "  (pip install 'metazoo[rl]' to list them: they need gymnasium)"


def learner_lines() -> list[str]:
    """`  name  display  paper` of each meta-RL learner, in registration order."""
    try:
        specs = [base.algorithm_spec(name) for name in base.ALGORITHM_MODULES]
    except ImportError:
        return [NO_GYMNASIUM]
    width = max(len(s.display) for s in specs)
    return [f"  {s.name:<12} {s.display:<{width}} {s.paper}" for s in specs]


def family_lines() -> list[str]:
    """`  name  metazoo[extra]  description` of each task family, by name."""
    try:
        specs = [base.family_spec(name) for name in base.family_names()]
    except ImportError:
        return [NO_GYMNASIUM]
    width = max(13, *(len(s.name) for s in specs))
    return [f"  {s.name:<{width}} {f'metazoo[{s.extra}]':<15} {s.description}"
            for s in specs]


def rl_table() -> str:
    """The meta-RL learners as a Markdown table: paper, file, presets (not yet in the README)."""
    from metazoo.config_files import preset_names, presets_cell

    presets = preset_names()
    rows = ["| algorithm | paper | file | presets |", "|---|---|---|---|"]
    for name in base.ALGORITHM_MODULES:
        s = base.algorithm_spec(name)
        stem = s.cls.__module__.rsplit(".", 1)[1]
        rows.append(f"| {s.display} (`{name}`) | {s.paper} | "
                    f"[{stem}.py](src/metazoo/rl/{stem}.py) | {presets_cell(name, presets)} |")
    return "\n".join(rows)
