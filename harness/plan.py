"""Planning: a suite's grid -> provider instances -> one `Unit` per distinct fingerprint.

Every validation problem is collected and raised at once (`GridInvalid`) before anything is
written or sent; cells that ask the same thing share one unit (one generation)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from lorascope.harness.errors import ProviderError
from lorascope.harness.fingerprint import fingerprint as make_fingerprint
from lorascope.harness.grid import Cell, Grid, ProviderSetup, expand
from lorascope.harness.models import Estimate, GenerationRequest
from lorascope.harness.suite import Suite, SuiteError

#: Concurrency when the suite does not set one: fal accounts start with a limit of 2.
DEFAULT_CONCURRENCY = {"fal": 2}


class GridInvalid(SuiteError):
    """Requests the providers would refuse; nothing was sent."""


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
