"""The runner: a suite's grid -> providers -> the run store, resumably, on one asyncio loop.

It reads as its stages, one module each:

1. `plan.py` -- expand the grid and validate every request against its provider; any problem
   stops the run before anything is written or sent (all problems listed together). One
   `Unit` per fingerprint: cells asking the same thing share one generation.
2. `decide.py` -- per unit: already stored -> skip; left in flight by a stopped run -> resume
   by task id (async providers) or send again (a synchronous provider, or an async one whose
   task id never came back: counted and reported); in the shared cache -> reuse; else send.
   Also the cost and time estimates of what is left to send.
3. `execute.py` -- send with per-provider concurrency (semaphore-sized worker pool) and an
   optional rpm limit, write-ahead: intent committed, then the request; the task id committed
   from the provider's `on_submitted`; the image written to disk, then the result committed.
   Ctrl-C stops submitting, cancels what can be cancelled, and records all of it; a budget cap
   stops submitting before the next request could pass it; a full disk stops the run with the
   generation's task id kept, so a re-run fetches the paid image again.
4. `record.py` -- images checked and written, cached generations linked in, software versions,
   `results.parquet` refreshed.
`progress.py` draws the bars, `summary.py` holds the counts. This module wires them together
and is the public entry: `run_suite`, `run_suite_async`, `GridInvalid` (and the names below).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from lorascope.harness.decide import decide, estimate, estimate_unit
from lorascope.harness.execute import CANCEL_TIMEOUT_S, MAX_BATCH, Executor, execute
from lorascope.harness.plan import DEFAULT_CONCURRENCY, GridInvalid, Plan, ProviderFactory, Unit, build_plan
from lorascope.harness.progress import Progress
from lorascope.harness.record import StorageFailure, prewarm_results, refresh_results, reuse, software_versions
from lorascope.harness.store import INTERRUPTED, RunStore, SharedCache
from lorascope.harness.suite import Suite
from lorascope.harness.summary import ProviderSummary, RunSummary

#: Seconds after sending starts before pandas/pyarrow are imported in the background.
PREWARM_AFTER_S = 0.05

__all__ = [
    "CANCEL_TIMEOUT_S", "DEFAULT_CONCURRENCY", "MAX_BATCH", "GridInvalid", "Plan", "ProviderSummary",
    "RunSummary", "StorageFailure", "Unit", "build_plan", "decide", "run_suite", "run_suite_async",
]


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
    ray: str | None = None,
) -> RunSummary:
    """Run (or dry-run) a suite into `out_dir`; see the module docstring for the order of work.
    `ray`: `--ray-address` (`"local"` for a bare `--ray`): providers that can run on Ray go there."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    plan, problems = build_plan(suite, providers=providers, concurrency=concurrency, lookup=provider_lookup,
                                factory=provider_factory, strict=not dry_run)
    summary = RunSummary(run_dir=str(out_dir), suite=suite.name, dry_run=dry_run, fresh=fresh, problems=problems)
    summary.notes.extend(plan.grid.warnings)  # the catalogue's usage warnings (printed, nothing refused)
    for name in plan.instances:
        summary.providers[name] = ProviderSummary()
    for unit in plan.units:
        ps = summary.providers[unit.provider]
        ps.total += len(unit.cells)
        ps.generations += 1
    cache = cache if cache is not None else SharedCache()
    try:
        return await _run_planned(plan, suite, out_dir, summary, cache, fresh=fresh, max_cost=max_cost,
                                  dry_run=dry_run, progress=progress, handle_sigint=handle_sigint, started=started,
                                  ray=ray)
    finally:
        cache.close()
        for inst in plan.instances.values():
            try:
                await inst.aclose()
            except Exception:
                pass


async def _run_planned(plan: Plan, suite: Suite, out_dir: Path, summary: RunSummary, cache: SharedCache, *,
                       fresh: bool, max_cost: float | None, dry_run: bool, progress: bool, handle_sigint: bool,
                       started: float, ray: str | None = None) -> RunSummary:
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
        estimate(plan, summary, ray)
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
        store.save_software(software_versions())
        epoch = store.begin_epoch(fresh)
        decide(plan, store, cache, fresh=fresh, epoch=epoch, summary=summary)
        estimate(plan, summary, ray)
        attempts = store.attempts()
        totals = {name: ps.total for name, ps in summary.providers.items()}
        with Progress(totals, progress) as bar:
            executor = Executor(plan, store, cache, summary, epoch, max_cost, bar, attempts, ray=ray)
            for unit in plan.units:
                ps = summary.providers[unit.provider]
                if unit.action == "stored":
                    if unit.resume_generation is not None:
                        store.record_failure(unit.resume_generation, INTERRUPTED,
                                             "the run stopped while this request was in flight; an earlier generation holds the image")
                    bar.advance(unit.provider, len(unit.cells))
                elif unit.action == "reuse":
                    if reuse(store, cache, unit, epoch, attempts):
                        ps.reused += len(unit.cells)
                        bar.advance(unit.provider, len(unit.cells))
                    else:
                        unit.action = "send"
                        ps.to_send += 1
                        if unit.estimate is None:
                            estimate_unit(plan, unit, summary)
            if any(u.action in ("send", "resume") for u in plan.units):
                # results.parquet will be rewritten: its imports overlap the network wait,
                # starting once the first requests are out
                asyncio.get_running_loop().call_later(PREWARM_AFTER_S, prewarm_results)
            await execute(executor, handle_sigint)
        cache.flush()  # before its problems are reported
        if cache.disabled_reason:
            summary.notes.append(cache.disabled_reason)
        finished = not summary.interrupted and not summary.fatal and not summary.budget_stopped
        if fresh and finished:
            store.close_fresh_epoch()
        refresh_results(store, out_dir, summary)
    except sqlite3.Error as exc:
        summary.fatal = f"run.db could not be written ({exc}); it is consistent up to the last step recorded"
    finally:
        store.close()
    summary.wall_s = time.monotonic() - started
    return summary


def run_suite(suite: Suite, out_dir: Path, **kwargs: Any) -> RunSummary:
    """Synchronous wrapper around `run_suite_async` (same arguments)."""
    return asyncio.run(run_suite_async(suite, out_dir, **kwargs))
