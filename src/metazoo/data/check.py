"""`DataCheck`: what a dataset's files on disk hold, in plain words.

`metazoo data check NAME --root DIR` prints `report()`; a loader that cannot find its files raises
`DataError(check.message())`, so training and the check command say the same thing. Each file
dataset's module defines `check(root) -> DataCheck` and names it in its `DatasetSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataCheck:
    """The result of looking for a dataset's published files under a root.

    Attributes:
        dataset: the dataset's registry name.
        root: the folder that was searched (and its `<root>/<dataset>/` sub-folder, by convention).
        found: one plain line per file or folder found, e.g. "train.csv (38400 rows)".
        missing: one plain line per missing or damaged item, e.g. "images/ (folder of JPEGs)".
        layout: the expected layout, a few lines, with checksums where the release has them.
        hint: what to do when something is missing (download command, where the release lives).
    """

    dataset: str
    root: Path
    found: tuple[str, ...]
    missing: tuple[str, ...]
    layout: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing

    def message(self) -> str:
        """One line for an error: what is missing where, and how to fix it."""
        if self.ok:
            return f"{self.dataset}: all files found in {self.root}"
        what = "; ".join(self.missing)
        fix = f"; {self.hint}" if self.hint else ""
        return (f"{self.dataset} data incomplete in {self.root}: missing {what}{fix} "
                f"(see `metazoo data check {self.dataset} --root DIR`)")

    def report(self) -> str:
        """Several lines for `metazoo data check`: found, missing, expected layout, hint."""
        lines = [f"{self.dataset} in {self.root}: " + ("complete" if self.ok else "INCOMPLETE")]
        lines += [f"  found    {item}" for item in self.found]
        lines += [f"  missing  {item}" for item in self.missing]
        lines.append("expected layout:")
        lines += [f"  {line}" for line in self.layout.strip().splitlines()]
        if self.hint and not self.ok:
            lines.append(self.hint)
        return "\n".join(lines)


def dataset_folder(root: Path, name: str, marker: str) -> Path:
    """`root` if it holds `marker`, else `root/name` if that does, else `root/name` (to report)."""
    if (root / marker).exists():
        return root
    return root / name
