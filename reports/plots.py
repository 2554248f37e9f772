"""SVG line plots (metric against LoRA scale) as geometry for the template.

Python maps data to pixel coordinates and formats the tick labels; the template only
writes `<path d=...>` and `<text>` elements. No plotting library and no JavaScript: the
plot is part of the one offline HTML file and prints as vector graphics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lorascope.reports.viewmodels import PlotMarker, PlotPoint, PlotSeries, PlotView, Tick

# Colour-blind-safe palette (Okabe-Ito), one colour per provider in a fixed order.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
CATALOGUE_COLOR = "#555555"


@dataclass(frozen=True)
class CurvePoint:
    x: float
    mean: float
    lo: float | None = None  # 95% CI bounds; None when there is one observation
    hi: float | None = None
    n: int = 0
    label: str | None = None  # the point's name in its tooltip (default: "scale X")


@dataclass
class Curve:
    label: str
    color: str
    points: list[CurvePoint]
    recommended_x: float | None = None
    baseline_y: float | None = None  # the no-LoRA level for this series, if meaningful


@dataclass
class PlotSpec:
    title: str
    y_label: str
    curves: list[Curve]
    catalogue_x: float | None = None
    value_format: str = "{:.3f}"
    x_label: str = "LoRA scale"
    width: int = 440
    height: int = 260
    margins: tuple[int, int, int, int] = field(default=(22, 16, 40, 56))  # top right bottom left
    note: str = ""  # a warning shown under the plot (the SVG title has room for a short title only)
    legend: str = "shaded: 95% CI; dashed: recommended scale; dotted grey: catalogue's"  # how to read it


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks and ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _fmt_tick(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


def build_plot(spec: PlotSpec) -> PlotView:
    top, right, bottom, left = spec.margins
    x0, x1 = float(left), float(spec.width - right)
    y0, y1 = float(top), float(spec.height - bottom)  # y0 is the top edge in pixels
    empty = dict(
        title=spec.title, y_label=spec.y_label, x_label=spec.x_label, width=spec.width, height=spec.height,
        plot_left=x0, plot_top=y0, plot_right=x1, plot_bottom=y1,
        x_ticks=[], y_ticks=[], series=[], markers=[], note=spec.note, legend=spec.legend,
    )
    xs = [p.x for c in spec.curves for p in c.points if math.isfinite(p.mean)]
    if not xs:
        return PlotView(**empty, empty_reason="no scored images at any scale yet")
    ys: list[float] = []
    for curve in spec.curves:
        for p in curve.points:
            for v in (p.mean, p.lo, p.hi):
                if v is not None and math.isfinite(v):
                    ys.append(v)
        if curve.baseline_y is not None and math.isfinite(curve.baseline_y):
            ys.append(curve.baseline_y)
    vertical_xs = [c.recommended_x for c in spec.curves if c.recommended_x is not None]
    if spec.catalogue_x is not None:
        vertical_xs.append(spec.catalogue_x)
    x_lo, x_hi = min(xs + vertical_xs), max(xs + vertical_xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    x_ticks = nice_ticks(x_lo, x_hi)
    y_ticks = nice_ticks(min(ys), max(ys))
    x_lo, x_hi = min(x_ticks[0], x_lo), max(x_ticks[-1], x_hi)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    if y_hi == y_lo:
        y_hi = y_lo + 1.0

    def px(x: float) -> float:
        return round(x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0), 2)

    def py(y: float) -> float:
        return round(y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0), 2)

    series: list[PlotSeries] = []
    markers: list[PlotMarker] = []
    for curve in spec.curves:
        pts = sorted((p for p in curve.points if math.isfinite(p.mean)), key=lambda p: p.x)
        if not pts:
            continue
        line = " ".join(f"{'M' if i == 0 else 'L'}{px(p.x)},{py(p.mean)}" for i, p in enumerate(pts))
        banded = [p for p in pts if p.lo is not None and p.hi is not None
                  and math.isfinite(p.lo) and math.isfinite(p.hi)]
        band = ""
        if len(banded) >= 2:
            upper = [f"{px(p.x)},{py(p.hi)}" for p in banded]
            lower = [f"{px(p.x)},{py(p.lo)}" for p in reversed(banded)]
            band = "M" + " L".join(upper + lower) + " Z"
        points = []
        for p in pts:
            ci = ""
            if p.lo is not None and p.hi is not None:
                ci = f" (95% CI {spec.value_format.format(p.lo)} to {spec.value_format.format(p.hi)})"
            points.append(PlotPoint(
                x=px(p.x), y=py(p.mean),
                title=f"{curve.label} {p.label or f'scale {p.x:g}'}: {spec.value_format.format(p.mean)}{ci}, n={p.n}",
            ))
        series.append(PlotSeries(label=curve.label, color=curve.color, line=line, band=band, points=points))
        if curve.recommended_x is not None:
            x = px(curve.recommended_x)
            right_half = x > (x0 + x1) / 2
            markers.append(PlotMarker(
                x1=x, y1=y0, x2=x, y2=y1, color=curve.color, dash="5 3",
                label=f"{curve.label} rec. {curve.recommended_x:g}", label_x=x - 3 if right_half else x + 3,
                label_y=y0 + 10 + 11 * len(markers), anchor="end" if right_half else "start",
            ))
        if curve.baseline_y is not None and math.isfinite(curve.baseline_y):
            y = py(curve.baseline_y)
            markers.append(PlotMarker(
                x1=x0, y1=y, x2=x1, y2=y, color=curve.color, dash="2 3",
                label=f"{curve.label} no LoRA", label_x=x1 - 4, label_y=y - 3, anchor="end",
            ))
    if spec.catalogue_x is not None:
        x = px(spec.catalogue_x)
        right_half = x > (x0 + x1) / 2
        markers.append(PlotMarker(
            x1=x, y1=y0, x2=x, y2=y1, color=CATALOGUE_COLOR, dash="1 3",
            label=f"catalogue {spec.catalogue_x:g}", label_x=x - 3 if right_half else x + 3, label_y=y1 - 4,
            anchor="end" if right_half else "start",
        ))
    return PlotView(
        **{**empty,
           "x_ticks": [Tick(pos=px(t), label=_fmt_tick(t)) for t in x_ticks],
           "y_ticks": [Tick(pos=py(t), label=_fmt_tick(t)) for t in y_ticks],
           "series": series, "markers": markers},
    )
