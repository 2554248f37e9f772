"""The human-votes part of the run report: what it reads (fitted strengths and metric
agreement from evals.ratings), and what it shows (formatted rows beside each LoRA's curves,
and the "which metric matches your eye" table).

Kept in one module so the run report's other inputs and views stay as they were; a run
without votes gets empty lists and the report looks exactly as before. A strength sweep gets
one table and one plot per denoising strength (the fits are per strength, evals.ratings); the
strength goes into the existing heading text ("fal · strength 0.6"), not new markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Bootstrap resamples for the report's intervals (the CLI's default is 1,000; a report
#: is re-rendered often, and 400 resamples move a 95 % bound by about a hundredth).
REPORT_RESAMPLES = 400


# ---- inputs ------------------------------------------------------------------------------


class HumanScale(BaseModel):
    """One scale's Bradley-Terry strength from votes; scale '' = no LoRA."""

    model_config = ConfigDict(frozen=True)

    scale: str
    strength: float | None = None  # log-strength relative to the fit's reference scale
    low: float | None = None
    high: float | None = None
    wins: int = 0
    losses: int = 0
    ties: int = 0
    p_best: float | None = None


class HumanFit(BaseModel):
    """The votes on one (LoRA, provider), at one denoising strength in a strength sweep, fitted."""

    model_config = ConfigDict(frozen=True)

    lora: str
    provider: str
    strength: float | None = None
    reference: str
    decided: int
    ties: int
    skips: int
    raters: list[str] = Field(default_factory=list)
    preferred: str | None = None
    preferred_scale: float | None = None
    scales: list[HumanScale] = Field(default_factory=list)


class MetricAgreementData(BaseModel):
    """How often an automatic metric prefers the image people chose."""

    model_config = ConfigDict(frozen=True)

    metric: str
    label: str
    agree: int
    disagree: int
    undecided: int
    share: float | None = None
    low: float | None = None
    high: float | None = None


def human_inputs(run_dir: Path, frame: "pd.DataFrame", scored: bool) -> dict[str, Any]:
    """RunData's `human` and `agreement` fields for a run folder (empty without votes)."""
    from lorascope.evals.ratings import build_slots, fit_all, metric_agreement
    from lorascope.harness.ratings import Ratings
    from lorascope.reports import fmt

    with Ratings.open(run_dir) as ratings:
        votes = ratings.votes()
    if not votes:
        return {"human": [], "agreement": []}
    fits = []
    for fit in fit_all(votes, build_slots(frame), resamples=REPORT_RESAMPLES):
        fits.append(HumanFit(
            lora=fit.lora, provider=fit.provider, strength=fit.strength, reference=fit.reference, decided=fit.decided, ties=fit.ties,
            skips=fit.skips, raters=fit.raters, preferred=None if fit.preferred is None else fit.preferred.scale,
            preferred_scale=fit.preferred_scale,
            scales=[HumanScale(scale=s.scale, strength=fmt.number(s.strength), low=fmt.number(s.low),
                               high=fmt.number(s.high), wins=s.wins, losses=s.losses, ties=s.ties,
                               p_best=fmt.number(s.p_best)) for s in fit.strengths],
        ))
    agreement = []
    if scored:
        for a in metric_agreement(votes, frame):
            agreement.append(MetricAgreementData(
                metric=a.metric, label=a.label, agree=a.agree, disagree=a.disagree, undecided=a.undecided,
                share=fmt.number(a.share), low=fmt.number(a.low), high=fmt.number(a.high)))
    return {"human": fits, "agreement": agreement}


# ---- views -------------------------------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HumanRow(_View):
    scale: str  # "no LoRA", "scale 0.8"
    strength: str  # "+0.42 [+0.10, +0.80]"
    wins: int
    losses: int
    ties: int
    p_best: str
    preferred: bool = False


class HumanView(_View):
    """One provider's vote strengths for a LoRA, shown beside its automatic curves."""

    provider: str
    reference: str
    summary: str
    rows: list[HumanRow]


class AgreementRow(_View):
    metric: str
    share: str
    interval: str
    votes: int
    undecided: int


def _label(scale: str) -> str:
    return "no LoRA" if scale == "" else f"scale {scale}"


def _where(fit: HumanFit) -> str:
    """The heading's provider text: "fal", or "fal · strength 0.6" in a strength sweep."""
    return fit.provider if fit.strength is None else f"{fit.provider} · strength {fit.strength:g}"


def _by_strength(fits: list[HumanFit], lora: str) -> list[HumanFit]:
    """A LoRA's fits, providers in order and, within each, strengths ascending."""
    mine = [f for f in fits if f.lora == lora]
    return sorted(mine, key=lambda f: (f.provider, -1.0 if f.strength is None else f.strength))


def human_views(fits: list[HumanFit], lora: str) -> list[HumanView]:
    from lorascope.reports import fmt

    out = []
    for fit in _by_strength(fits, lora):
        best = next((s for s in fit.scales if s.scale == fit.preferred), None)
        if best is None:
            verdict = "no decided votes yet"
        elif fit.preferred_scale is None and fit.preferred == "":
            verdict = f"people preferred no LoRA (P(best) {fmt.percent(best.p_best)})"
        else:
            verdict = f"human-preferred {_label(best.scale)} (P(best) {fmt.percent(best.p_best)})"
        summary = (f"{verdict}; {fit.decided} decided vote(s), {fit.ties} tie(s), {fit.skips} skip(s); "
                   f"rater(s): {', '.join(fit.raters)}")
        rows = [HumanRow(
            scale=_label(s.scale),
            strength=(f"{fmt.signed(s.strength, '+.2f')} [{fmt.signed(s.low, '+.2f')}, {fmt.signed(s.high, '+.2f')}]"
                      if s.strength is not None else fmt.num(None)),
            wins=s.wins, losses=s.losses, ties=s.ties, p_best=fmt.percent(s.p_best),
            preferred=s.scale == fit.preferred,
        ) for s in fit.scales]
        out.append(HumanView(provider=_where(fit), reference=_label(fit.reference), summary=summary, rows=rows))
    return out


def agreement_rows(agreement: list[MetricAgreementData]) -> list[AgreementRow]:
    from lorascope.reports import fmt

    ordered = sorted(agreement, key=lambda a: -(a.share if a.share is not None else -1.0))
    return [AgreementRow(metric=a.label, share=fmt.percent(a.share),
                         interval=f"{fmt.percent(a.low)} – {fmt.percent(a.high)}",
                         votes=a.agree + a.disagree, undecided=a.undecided) for a in ordered]


def human_plots(fits: list[HumanFit], lora: str, catalogue_x: float | None = None) -> list:
    """SVG plots for a LoRA with votes: Bradley-Terry strength vs scale per provider, 95%
    interval as the band, the no-LoRA level at 0 (dashed), the preferred scale marked; drawn
    beside the automatic curves. One plot, or one per denoising strength in a strength sweep
    (strengths are never drawn as one curve). Empty when the LoRA has no votes."""
    from lorascope.reports.plots import Curve, CurvePoint, PlotSpec, build_plot, color_for

    mine = _by_strength(fits, lora)
    providers = sorted({f.provider for f in mine})
    out = []
    for strength in sorted({f.strength for f in mine}, key=lambda v: -1.0 if v is None else v):
        curves = []
        for fit in (f for f in mine if f.strength == strength):
            points = []
            for s in fit.scales:
                if s.scale == "" or s.strength is None:
                    continue
                try:
                    x = float(s.scale.split("+")[0])
                except ValueError:
                    continue
                points.append(CurvePoint(x=x, mean=s.strength, lo=s.low, hi=s.high, n=s.wins + s.losses + s.ties))
            if points:
                curves.append(Curve(label=fit.provider, color=color_for(providers.index(fit.provider)), points=points,
                                    recommended_x=fit.preferred_scale,
                                    baseline_y=0.0 if fit.reference == "" else None))
        if not curves:
            continue
        at = "" if strength is None else f" at strength {strength:g}"
        out.append(build_plot(PlotSpec(title=f"Human votes{at}: strength vs scale (95% CI)",
                                       y_label="strength vs no LoRA", curves=curves, catalogue_x=catalogue_x,
                                       value_format="{:+.2f}")))
    return out
