"""What a run did, per provider: the counts the CLI prints, tests assert on and the exit
code comes from. Filled in by the planner (totals), the decider (what is planned) and the
executor (what happened)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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


class WorkerSummary(BaseModel):
    """One Ray worker (an actor holding one pipeline): where it ran and what it did."""

    provider: str
    where: str  # host, pid and GPU ids
    generations: int = 0  # succeeded or failed here (a lost worker's unfinished ones are not counted)
    cells: int = 0
    batches: int = 0
    lora_loads: int = 0  # LoRA files read by the loader on this worker
    file_loads: dict[str, int] = Field(default_factory=dict)  # file -> times loaded here
    busy_s: float = 0.0  # seconds inside the pipeline calls
    wall_s: float = 0.0  # seconds from the workers' start to this one's last batch
    lost: str | None = None  # why it stopped early (killed actor, lost node), else None


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
    #: Ray runs only: per worker, keyed by its name (`diffusers/w0`)
    workers: dict[str, WorkerSummary] = Field(default_factory=dict)

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
