"""Progress on stderr while a run works: one rich bar per provider (rich is imported only
when the bar is shown)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class Progress:
    """A rich progress bar per provider: done/total, failures, cost so far, ETA."""

    def __init__(self, totals: dict[str, int], enabled: bool) -> None:
        self.enabled = enabled
        self.failed: dict[str, int] = defaultdict(int)
        self.cost: dict[str, float] = defaultdict(float)
        self._bar = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"), TextColumn("${task.fields[cost]:.4f}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            for name, total in totals.items():
                self._tasks[name] = self._bar.add_task(name, total=total, failed=0, cost=0.0)

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, provider: str, cells: int, *, failed: bool = False, cost: float = 0.0) -> None:
        if failed:
            self.failed[provider] += cells
        self.cost[provider] += cost
        if self._bar is not None:
            self._bar.update(self._tasks[provider], advance=cells, failed=self.failed[provider],
                             cost=self.cost[provider])
