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
    queue: float = 0.0  # of `latency`, seconds spent waiting before execution starts
    reported: tuple[float, float] | None = None  # (queue s, inference s) to report instead
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
            waiting = time.time() - self.created < self.queue
            return "queued" if waiting or (self.polls == 1 and self.polls_before_done > 0) else "running"
        return {SUCCEED: "done", FAIL: "failed", FILTERED: "filtered"}[self.outcome]

    def provider_times_ms(self) -> tuple[int, int, int]:
        """(submit, execute, complete) epoch ms as the provider reports them: execution
        starts after the queue wait and completes at the task's latency."""
        submit = int(self.created * 1000)
        if self.reported is not None:
            execute = submit + int(self.reported[0] * 1000)
            return submit, execute, execute + int(self.reported[1] * 1000)
        execute = submit + int(min(self.queue, self.latency) * 1000)
        return submit, execute, submit + int(self.latency * 1000)

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
        #: seconds of each task's latency spent queued (reported as the provider's queue time)
        self.queue_s = 0.0
        #: (queue s, inference s) the provider reports regardless of real timing (protocol tests)
        self.reported_times: tuple[float, float] | None = None

    def create(self, body: dict[str, Any], latency: float) -> Task:
        task_id = f"{self.prefix}-{next(_ids):06d}-{int(time.time() * 1000) % 100000:05d}"
        task = Task(task_id, body, self.outcome, latency, self.polls_before_done, queue=self.queue_s,
                    reported=self.reported_times)
        self.tasks[task_id] = task
        return task
