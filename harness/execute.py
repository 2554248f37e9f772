"""Executing a plan: per-provider worker pools on one asyncio loop, write-ahead (intent ->
task id -> image -> result), the `--max-cost` budget, the rpm limit, seed batches for
`generate_batch`, and Ctrl-C (stop submitting, cancel what has a task id, record the rest)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from lorascope.harness.errors import BadResponse, NotSent, ProviderError
from lorascope.harness.models import GenerationRequest, GenerationResult
from lorascope.harness.plan import Plan, Unit
from lorascope.harness.ray_settings import ray_choice
from lorascope.harness.record import StorageFailure, check_and_write
from lorascope.harness.secrets import describe_exception, redact
from lorascope.harness.store import INTERRUPTED, RunStore, SharedCache
from lorascope.harness.summary import RunSummary

#: Seconds a best-effort cancel may take on Ctrl-C.
CANCEL_TIMEOUT_S = 10.0
#: Largest batch handed to a provider's `generate_batch` (seeds of one cell group).
MAX_BATCH = 8
#: Threads that check, write and fsync result images. Two keep up with a 400-cell,
#: concurrency-32 run on a local disk (0.4 ms per image) and cost ~0.15 s less CPU per
#: 400 cells than asyncio's default pool of cpu+4 threads contending for the GIL with the
#: event loop (benchmarks/RESULTS-transports.md); a slower disk fills `finish_slots` and
#: holds the senders back, so memory stays bounded either way.
WRITER_THREADS = 2


class RateLimiter:
    def __init__(self, rpm: float | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class _InFlight:
    generation_id: int
    provider: str
    task: asyncio.Task
    task_id: str | None = None


@dataclass
class Executor:
    plan: Plan
    store: RunStore
    cache: SharedCache | None
    summary: RunSummary
    epoch: int
    max_cost: float | None
    progress: Any
    attempts: dict[str, int]
    ray: str | None = None  # `--ray` (ray_settings.LOCAL) / `--ray-address`: providers that can run on Ray go there
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    spent: float = 0.0  # this invocation: finished (billed or estimated) + in-flight estimates
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    observed_max: dict[str, float] = field(default_factory=dict)
    probing: dict[str, bool] = field(default_factory=dict)
    price_events: dict[str, asyncio.Event] = field(default_factory=dict)
    finishers: set[asyncio.Task] = field(default_factory=set)
    finish_slots: asyncio.Semaphore = field(init=False)
    writer: ThreadPoolExecutor | None = None  # made on the first result; shut down by `execute`

    def __post_init__(self) -> None:
        # results waiting for their image write: bounded, so memory stays flat when the disk is slow
        self.finish_slots = asyncio.Semaphore(min(256, max(8, 2 * sum(self.plan.concurrency.values()))))

    def _writer(self) -> ThreadPoolExecutor:
        if self.writer is None:
            self.writer = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="lorascope-store")
        return self.writer

    # -- budget ------------------------------------------------------------------------
    # Spent = finished requests (billed, else estimated) + the estimates of those in flight.
    # A provider that publishes no price (estimate None) is probed one request at a time
    # under --max-cost; after that, its highest billed cost so far stands in for the estimate.

    def _estimate_usd(self, unit: Unit) -> float | None:
        if unit.estimate is not None and unit.estimate.cost.usd is not None:
            return unit.estimate.cost.usd
        return self.observed_max.get(unit.provider)

    async def _reserve(self, unit: Unit) -> bool:
        while True:
            est = self._estimate_usd(unit)
            if est is None and self.max_cost is not None:
                if self.probing.get(unit.provider):
                    event = self.price_events.setdefault(unit.provider, asyncio.Event())
                    await event.wait()
                    if self.stop.is_set():
                        return False
                    continue
                if self.spent >= self.max_cost:
                    est = float("inf")  # no headroom for a request of unknown price
                else:
                    self.probing[unit.provider] = True
                    unit.probe = True
                    est = 0.0
            est = est or 0.0
            if self.max_cost is not None and self.spent + est > self.max_cost + 1e-12:
                if not self.summary.budget_stopped:
                    self.summary.budget_stopped = True
                    self.summary.notes.append(
                        f"--max-cost {self.max_cost:g}: stopped submitting at ${self.spent:.4f} committed; the next "
                        + (f"request (estimated ${est:.4f}) would pass it" if est != float("inf")
                           else "request has no published price and nothing is left to learn it with")
                    )
                if unit.probe:
                    self._end_probe(unit, None)
                return False
            unit.reserved = est
            self.spent += est
            return True

    def _end_probe(self, unit: Unit, actual: float | None) -> None:
        if not unit.probe:
            return
        unit.probe = False
        self.probing[unit.provider] = False
        if actual is not None:
            self.observed_max[unit.provider] = max(actual, self.observed_max.get(unit.provider, 0.0))
        event = self.price_events.pop(unit.provider, None)
        if event is not None:
            event.set()

    def _settle(self, unit: Unit, actual: float | None, *, learn: bool = True) -> float:
        """Replace the reservation by what it cost; `learn=False` for failures (not a price)."""
        real = actual if actual is not None else unit.reserved
        self.spent += real - unit.reserved
        unit.reserved = real
        if learn and actual is not None and unit.estimate is not None and unit.estimate.cost.usd is None:
            self.observed_max[unit.provider] = max(actual, self.observed_max.get(unit.provider, 0.0))
        self._end_probe(unit, actual if learn else None)
        return real

    # -- one generation ----------------------------------------------------------------

    async def _call(self, unit: Unit, generation_id: int, coro_factory: Callable[[], Any]) -> GenerationResult:
        task = asyncio.ensure_future(coro_factory())
        record = _InFlight(generation_id, unit.provider, task, unit.resume_task_id)
        self.in_flight[generation_id] = record
        try:
            return await task
        finally:
            self.in_flight.pop(generation_id, None)

    async def run_unit(self, unit: Unit, limiter: RateLimiter) -> None:
        inst = self.plan.instances[unit.provider]
        ps = self.summary.providers[unit.provider]
        if unit.action == "resume":
            gid = unit.resume_generation
            assert gid is not None and unit.resume_task_id is not None
            self.store.mark_resumed(gid)
            ps.resumed += 1
            started = time.monotonic()
            try:
                result = await self._call(unit, gid, lambda: inst.resume(unit.resume_task_id, unit.request))
            except Exception as exc:
                self._record_error(unit, gid, exc, started)
                if unit.cancel_requested and not self.stop.is_set():
                    # the row keeps the provider's answer; the new request gets its own row
                    unit.action, unit.resume_task_id, unit.cancel_requested = "send", None, False
                    unit.resume_generation = None
                    await self.run_unit(unit, limiter)  # cancelled at our request: ask again
                    return
                ps.failed += 1
                self._advance(unit, failed=True)
                return
            await self._spawn_finish(unit, gid, result, started, actual_is_new=False)
            return

        # send (first time, or again after a stopped run)
        if self.stop.is_set():
            ps.not_sent += 1
            return
        if not await self._reserve(unit):
            ps.not_sent += 1
            self.stop.set()
            self._wake_all()
            return
        await limiter.wait()
        if self.stop.is_set():
            self._settle(unit, 0.0, learn=False)
            ps.not_sent += 1
            return
        gid = self._write_intent(unit)

        async def on_submitted(task_id: str) -> None:
            self.store.record_submitted(gid, task_id)
            record = self.in_flight.get(gid)
            if record is not None:
                record.task_id = task_id

        started = time.monotonic()
        try:
            result = await self._call(unit, gid, lambda: inst.generate(unit.request, on_submitted))
        except Exception as exc:
            self._record_error(unit, gid, exc, started)
            self._settle(unit, 0.0, learn=False)
            if isinstance(exc, NotSent):  # refused on this machine: nothing left it, nothing billed
                ps.sent -= 1
                ps.not_sent += 1
            ps.failed += 1
            self._advance(unit, failed=True)
            return
        await self._spawn_finish(unit, gid, result, started, actual_is_new=True)

    def _write_intent(self, unit: Unit) -> int:
        """Write-ahead step 1, just before the request leaves: close the row a stopped run
        left in flight (if any), then commit this attempt's intent; returns its row id."""
        ps = self.summary.providers[unit.provider]
        if unit.resume_generation is not None:
            self.store.record_failure(unit.resume_generation, INTERRUPTED,
                                      "the run stopped while this request was in flight (no task id to poll); "
                                      "sent again")
            unit.resume_generation = None
        attempt = self.attempts.get(unit.fingerprint, 0) + 1
        self.attempts[unit.fingerprint] = attempt
        est = unit.estimate.cost.usd if unit.estimate else None
        gid = self.store.record_intent(unit.fingerprint, unit.provider, self.epoch, attempt, est)
        ps.sent += 1
        if unit.resent_after_crash:
            ps.resent_after_crash += 1
        return gid

    async def run_batch(self, units: list[Unit], limiter: RateLimiter) -> None:
        """Seeds of one cell group in one `generate_batch` call (local GPU providers)."""
        inst = self.plan.instances[units[0].provider]
        ps = self.summary.providers[units[0].provider]
        reserved: list[Unit] = []
        for unit in units:
            if self.stop.is_set() or not await self._reserve(unit):
                ps.not_sent += 1
                self.stop.set()
                self._wake_all()
                continue
            reserved.append(unit)
        if not reserved:
            return
        await limiter.wait()
        if self.stop.is_set():  # Ctrl-C (or the budget) while waiting for the rate limit
            for unit in reserved:
                self._settle(unit, 0.0, learn=False)
            ps.not_sent += len(reserved)
            return
        ready = [(unit, self._write_intent(unit)) for unit in reserved]
        started = time.monotonic()
        try:
            results = await self._call(ready[0][0], ready[0][1], lambda: inst.generate_batch([u.request for u, _ in ready]))
            if len(results) != len(ready):
                raise BadResponse(units[0].provider, f"generate_batch returned {len(results)} results for {len(ready)} requests")
        except asyncio.CancelledError:
            for unit, gid in ready:
                self.store.record_failure(gid, INTERRUPTED, "stopped (Ctrl-C) before the batch finished")
            raise
        except Exception as exc:
            for unit, gid in ready:
                self._record_error(unit, gid, exc, started)
                self._settle(unit, 0.0, learn=False)
                ps.failed += 1
                self._advance(unit, failed=True)
            return
        for (unit, gid), result in zip(ready, results):
            await self._spawn_finish(unit, gid, result, started, actual_is_new=True)

    async def _spawn_finish(self, unit: Unit, gid: int, result: GenerationResult, started: float, *,
                            actual_is_new: bool) -> None:
        """Store the result in the background: the provider slot is free for the next request
        while the image is checked, fsync'd and committed. Bounded, so memory stays flat."""
        await self.finish_slots.acquire()
        task = asyncio.create_task(self._finish(unit, gid, result, started, actual_is_new=actual_is_new))
        self.finishers.add(task)

        def done(t: asyncio.Task) -> None:
            self.finishers.discard(t)
            self.finish_slots.release()

        task.add_done_callback(done)

    async def drain(self) -> None:
        while self.finishers:
            results = await asyncio.gather(*list(self.finishers), return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                    raise res

    async def _finish(self, unit: Unit, gid: int, result: GenerationResult, started: float, *, actual_is_new: bool) -> None:
        ps = self.summary.providers[unit.provider]
        cache = self.cache if unit.request.seed is not None else None
        try:
            images = await asyncio.get_running_loop().run_in_executor(
                self._writer(), check_and_write, self.store, result, unit.fingerprint, cache)
        except StorageFailure as exc:
            cost = self._settle(unit, result.cost.usd) if actual_is_new else 0.0
            ps.cost += cost
            self.store.record_failure(gid, "storage", str(exc), cost_usd=result.cost.usd, cost_source=result.cost.source)
            ps.failed += 1
            self._advance(unit, failed=True, cost=cost)
            if not self.summary.fatal:
                self.summary.fatal = f"{exc}; the generation is paid for: its task id is kept, so a re-run fetches it again"
            self.stop.set()
            return
        except BadResponse as exc:  # paid for, but unusable: the cost still counts
            cost = self._settle(unit, result.cost.usd, learn=False) if actual_is_new else 0.0
            ps.cost += cost
            self._record_error(unit, gid, exc, started, result)
            ps.failed += 1
            self._advance(unit, failed=True, cost=cost)
            return
        latency = result.timings.total_s if result.timings.total_s else time.monotonic() - started
        self.store.record_success(gid, result, images, latency)
        cost = self._settle(unit, result.cost.usd) if actual_is_new else (result.cost.usd or 0.0)
        ps.cost += cost
        if result.cost.usd is None and (unit.estimate is None or unit.estimate.cost.usd is None):
            ps.cost_unknown += 1
        ps.succeeded += 1
        self._advance(unit, failed=False, cost=cost)

    def _record_error(self, unit: Unit, gid: int, exc: BaseException, started: float,
                      result: GenerationResult | None = None) -> None:
        if isinstance(exc, ProviderError):
            kind, message = exc.kind, exc.message
        else:  # a library's exception text may quote a header: masked like everything else
            kind, message = "internal", describe_exception(exc)
        cost = result.cost if result is not None else None
        self.store.record_failure(gid, kind, redact(message), latency_s=time.monotonic() - started,
                                  cost_usd=cost.usd if cost else None, cost_source=cost.source if cost else None)

    def _advance(self, unit: Unit, *, failed: bool, cost: float = 0.0) -> None:
        if self.progress is not None:
            self.progress.advance(unit.provider, len(unit.cells), failed=failed, cost=cost)

    def _wake_all(self) -> None:
        for event in self.price_events.values():
            event.set()

    # -- Ctrl-C ------------------------------------------------------------------------

    async def interrupt(self) -> None:
        """Stop submitting; cancel each in-flight task at its provider when it has a task id."""
        self.stop.set()
        self._wake_all()
        self.summary.interrupted = True
        cancels = []
        for record in list(self.in_flight.values()):
            inst = self.plan.instances[record.provider]
            if record.task_id and getattr(inst, "asynchronous", False):
                self.store.record_cancel_requested(record.generation_id)
                cancels.append(asyncio.wait_for(inst.cancel(record.task_id), CANCEL_TIMEOUT_S))
        if cancels:
            await asyncio.gather(*cancels, return_exceptions=True)
        for record in list(self.in_flight.values()):
            if not record.task_id:
                self.store.record_failure(
                    record.generation_id, INTERRUPTED,
                    "stopped (Ctrl-C) before the provider answered; the provider may still bill it",
                )
            record.task.cancel()


def batches(units: list[Unit], inst: Any) -> list[list[Unit]]:
    """Consecutive units that differ only by seed, for `generate_batch`; else one each."""
    if not hasattr(inst, "generate_batch") or not getattr(inst, "batch_seeds", True):
        return [[u] for u in units]
    out: list[list[Unit]] = []
    open_key: GenerationRequest | None = None  # the seedless request of the batch being filled
    for unit in units:
        key = unit.request.model_copy(update={"seed": None}) if unit.action == "send" else None
        if key is not None and key == open_key and len(out[-1]) < MAX_BATCH:
            out[-1].append(unit)
        else:
            out.append([unit])
            open_key = key
    return out


async def execute(executor: Executor, handle_sigint: bool) -> None:
    plan = executor.plan
    queues: dict[str, deque[list[Unit]]] = {}
    for name, inst in plan.instances.items():
        units = [u for u in plan.units if u.provider == name and u.action in ("send", "resume")]
        # resumes first: they are paid for already and cost nothing to collect
        units.sort(key=lambda u: u.action != "resume")
        queues[name] = deque(batches(units, inst))

    interrupt_task: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if not interrupt_task:
            interrupt_task.append(loop.create_task(executor.interrupt()))

    installed = False
    if handle_sigint:
        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            installed = False

    async def worker(queue: deque[list[Unit]], limiter: RateLimiter) -> None:
        while queue and not executor.stop.is_set():
            batch = queue.popleft()
            try:
                if len(batch) == 1:
                    await executor.run_unit(batch[0], limiter)
                else:
                    await executor.run_batch(batch, limiter)
            except asyncio.CancelledError:
                if not executor.stop.is_set():
                    raise
            except sqlite3.Error:
                executor.stop.set()
                raise

    workers = []
    if executor.ray is not None and not any(ray_choice(i.config, executor.ray) for i in plan.instances.values()):
        executor.summary.notes.append("--ray: no provider of this run can run on Ray (only the local diffusers "
                                      "provider does); everything ran in this process")
    for name, queue in queues.items():
        inst = plan.instances[name]
        choice = ray_choice(inst.config, executor.ray)
        if choice is not None:  # this provider's generations go to Ray actors (executor_ray.py)
            from lorascope.harness.executor_ray import run_on_ray

            units = [u for batch in queue for u in batch]
            queue.clear()
            workers.append(asyncio.create_task(run_on_ray(executor, name, units, choice)))
            continue
        limiter = RateLimiter(getattr(inst.config, "rpm", None))
        for _ in range(min(plan.concurrency[name], max(1, len(queue)))):
            workers.append(asyncio.create_task(worker(queue, limiter)))
    try:
        results = await asyncio.gather(*workers, return_exceptions=True)
        if interrupt_task:
            await interrupt_task[0]
        await executor.drain()
        for name, queue in queues.items():
            left = sum(len(b) for b in queue)
            executor.summary.providers[name].not_sent += left
        for res in results:
            if isinstance(res, sqlite3.Error):
                raise res
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                raise res
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
        if executor.writer is not None:
            # every queued write still runs (milliseconds each) before the store closes: after a
            # Ctrl-C its paid image then lands in the shared cache, so the resume restores it
            # instead of buying it again (asyncio's default pool behaved the same way)
            executor.writer.shutdown(wait=True, cancel_futures=False)
            executor.writer = None
