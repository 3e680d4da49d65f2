"""A matplotlib figure written to a PNG file atomically: every figure of the library goes here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metazoo import atomic


def save(fig: Any, path: Path) -> Path:
    """Write `fig` as PNG to `path` atomically (a reader never sees half a file), close it."""
    import matplotlib.pyplot as plt

    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
