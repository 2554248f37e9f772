"""Task bookkeeping shared by the asynchronous fakes (fal, Novita, HighwayAPI)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)

SUCCEED, FAIL, NEVER, FILTERED = "succeed", "fail", "never", "filtered"


@dataclass
class Task:
    id: str
    body: dict[str, Any]
    outcome: str
    latency: float
    polls_before_done: int
    created: float = field(default_factory=time.time)
    polls: int = 0
    cancelled: bool = False
    url_tokens: int = 0

    def state(self) -> str:
        """'queued' | 'running' | 'done' | 'failed' | 'filtered' | 'cancelled' (counts this poll)."""
        self.polls += 1
        if self.cancelled:
            return "cancelled"
        finished = self.polls > self.polls_before_done and time.time() - self.created >= self.latency
        if self.outcome == NEVER or not finished:
            return "queued" if self.polls == 1 and self.polls_before_done > 0 else "running"
        return {SUCCEED: "done", FAIL: "failed", FILTERED: "filtered"}[self.outcome]

    def peek_done(self) -> bool:
        return (
            not self.cancelled
            and self.outcome == SUCCEED
            and self.polls > self.polls_before_done
            and time.time() - self.created >= self.latency
        )


class TaskBook:
    """Tasks by id plus the knobs a test sets before submitting."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tasks: dict[str, Task] = {}
        #: what the next submitted tasks do (then `outcome`); 'succeed' | 'fail' | 'never' | 'filtered'
        self.outcome = SUCCEED
        self.fail_reason = "inference failed: CUDA out of memory"
        self.polls_before_done = 0

    def create(self, body: dict[str, Any], latency: float) -> Task:
        task_id = f"{self.prefix}-{next(_ids):06d}-{int(time.time() * 1000) % 100000:05d}"
        task = Task(task_id, body, self.outcome, latency, self.polls_before_done)
        self.tasks[task_id] = task
        return task
