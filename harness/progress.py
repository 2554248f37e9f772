"""Progress on stderr while a run works: one rich bar per provider (rich is imported only
when the bar is shown)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class Progress:
    """A rich progress bar per provider: done/total, failures, cost so far, cells/s, ETA; and a line
    per executor worker (Ray runs) with its cells, cells/s and what it is doing."""

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
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[activity]}"),
                console=Console(stderr=True), transient=False,
            )
            for name, total in totals.items():
                self._tasks[name] = self._bar.add_task(name, total=total, failed=0, cost=0.0, rate="", activity="")

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
            task = self._tasks[provider]
            self._bar.update(task, advance=cells, failed=self.failed[provider], cost=self.cost[provider])
            self._bar.update(task, rate=_rate(self._speed(task)))

    def add_worker(self, key: str, label: str) -> None:
        """A line under the bars for one executor worker (Ray): cells done, cells/s, activity."""
        if self._bar is not None and key not in self._tasks:
            from rich.markup import escape

            self._tasks[key] = self._bar.add_task(escape(f"  {label}"), total=None, failed=0, cost=0.0, rate="",
                                                  activity="starting")

    def worker(self, key: str, *, activity: str | None = None, cells: int = 0) -> None:
        """Update a worker's line: `activity` is what it does now (loading, a LoRA set, idle, lost)."""
        if self._bar is None or key not in self._tasks:
            return
        task = self._tasks[key]
        from rich.markup import escape

        fields = {"activity": escape(activity)} if activity is not None else {}  # LoRA paths may hold [brackets]
        self._bar.update(task, advance=cells, **fields)
        if cells:
            self._bar.update(task, rate=_rate(self._speed(task)))

    def _speed(self, task: Any) -> float | None:
        assert self._bar is not None
        return next((t.speed for t in self._bar.tasks if t.id == task), None)


def _rate(speed: float | None) -> str:
    """Cells per second as the bar shows it (blank until rich has two samples)."""
    return f"{speed:.2f} cells/s" if speed else ""
