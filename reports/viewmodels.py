"""What the templates display, already computed and formatted.

The renderer turns a run's store and eval outputs into these models; templates only loop
over them and print strings. No template computes a metric, picks a recommendation or
formats a number, so what a report shows is testable in Python without a browser.
Every string here may hold untrusted text (prompts, catalogue notes, provider messages):
templates print it through Jinja2 autoescaping, never with `|safe`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lorascope.reports.human import AgreementRow, HumanView


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Figure(_View):
    """One provider's image in one grid cell (or its absence, with the reason)."""

    provider: str
    status: Literal["ok", "failed", "missing", "absent"]
    thumb: str | None = None  # URL relative to the report file
    full: str | None = None  # URL of the full-size image, relative to the report file
    thumb_width: int | None = None
    thumb_height: int | None = None
    alt: str = ""
    caption: list[str] = Field(default_factory=list)  # formatted numbers, e.g. "CLIP 0.71"
    reason: str | None = None  # why it failed / is missing
    nsfw: bool = False
    recommended: bool = False  # this column is this provider's recommended scale
    title: str = ""
    sha: str = ""  # the image's content hash, when known


class GridColumn(_View):
    key: str  # the scale axis key: "baseline", "0.8", a stack's "0.5+0.8"
    label: str
    scale: float | None  # None: the no-LoRA baseline
    catalogue_recommended: bool = False
    run_recommended_by: list[str] = Field(default_factory=list)  # providers


class GridValue(_View):
    """One value of a grid axis: `key` goes into the URL fragment, `label` is shown,
    `title` is the long form (a prompt's text)."""

    key: str
    label: str
    title: str = ""


class GridAxis(_View):
    """An axis the reader can put on rows, on columns, fix to one value or stack ("all"):
    scale, provider, prompt, seed, one per provider option (`opt:NAME`), the LoRA (`lora`,
    the run-wide grid only), and strength/image where a run has them."""

    id: str
    label: str
    values: list[GridValue]


class GridImage(_View):
    """One generation the grid can show. `at` holds one value index per axis, in the order
    of `GridData.axes`; -1 means "any value": a no-LoRA baseline belongs to every LoRA, a
    provider without an option axis to every value of it."""

    at: list[int]
    status: Literal["ok", "failed", "missing"]
    provider: str  # the provider, with its options when it sweeps some
    thumb: str | None = None
    full: str | None = None
    w: int | None = None
    h: int | None = None
    sha: str = ""  # the image's content hash (sha256), shown as data-sha
    title: str = ""
    caption: list[str] = Field(default_factory=list)
    cost: str = ""
    reason: str = ""
    nsfw: bool = False
    rec: bool = False  # this provider's run recommends this LoRA at this scale


class GridViewState(_View):
    """A view of a grid: axes on rows and columns (each a product, outermost first) and, for
    every other axis, one value key or "*" (all, side by side in each cell)."""

    rows: list[str]
    cols: list[str]
    fixed: dict[str, str]


class GridSection(_View):
    """One grid on the page: a LoRA's (its `lora` axis locked to it) or the run's (`lora`
    free). `marks` badge the scale columns: scale key -> labels ("catalogue rec.", ...)."""

    anchor: str
    locked: dict[str, str] = Field(default_factory=dict)
    default: GridViewState
    marks: dict[str, list[str]] = Field(default_factory=dict)


class GridInput(_View):
    """An image-conditioned run's input picture (the run's stored copy), shown at the head of
    the grid rows (or columns) that start from it. `status` is "missing" with a `reason`
    when the copy cannot be shown (damaged, or the run is not scored yet)."""

    status: Literal["ok", "missing"]
    thumb: str | None = None
    full: str | None = None
    w: int | None = None
    h: int | None = None
    sha: str = ""  # the stored copy's sha256 (the run's `run_inputs` record), shown as data-sha
    size: str = ""  # "64×64 px"
    title: str = ""
    reason: str = ""
    mask: "GridInput | None" = None  # inpaint: the mask the images were repainted under (white repaints)


class GridData(_View):
    """Everything report.js needs to build every grid: one JSON blob in the page. `inputs`
    maps each value key of the `init_image` ("image") axis to its input picture."""

    axes: list[GridAxis]
    images: list[GridImage]
    sections: list[GridSection]
    inputs: dict[str, GridInput] = Field(default_factory=dict)


class Tick(_View):
    pos: float
    label: str


class PlotPoint(_View):
    x: float
    y: float
    title: str


class PlotSeries(_View):
    label: str
    color: str
    line: str  # SVG path data
    band: str  # SVG path data of the 95% CI band ("" when there is none)
    points: list[PlotPoint]


class PlotMarker(_View):
    """A vertical (recommended scale) or horizontal (baseline level) reference line."""

    x1: float
    y1: float
    x2: float
    y2: float
    color: str
    dash: str
    label: str
    label_x: float
    label_y: float
    anchor: Literal["start", "end"] = "start"


class PlotView(_View):
    title: str
    y_label: str
    x_label: str = "LoRA scale"
    width: int
    height: int
    plot_left: float
    plot_top: float
    plot_right: float
    plot_bottom: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    series: list[PlotSeries]
    markers: list[PlotMarker]
    empty_reason: str | None = None
    note: str = ""
    legend: str = ""


class RecommendationView(_View):
    provider: str
    scale: str
    catalogue_scale: str
    agrees: bool
    reason: str


class PairView(_View):
    """A (scale, strength) pair for an image-to-image run (evals.recommend_pairs)."""

    provider: str
    scale: str
    strength: str
    reason: str


class LoraSection(_View):
    id: str
    anchor: str
    name: str
    kind: str = ""
    is_stack: bool = False
    triggers: list[str] = Field(default_factory=list)
    style_prompt: str = ""
    notes: str = ""
    license: str = ""
    catalogue_scale: str = ""  # "0.7 (range 0.5-0.8)"
    providers: list[str]
    columns: list[GridColumn]
    grid: GridSection
    recommendations: list[RecommendationView] = Field(default_factory=list)
    pairs: list[PairView] = Field(default_factory=list)
    plots: list[PlotView] = Field(default_factory=list)
    human: list[HumanView] = Field(default_factory=list)
    #: img2img/inpaint: the input pictures this LoRA's images start from (shown at its head)
    inputs: list[Figure] = Field(default_factory=list)


class KeyValue(_View):
    key: str
    value: str


class ProviderStatsRow(_View):
    provider: str
    endpoint: str
    model_version: str
    images: str
    failed: str
    failure_rate: str
    latency_min: str
    latency_median: str
    latency_p95: str
    queue_median: str  # the provider's own figures (median), where it reports them
    inference_median: str
    cost_total: str
    cost_per_image: str
    cost_per_mp: str
    cost_source: str


class ProblemRow(_View):
    """A failed or NSFW-flagged cell."""

    kind: Literal["failed", "nsfw"]
    provider: str
    lora: str
    scale: str
    prompt_id: str
    seed: str
    reason: str


class CodeSnippet(_View):
    title: str
    language: str
    code: str


class Banner(_View):
    """A plain statement the reader must see first (e.g. random-weight demo models)."""

    level: Literal["info", "warning"]
    title: str
    paragraphs: list[str]
    snippets: list[CodeSnippet] = Field(default_factory=list)


class RunReportView(_View):
    title: str
    generated_at: str
    banners: list[Banner] = Field(default_factory=list)
    summary: list[KeyValue]
    scored: bool
    score_note: str = ""
    providers: list[str]
    sections: list[LoraSection]
    run_grid: GridSection | None = None  # every LoRA at once (rows: LoRA)
    grid: GridData
    provider_stats: list[ProviderStatsRow]
    problems: list[ProblemRow]
    agreement: list[AgreementRow] = Field(default_factory=list)
    has_votes: bool = False


class CompareMetric(_View):
    name: str
    baseline: str
    current: str
    delta: str


class CompareItem(_View):
    """One side of a before/after pair as the compare view shows it, large."""

    full: str
    label: str
    sha: str = ""
    facts: list[str] = Field(default_factory=list)


class ComparePairs(_View):
    """The page's JSON blob: baseline and current of every cell that has both images."""

    pairs: list[list[CompareItem]] = Field(default_factory=list)


class CompareCell(_View):
    verdict: str  # as evals wrote it: "drift", "regressed", "same", ...
    drifted: bool
    provider: str
    lora: str
    scale: str
    prompt_id: str
    prompt: str
    seed: str
    reasons: list[str]
    baseline: Figure
    current: Figure
    metrics: list[CompareMetric]
    inputs: str = ""  # image-conditioned cells: "image photo, strength 0.3"
    pair: int | None = None  # index into CompareReportView.pairs (both sides have an image)


class CompareReportView(_View):
    title: str
    generated_at: str
    summary: list[KeyValue]  # baseline and current folders, the overall verdict, counts
    drifted: list[CompareCell]  # shown first
    unchanged: list[CompareCell]
    banners: list[Banner] = Field(default_factory=list)
    pairs: ComparePairs = Field(default_factory=ComparePairs)
