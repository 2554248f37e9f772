"""The runner: a suite's grid -> providers -> the run store, resumably, on one asyncio loop.

Order of work, and why:
1. Expand the grid and validate every request against its provider; any problem stops the
   run before anything is written or sent (all problems listed together).
2. Decide per generation (keyed by fingerprint): already stored -> skip; left in flight by a
   stopped run -> resume by task id (async providers) or send again (a synchronous provider,
   or an async one whose task id never came back: counted and reported); in the shared cache
   -> reuse; else send.
3. Send with per-provider concurrency (semaphore-sized worker pool) and an optional rpm
   limit, write-ahead: intent committed, then the request; the task id committed from the
   provider's `on_submitted`; the image written to disk, then the result committed.
4. Ctrl-C stops submitting, cancels what can be cancelled, and records all of it; a budget
   cap stops submitting before the next request could pass it; a full disk stops the run
   with the generation's task id kept, so a re-run fetches the paid image again.
"""

from __future__ import annotations

import asyncio
import io
import platform
import signal
import sqlite3
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from lorascope.harness.errors import BadResponse, ProviderError
from lorascope.harness.fingerprint import fingerprint as make_fingerprint
from lorascope.harness.grid import Cell, Grid, ProviderSetup, expand
from lorascope.harness.models import Estimate, GenerationRequest, GenerationResult
from lorascope.harness.secrets import redact
from lorascope.harness.store import (
    IN_FLIGHT, INTERRUPTED, RunStore, SharedCache, StoredImage, link_or_copy,
)
from lorascope.harness.suite import Suite, SuiteError

#: Concurrency when the suite does not set one: fal accounts start with a limit of 2.
DEFAULT_CONCURRENCY = {"fal": 2}
#: Seconds a best-effort cancel may take on Ctrl-C.
CANCEL_TIMEOUT_S = 10.0
#: Largest batch handed to a provider's `generate_batch` (seeds of one cell group).
MAX_BATCH = 8


class GridInvalid(SuiteError):
    """Requests the providers would refuse; nothing was sent."""


class StorageFailure(RuntimeError):
    """The run folder could not take an image (disk full, permissions)."""


class ProviderSummary(BaseModel):
    """Counts for one provider; cells unless it says generations."""

    total: int = 0  # cells in the grid
    generations: int = 0  # distinct fingerprints (cells asking the same thing share one)
    stored: int = 0  # cells already done in this run folder
    reused: int = 0  # cells taken from the shared cache (an earlier run paid)
    sent: int = 0  # requests sent now (generations), re-sends included
    resumed: int = 0  # tasks picked up again by their id (no new request)
    resent_after_crash: int = 0  # in flight when a run stopped, sent again
    unconfirmed_submits: int = 0  # of those: async submits whose task id never came back
    succeeded: int = 0  # generations finished now
    failed: int = 0  # generations failed now
    not_sent: int = 0  # generations left unsent (budget, Ctrl-C, a fatal error)
    in_cache: int = 0  # cells the shared cache can answer (planned reuse)
    to_send: int = 0  # generations planned to be sent
    to_resume: int = 0  # generations planned to be picked up by task id
    cost: float = 0.0  # USD spent now (billed, else estimated)
    cost_unknown: int = 0  # generations finished now whose cost nobody reported or estimated
    estimated_cost: float = 0.0  # USD the generations still to send would cost
    unpriced: int = 0  # of those: generations whose provider publishes no price
    estimated_seconds: float = 0.0  # wall time they would take at this concurrency


class RunSummary(BaseModel):
    run_dir: str
    suite: str
    dry_run: bool = False
    fresh: bool = False
    providers: dict[str, ProviderSummary] = Field(default_factory=dict)
    interrupted: bool = False
    budget_stopped: bool = False
    fatal: str | None = None
    notes: list[str] = Field(default_factory=list)
    #: dry runs only: what a real run would refuse to send (a real run raises GridInvalid)
    problems: list[str] = Field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.providers.values())

    @property
    def cost(self) -> float:
        return sum(p.cost for p in self.providers.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.fatal or self.budget_stopped or self.failed or self.problems:
            return 1
        return 0


# ---- planning -----------------------------------------------------------------------


@dataclass
class Unit:
    """One generation to obtain (one fingerprint), and the cells that show it."""

    fingerprint: str
    provider: str
    request: GenerationRequest
    cells: list[Cell]
    action: str = "send"  # stored | reuse | resume | send
    resume_task_id: str | None = None
    resume_generation: int | None = None
    cancel_requested: bool = False
    resent_after_crash: bool = False
    estimate: Estimate | None = None
    reserved: float = 0.0  # USD counted against --max-cost while in flight
    probe: bool = False  # the one request that learns an unpriced provider's cost


@dataclass
class Plan:
    grid: Grid
    instances: dict[str, Any]
    units: list[Unit]
    bound: dict[str, tuple[str, str, str]]  # cell_id -> (endpoint, model_version, fingerprint)
    concurrency: dict[str, int]


ProviderFactory = Callable[[ProviderSetup], Any]


def _default_factory(setup: ProviderSetup) -> Any:
    return setup.cls(setup.config)


def _effective_config(suite: Suite, setup: ProviderSetup, concurrency: int | None) -> None:
    default = DEFAULT_CONCURRENCY.get(setup.name)
    spec = next(p for p in suite.providers if p.name == setup.name)
    if default and concurrency is None and "concurrency" not in spec.settings:
        setup.config = setup.config.model_copy(update={"concurrency": default})


def build_plan(
    suite: Suite,
    *,
    providers: list[str] | None,
    concurrency: int | None,
    lookup: Callable[[str], type] | None,
    factory: ProviderFactory | None,
    strict: bool = True,
) -> tuple[Plan, list[str]]:
    """Grid, provider instances, fingerprints; every validation problem raised at once."""
    grid = expand(suite, providers=providers, lookup=lookup, concurrency=concurrency)
    factory = factory or _default_factory
    instances: dict[str, Any] = {}
    problems: list[str] = []
    for name, setup in grid.providers.items():
        _effective_config(suite, setup, concurrency)
        try:
            instances[name] = factory(setup)
        except (ProviderError, ValueError, OSError, ImportError) as exc:
            problems.append(f"{name}: cannot set up the provider: {exc}")
    model_versions: dict[str, str] = {}
    for name, inst in instances.items():
        try:
            model_versions[name] = inst.model_version() or ""
        except Exception as exc:  # a provider bug must not hide the other problems
            problems.append(f"{name}: model_version() failed: {type(exc).__name__}: {exc}")
    if problems:
        raise GridInvalid(problems)

    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    bound: dict[str, tuple[str, str, str]] = {}
    units: dict[str, Unit] = {}
    for cell in grid.cells:
        inst = instances[cell.provider]
        req = cell.request
        try:
            found = list(inst.validate(req))
        except Exception as exc:  # a provider bug is one more problem, not a crash
            found = [f"validate() failed: {type(exc).__name__}: {exc}"]
        for problem in found:
            grouped[(cell.provider, problem)].append(cell.cell_id)
        if found and strict:
            continue
        try:
            endpoint = inst.endpoint(req)
        except Exception as exc:
            grouped[(cell.provider, f"endpoint() failed: {type(exc).__name__}: {exc}")].append(cell.cell_id)
            continue
        fp = make_fingerprint(cell.provider, endpoint, model_versions[cell.provider], req)
        bound[cell.cell_id] = (endpoint, model_versions[cell.provider], fp)
        unit = units.get(fp)
        if unit is None:
            units[fp] = Unit(fp, cell.provider, req, [cell])
        else:
            unit.cells.append(cell)
    lines = []
    for (provider, problem), cells in grouped.items():
        more = f" and {len(cells) - 1} more cell(s)" if len(cells) > 1 else ""
        lines.append(f"{provider}: {problem} (cell {cells[0]}{more})")
    if lines and strict:
        raise GridInvalid(lines)
    conc = {name: int(grid.providers[name].config.concurrency) for name in instances}
    return Plan(grid, instances, list(units.values()), bound, conc), lines


def decide(plan: Plan, store: RunStore | None, cache: SharedCache | None, *, fresh: bool, epoch: int | None,
           summary: RunSummary) -> None:
    """Set each unit's action from what the store and the cache already hold."""
    min_epoch = epoch if (fresh and epoch is not None) else 0
    done = store.succeeded_fingerprints(min_epoch) if store else set()
    leftovers = store.leftovers() if store else {}
    cached = set()
    if cache is not None and not fresh:
        cached = cache.lookup_many(u.fingerprint for u in plan.units if u.request.seed is not None and u.fingerprint not in done)
    for unit in plan.units:
        inst = plan.instances[unit.provider]
        asynchronous = bool(getattr(inst, "asynchronous", False))
        row = leftovers.get(unit.fingerprint)
        ps = summary.providers[unit.provider]
        in_flight = row is not None and row.status in IN_FLIGHT
        if row is not None and asynchronous and row.collectable:
            unit.action = "resume"  # accepted (and maybe finished and billed): poll it by id
            unit.resume_task_id = row.task_id
            unit.resume_generation = row.id
            unit.cancel_requested = row.cancel_requested
        elif unit.fingerprint in done:
            unit.action = "stored"
            if in_flight:
                unit.resume_generation = row.id  # closed as interrupted
        elif unit.fingerprint in cached and not in_flight:
            unit.action = "reuse"
        else:
            unit.action = "send"
            if in_flight or (row is not None and row.error_kind == INTERRUPTED):
                # in flight when a run stopped: the provider may have it (and bill it) already
                unit.resent_after_crash = True
                if asynchronous:
                    ps.unconfirmed_submits += 1
                if in_flight:
                    unit.resume_generation = row.id  # closed as interrupted before sending again
        if unit.action == "stored":
            ps.stored += len(unit.cells)
        elif unit.action == "reuse":
            ps.in_cache += len(unit.cells)
        elif unit.action == "resume":
            ps.to_resume += 1
        else:
            ps.to_send += 1


# ---- images ------------------------------------------------------------------------


def _check_and_write(store: RunStore, result: GenerationResult, fingerprint: str,
                     cache: SharedCache | None) -> list[StoredImage]:
    """Decode each image (a provider may send bytes that are not an image), write it, and
    offer the generation to the shared cache (seeded requests only). Runs in a worker thread."""
    from PIL import Image, UnidentifiedImageError

    if len(result.images) < 1:
        raise BadResponse(result.provider, "the provider returned no image")
    checked: list[tuple[bytes, str, int, int, bool | None]] = []
    for index, image in enumerate(result.images):
        try:
            with Image.open(io.BytesIO(image.data)) as im:
                fmt = (im.format or "").lower()
                width, height = im.size
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BadResponse(result.provider, f"image {index} does not decode ({len(image.data)} bytes): {exc}") from None
        fmt = {"jpg": "jpeg"}.get(fmt, fmt)
        if fmt not in ("png", "jpeg", "webp"):
            raise BadResponse(result.provider, f"image {index} is {fmt or 'of an unknown format'}, not png/jpeg/webp")
        checked.append((image.data, fmt, width, height, image.nsfw))
    stored = []
    for data, fmt, width, height, nsfw in checked:
        try:
            sha, rel = store.write_image(data, fmt)
        except OSError as exc:
            raise StorageFailure(f"cannot write an image into {store.run_dir}: {exc.strerror or exc}") from None
        stored.append(StoredImage(sha, rel, fmt, width, height, nsfw))
    if cache is not None:
        cache.put(fingerprint, result.provider, result, stored, store.run_dir)
    return stored


# ---- execution ---------------------------------------------------------------------


class _RateLimiter:
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
class _Executor:
    plan: Plan
    store: RunStore
    cache: SharedCache | None
    summary: RunSummary
    epoch: int
    max_cost: float | None
    progress: Any
    attempts: dict[str, int]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    spent: float = 0.0  # this invocation: finished (billed or estimated) + in-flight estimates
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    observed_max: dict[str, float] = field(default_factory=dict)
    probing: dict[str, bool] = field(default_factory=dict)
    price_events: dict[str, asyncio.Event] = field(default_factory=dict)
    finishers: set[asyncio.Task] = field(default_factory=set)
    finish_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        # results waiting for their image write: bounded, so memory stays flat when the disk is slow
        self.finish_slots = asyncio.Semaphore(min(256, max(8, 2 * sum(self.plan.concurrency.values()))))

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

    async def run_unit(self, unit: Unit, limiter: _RateLimiter) -> None:
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

    async def run_batch(self, units: list[Unit], limiter: _RateLimiter) -> None:
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
            images = await asyncio.to_thread(_check_and_write, self.store, result, unit.fingerprint, cache)
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
        else:
            kind, message = "internal", f"{type(exc).__name__}: {exc}"
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


class _Progress:
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

    def __enter__(self) -> "_Progress":
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


def _batches(units: list[Unit], inst: Any) -> list[list[Unit]]:
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


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("lorascope", "httpx", "pydantic"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return info


async def run_suite_async(
    suite: Suite,
    out_dir: Path,
    *,
    providers: list[str] | None = None,
    fresh: bool = False,
    max_cost: float | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    progress: bool = True,
    provider_lookup: Callable[[str], type] | None = None,
    provider_factory: ProviderFactory | None = None,
    cache: SharedCache | None = None,
    handle_sigint: bool = True,
) -> RunSummary:
    """Run (or dry-run) a suite into `out_dir`; see the module docstring for the order of work."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    plan, problems = build_plan(suite, providers=providers, concurrency=concurrency, lookup=provider_lookup,
                                factory=provider_factory, strict=not dry_run)
    summary = RunSummary(run_dir=str(out_dir), suite=suite.name, dry_run=dry_run, fresh=fresh, problems=problems)
    for name in plan.instances:
        summary.providers[name] = ProviderSummary()
    for unit in plan.units:
        ps = summary.providers[unit.provider]
        ps.total += len(unit.cells)
        ps.generations += 1
    cache = cache if cache is not None else SharedCache()
    try:
        return await _run_planned(plan, suite, out_dir, summary, cache, fresh=fresh, max_cost=max_cost,
                                  dry_run=dry_run, progress=progress, handle_sigint=handle_sigint, started=started)
    finally:
        cache.close()
        for inst in plan.instances.values():
            try:
                await inst.aclose()
            except Exception:
                pass


async def _run_planned(plan: Plan, suite: Suite, out_dir: Path, summary: RunSummary, cache: SharedCache, *,
                       fresh: bool, max_cost: float | None, dry_run: bool, progress: bool, handle_sigint: bool,
                       started: float) -> RunSummary:
    if dry_run:
        store = RunStore.open(out_dir) if (out_dir / "run.db").is_file() else None
        try:
            if store:
                store.check_owner(suite)
            epoch = store.planned_epoch(fresh) if store else None
            decide(plan, store, cache, fresh=fresh, epoch=epoch, summary=summary)
        finally:
            if store:
                store.close()
        _estimate(plan, summary)
        if max_cost is not None:
            total = sum(p.estimated_cost for p in summary.providers.values())
            if total > max_cost:
                summary.notes.append(
                    f"the estimate ${total:.4f} passes --max-cost {max_cost:g}: a real run would stop submitting there"
                )
        summary.wall_s = time.monotonic() - started
        return summary

    store = RunStore.create(out_dir)
    try:
        store.save_suite(suite)
        store.save_entries(plan.grid.entries.values())
        store.save_cells([c for c in plan.grid.cells if c.cell_id in plan.bound], plan.bound)
        store.save_software(_software())
        epoch = store.begin_epoch(fresh)
        decide(plan, store, cache, fresh=fresh, epoch=epoch, summary=summary)
        _estimate(plan, summary)
        attempts = store.attempts()
        totals = {name: ps.total for name, ps in summary.providers.items()}
        with _Progress(totals, progress) as bar:
            executor = _Executor(plan, store, cache, summary, epoch, max_cost, bar, attempts)
            for unit in plan.units:
                ps = summary.providers[unit.provider]
                if unit.action == "stored":
                    if unit.resume_generation is not None:
                        store.record_failure(unit.resume_generation, INTERRUPTED,
                                             "the run stopped while this request was in flight; an earlier generation holds the image")
                    bar.advance(unit.provider, len(unit.cells))
                elif unit.action == "reuse":
                    if _reuse(store, cache, unit, epoch, attempts):
                        ps.reused += len(unit.cells)
                        bar.advance(unit.provider, len(unit.cells))
                    else:
                        unit.action = "send"
                        ps.to_send += 1
                        if unit.estimate is None:
                            _estimate_unit(plan, unit, summary)
            await _execute(executor, handle_sigint)
        if cache.disabled_reason:
            summary.notes.append(cache.disabled_reason)
        finished = not summary.interrupted and not summary.fatal and not summary.budget_stopped
        if fresh and finished:
            store.close_fresh_epoch()
        _refresh_results(store, out_dir, summary)
    except sqlite3.Error as exc:
        summary.fatal = f"run.db could not be written ({exc}); it is consistent up to the last step recorded"
    finally:
        store.close()
    summary.wall_s = time.monotonic() - started
    return summary


def _refresh_results(store: RunStore, out_dir: Path, summary: RunSummary) -> None:
    """Rebuild results.parquet unless it already shows this exact state (re-runs of a
    finished run then skip importing pandas and pyarrow)."""
    from lorascope.harness.results import RESULTS_NAME

    token = store.state_token()
    if (out_dir / RESULTS_NAME).is_file() and store.get_meta("results_token") == token:
        return
    try:
        from lorascope.harness.results import export_results

        export_results(out_dir)
        store.set_meta({"results_token": token})
    except (OSError, sqlite3.Error, ImportError) as exc:
        summary.notes.append(f"results.parquet not written: {exc}")


def _estimate_unit(plan: Plan, unit: Unit, summary: RunSummary) -> Estimate | None:
    """Set and return the unit's estimate; a failure is advice lost, noted once per provider."""
    try:
        unit.estimate = plan.instances[unit.provider].estimate(unit.request)
    except Exception as exc:
        note = f"{unit.provider}: estimate failed: {type(exc).__name__}: {exc}"
        if note not in summary.notes:
            summary.notes.append(note)
        return None
    return unit.estimate


def _estimate(plan: Plan, summary: RunSummary) -> None:
    seconds: dict[str, float] = defaultdict(float)
    for unit in plan.units:
        if unit.action != "send" or _estimate_unit(plan, unit, summary) is None:
            continue
        ps = summary.providers[unit.provider]
        ps.estimated_cost += unit.estimate.cost.usd or 0.0
        if unit.estimate.cost.usd is None:
            ps.unpriced += 1
        seconds[unit.provider] += unit.estimate.seconds
    for name, total in seconds.items():
        summary.providers[name].estimated_seconds = total / max(1, plan.concurrency.get(name, 1))


def _reuse(store: RunStore, cache: SharedCache, unit: Unit, epoch: int, attempts: dict[str, int]) -> bool:
    found = cache.get(unit.fingerprint)
    if found is None:
        return False
    result, images = found
    try:
        for im in images:
            link_or_copy(cache.root / im.path, store.run_dir / im.path)
    except OSError:
        return False
    attempt = attempts.get(unit.fingerprint, 0) + 1
    attempts[unit.fingerprint] = attempt
    store.record_reuse(unit.fingerprint, unit.provider, epoch, attempt, result, images)
    return True


async def _execute(executor: _Executor, handle_sigint: bool) -> None:
    plan = executor.plan
    queues: dict[str, deque[list[Unit]]] = {}
    for name, inst in plan.instances.items():
        units = [u for u in plan.units if u.provider == name and u.action in ("send", "resume")]
        # resumes first: they are paid for already and cost nothing to collect
        units.sort(key=lambda u: u.action != "resume")
        queues[name] = deque(_batches(units, inst))

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

    async def worker(queue: deque[list[Unit]], limiter: _RateLimiter) -> None:
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
    for name, queue in queues.items():
        inst = plan.instances[name]
        limiter = _RateLimiter(getattr(inst.config, "rpm", None))
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


def run_suite(suite: Suite, out_dir: Path, **kwargs: Any) -> RunSummary:
    """Synchronous wrapper around `run_suite_async` (same arguments)."""
    return asyncio.run(run_suite_async(suite, out_dir, **kwargs))
