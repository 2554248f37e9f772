"""Deciding, per unit: already stored, resume by task id, reuse from the shared cache, or
send; and what the units still to send would cost and take (the estimates a dry run shows
and `--max-cost` counts against)."""

from __future__ import annotations

from collections import defaultdict

from lorascope.harness.models import Estimate
from lorascope.harness.plan import Plan, Unit
from lorascope.harness.ray_settings import ray_choice
from lorascope.harness.secrets import describe_exception
from lorascope.harness.store import IN_FLIGHT, INTERRUPTED, RunStore, SharedCache
from lorascope.harness.summary import RunSummary


def decide(plan: Plan, store: RunStore | None, cache: SharedCache | None, *, fresh: bool, epoch: int | None,
           summary: RunSummary) -> None:
    """Set each unit's action from what the store and the cache already hold."""
    min_epoch = epoch if (fresh and epoch is not None) else 0
    done = store.succeeded_fingerprints(min_epoch) if store else set()
    # a stored image that is missing or no longer matches its sha256 is not "stored": it is
    # restored from the shared cache, or generated again (and its cost counted)
    damaged = store.damaged(done) if store else {}
    done -= set(damaged)
    leftovers = store.leftovers() if store else {}
    cached = set()
    if cache is not None and not fresh:
        cached = cache.lookup_many(u.fingerprint for u in plan.units if u.request.seed is not None and u.fingerprint not in done)
    # the cache's copy of a damaged image may be the same (hard-linked) file: check its bytes
    cached -= {fp for fp in damaged if fp in cached and cache is not None and cache.get(fp) is None}
    _note_damaged(plan, damaged, cached, summary)
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


def _note_damaged(plan: Plan, damaged: dict[str, str], cached: set[str], summary: RunSummary) -> None:
    """One note per provider: how many stored images were damaged and what happens to them."""
    by_provider: dict[str, list[str]] = defaultdict(list)
    for unit in plan.units:
        if unit.fingerprint in damaged:
            by_provider[unit.provider].append(unit.fingerprint)
    for provider, fps in by_provider.items():
        from_cache = sum(1 for fp in fps if fp in cached)
        again = len(fps) - from_cache
        example = damaged[fps[0]]
        summary.notes.append(
            f"{provider}: {len(fps)} stored image(s) missing or damaged (e.g. {example}): "
            + ", ".join(part for part in (
                f"{from_cache} restored from the shared cache" if from_cache else "",
                f"{again} generated again (cost counted)" if again else "") if part))


def estimate_unit(plan: Plan, unit: Unit, summary: RunSummary) -> Estimate | None:
    """Set and return the unit's estimate; a failure is advice lost, noted once per provider."""
    try:
        unit.estimate = plan.instances[unit.provider].estimate(unit.request)
    except Exception as exc:
        note = f"{unit.provider}: estimate failed: {describe_exception(exc)}"
        if note not in summary.notes:
            summary.notes.append(note)
        return None
    return unit.estimate


def estimate(plan: Plan, summary: RunSummary, ray: str | None = None) -> None:
    """Cost and time of the units to send. Time is divided by the provider's concurrency, or
    for a provider that runs on Ray (`ray`: `--ray` / `--ray-address`, or its own settings) by
    its workers (one when `workers` is not set: the cluster is not asked in a dry run)."""
    seconds: dict[str, float] = defaultdict(float)
    for unit in plan.units:
        if unit.action != "send" or estimate_unit(plan, unit, summary) is None:
            continue
        ps = summary.providers[unit.provider]
        ps.estimated_cost += unit.estimate.cost.usd or 0.0
        if unit.estimate.cost.usd is None:
            ps.unpriced += 1
        seconds[unit.provider] += unit.estimate.seconds
    for name, total in seconds.items():
        choice = ray_choice(plan.instances[name].config, ray) if name in plan.instances else None
        if choice is None:
            lanes = plan.concurrency.get(name, 1)
        else:
            lanes = choice.workers or 1
            if not choice.workers and summary.dry_run:
                summary.notes.append(f"{name}: Ray workers not set (one per GPU or CPU slot of the cluster): "
                                     "the time estimate assumes one; set workers: N for a closer one")
        summary.providers[name].estimated_seconds = total / max(1, lanes)
