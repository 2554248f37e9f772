"""What the renderer reads: a run's rows plus the numbers the evals stage computed.

`lorascope.reports.sources` fills these from a run folder (the harness store, the evals outputs);
tests build them directly. Keeping this boundary explicit means the renderer never
reaches into the store's tables or re-derives an eval metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lorascope.evals.compare import CHANGED_VERDICTS as EVALS_CHANGED_VERDICTS
from lorascope.registry.models import LoraEntry
from lorascope.reports.human import HumanFit, MetricAgreementData

#: Statuses the harness gives a generation that produced its image.
OK_STATUSES = frozenset({"ok", "done", "succeeded", "success", "completed", "stored", "cached"})

#: The verdicts (evals.compare) that mean a cell changed, worst first: the comparison
#: report shows these cells first, in this order (the order `lorascope compare` lists them).
CHANGED_VERDICTS = {verdict: rank for rank, verdict in enumerate(EVALS_CHANGED_VERDICTS)}


class ScaleAggregate(BaseModel):
    """Mean of one metric over prompts and seeds for (lora, provider, scale), with its 95% CI.
    `lora == ""` is the no-LoRA baseline (scale None)."""

    model_config = ConfigDict(frozen=True)

    lora: str
    provider: str
    scale: float | None
    metric: str
    mean: float
    #: the denoising strength of an image-to-image strength sweep (each kept apart); None otherwise
    strength: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)

    lora: str
    provider: str
    scale: float | None  # None: no scale met the rule
    reason: str = ""
    strength: float | None = None  # a strength sweep: the strength the scale was decided at


class PairChoice(BaseModel):
    """An image-to-image run's (scale, strength) pair for one LoRA and provider
    (evals.recommend_pairs)."""

    model_config = ConfigDict(frozen=True)

    lora: str
    provider: str
    scale: float | None  # None: no strength had a faithful scale
    strength: float | None
    reason: str = ""


class ScorerInfo(BaseModel):
    """A plugin scorer whose numbers the run holds (columns `<name>`, `<name>_gain`)."""

    name: str
    label: str
    model_id: str
    random_weights: bool = False


class ProviderStats(BaseModel):
    """Latency and cost per provider (seconds, USD); None where nothing was measured."""

    model_config = ConfigDict(frozen=True)

    provider: str
    images: int
    failed: int
    failure_rate: float | None = None
    latency_min: float | None = None
    latency_median: float | None = None
    latency_p95: float | None = None
    #: medians of what the provider itself reported (docs/providers.md), beside our wall time
    queue_median: float | None = None
    inference_median: float | None = None
    cost_total: float | None = None
    cost_per_image: float | None = None
    cost_per_mp: float | None = None
    cost_source: str = ""


class RunData(BaseModel):
    """Everything one run report shows."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_dir: Path
    results: Any  # pandas.DataFrame, one row per generation (results.parquet's columns)
    suite_name: str = ""
    suite: dict[str, Any] = Field(default_factory=dict)  # the suite as loaded (for how-to snippets)
    loras: dict[str, LoraEntry] = Field(default_factory=dict)
    scored: bool = False
    score_model: str = ""
    aggregates: list[ScaleAggregate] = Field(default_factory=list)
    recommendations: list[Recommendation] = Field(default_factory=list)
    pairs: list[PairChoice] = Field(default_factory=list)  # image-to-image runs with a strengths axis
    #: which rule chose the recommendations (the default rule or the user's --objective)
    recommended_by: str = ""
    #: plugin scorers stored for this run (evals.scorer_store), each drawn as a curve
    scorers: list[ScorerInfo] = Field(default_factory=list)
    provider_stats: list[ProviderStats] = Field(default_factory=list)
    wall_time_s: float | None = None
    human: list[HumanFit] = Field(default_factory=list)  # votes fitted (reports.human); empty: no votes
    agreement: list[MetricAgreementData] = Field(default_factory=list)


class CompareMetricData(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    baseline: float | None = None
    current: float | None = None
    delta: float | None = None


class CompareSide(BaseModel):
    """One side of a compared cell: the stored image (absolute path) and its status."""

    model_config = ConfigDict(frozen=True)

    image: Path | None = None
    sha256: str | None = None
    status: str = ""
    error: str = ""
    latency_s: float | None = None
    cost_usd: float | None = None


class CompareCellData(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider: str
    lora: str = ""
    scale: str = ""
    prompt_id: str = ""
    prompt: str = ""
    seed: str = ""
    verdict: str
    reasons: list[str] = Field(default_factory=list)
    baseline: CompareSide
    current: CompareSide
    metrics: list[CompareMetricData] = Field(default_factory=list)
    #: an image-conditioned cell's input and strength, as text ("image photo, strength 0.3")
    inputs: str = ""

    @property
    def where(self) -> str:
        """The cell in words, for captions and the viewer."""
        return (f"{self.provider}, {self.lora or 'no LoRA'} {self.scale}, {self.prompt_id}, seed {self.seed}"
                + (f", {self.inputs}" if self.inputs else ""))

    @property
    def drifted(self) -> bool:
        """Changed in any way (regressed, drifted, missing or new), from the verdict."""
        return self.verdict in CHANGED_VERDICTS


class CompareData(BaseModel):
    """A baseline-vs-run comparison as the evals stage decided it (compare.json)."""

    baseline_dir: Path
    run_dir: Path
    overall: str
    settings: dict[str, Any] = Field(default_factory=dict)
    cells: list[CompareCellData]
    random_weights: bool = False
