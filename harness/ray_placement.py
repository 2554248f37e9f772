"""Which batch a free Ray worker takes next: LoRA sets kept warm.

Loading a LoRA file costs tens of milliseconds on the tiny model and seconds for a real
100-300 MB file, while a scale change costs ~1 ms (benchmarks/RESULTS-local-lora.md). So
batches are grouped by LoRA set (the files, not the scales) and a free worker takes, in
this order:

1. more of the group it is sweeping;
2. an unclaimed group whose files it already has loaded (the baseline fits everyone);
3. an unclaimed group, sharing as many files with what it has loaded as possible;
4. else a batch from the end of the longest group another worker is sweeping, preferring one
   whose files it has loaded (no worker idles while work is left; the steal loads each file
   on the stealer once, after which it prefers that group).

Pure bookkeeping, no Ray: the driver calls it under its own lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Hashable, TypeVar

B = TypeVar("B")


def lora_set(paths: list[str] | tuple[str, ...]) -> frozenset[str]:
    """A batch's group key: its LoRA files, whatever their scales and order."""
    return frozenset(paths)


@dataclass
class _Group(Generic[B]):
    key: frozenset[str]
    order: int
    batches: deque[B] = field(default_factory=deque)
    owner: Hashable | None = None


class Placement(Generic[B]):
    """Batches grouped by LoRA set; `take` picks for one worker, `put_back` re-queues."""

    def __init__(self) -> None:
        self._groups: dict[frozenset[str], _Group[B]] = {}
        self._sweeping: dict[Hashable, frozenset[str]] = {}

    def add(self, key: frozenset[str], batch: B) -> None:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key, len(self._groups))
        group.batches.append(batch)

    def __len__(self) -> int:
        return sum(len(g.batches) for g in self._groups.values())

    def remaining(self) -> list[B]:
        return [b for g in sorted(self._groups.values(), key=lambda g: g.order) for b in g.batches]

    def take(self, worker: Hashable, loaded: set[str] | frozenset[str]) -> B | None:
        """The next batch for `worker`, which has the files `loaded`; None when none is left."""
        current = self._sweeping.get(worker)
        if current is not None:
            group = self._groups[current]
            if group.batches and group.owner == worker:
                return group.batches.popleft()
            self.release(worker)
        unclaimed = [g for g in self._groups.values() if g.batches and g.owner is None]
        if unclaimed:
            group = min(unclaimed, key=lambda g: (not g.key <= loaded, -len(g.key & loaded), g.order))
            group.owner = worker
            self._sweeping[worker] = group.key
            return group.batches.popleft()
        others = [g for g in self._groups.values() if g.batches]
        if not others:
            return None
        group = min(others, key=lambda g: (not g.key <= loaded, -len(g.batches), g.order))
        return group.batches.pop()

    def put_back(self, key: frozenset[str], batch: B) -> None:
        """A batch whose worker died goes back to the front of its group."""
        group = self._groups[key]
        group.batches.appendleft(batch)

    def release(self, worker: Hashable) -> None:
        """`worker` sweeps nothing any more (its group finished, or it died)."""
        key = self._sweeping.pop(worker, None)
        if key is not None and self._groups[key].owner == worker:
            self._groups[key].owner = None
