"""`lorascope demo` scores with a random-weight preference scorer and its report draws the curve."""

from __future__ import annotations

from pathlib import Path


def test_demo_report_has_a_labelled_preference_scorer_curve(tmp_path: Path):
    from lorascope.reports.demo import DEMO_LORAS, run_demo

    lines: list[str] = []
    result = run_demo(tmp_path / "demo", progress=False, echo=lines.append)
    assert any("hpsv2:tiny-random (random weights)" in line for line in lines), lines
    from lorascope.reports.build_run import build_run_view
    from lorascope.reports.sources import load_run_data

    view = build_run_view(load_run_data(result.run_dir))
    for lora_id, *_ in DEMO_LORAS:
        section = next(s for s in view.sections if s.id == lora_id)
        (plot,) = [p for p in section.plots if p.title.startswith("hpsv2:tiny-random vs scale")]
        assert "RANDOM WEIGHTS" in plot.note and len(plot.series[0].points) == 4  # 4 demo scales
    html = result.report.read_text(encoding="utf-8")
    assert "hpsv2:tiny-random vs scale (mean, 95% CI)" in html
    assert '<p class="plot-note"><b>hpsv2:tiny-random: RANDOM WEIGHTS, the numbers carry no meaning</b></p>' in html
    assert "hpsv2:tiny-random-v1 (random weights)" in html  # the summary's Scorers line
