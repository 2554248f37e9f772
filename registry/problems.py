"""A catalogue problem names the file, line, entry and field, so a user can fix it in one go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]


def display_path(path: Path) -> str:
    """The path as a user typed it: relative to the cwd when it lies below it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None  # 1-based; None when the problem has no place in the file
    entry: str | None  # the entry's id, or "#N" (1-based position) when it has none
    field: str | None  # dotted path inside the entry, e.g. "scale.range" or "triggers[1]"
    message: str
    severity: Severity = "error"

    @property
    def entry_id(self) -> str | None:
        """Alias of `entry` (the entry's id, or "#N" by position)."""
        return self.entry

    def __str__(self) -> str:
        where = display_path(self.file) + (f":{self.line}" if self.line else "")
        parts = []
        if self.entry is not None:
            parts.append(f"entry {self.entry!r}" if not self.entry.startswith("#") else f"entry {self.entry}")
        if self.field:
            parts.append(f"field {self.field!r}")
        prefix = ", ".join(parts)
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}: {tag}{prefix + ': ' if prefix else ''}{self.message}"


class CatalogueError(Exception):
    """Every problem found in a catalogue, raised once validation has looked at all entries."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        head = f"{len(errors)} error(s) in the catalogue:"
        super().__init__("\n".join([head, *(str(p) for p in problems)]))
