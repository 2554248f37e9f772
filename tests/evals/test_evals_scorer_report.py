"""The run report shows each stored scorer's curve (random weights labelled) and which
objective chose the recommendations."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lorascope.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "220"}


def test_report_draws_scorer_curves_and_names_the_objective(tiny_run: Path):
    from lorascope.reports.build_run import build_run_view
    from lorascope.reports.service import write_run_report
    from lorascope.reports.sources import load_run_data

    assert runner.invoke(app, ["score", str(tiny_run), "--clip", "tiny-random", "--scorer",
                               "clip,hpsv2:tiny-random,pickscore:tiny-random", "--no-progress"], env=ENV).exit_code == 0
    data = load_run_data(tiny_run)
    assert [s.name for s in data.scorers] == ["hpsv2", "pickscore"] and all(s.random_weights for s in data.scorers)
    assert data.recommended_by.startswith("default rule: smallest scale whose mean style shift")
    view = build_run_view(data)
    section = next(s for s in view.sections if s.id == "tiny-ink")
    titles = [(p.title, p.note) for p in section.plots]
    assert any(t.startswith("pickscore:tiny-random vs scale") and "RANDOM WEIGHTS" in n for t, n in titles), titles
    pick = next(p for p in section.plots if p.title.startswith("pickscore"))
    assert pick.series and len(pick.series[0].points) >= 2  # one point per scale
    assert any("no LoRA" in m.label for m in pick.markers)  # the baseline level

    out = runner.invoke(app, ["recommend", str(tiny_run), "--objective", "pickscore_gain",
                              "--constraint", "clip_score >= base_clip_score - 1"], env=ENV)
    assert out.exit_code == 0, out.output
    data = load_run_data(tiny_run)
    assert data.recommended_by == ("your objective: maximise pickscore_gain subject to clip_score >= "
                                   "base_clip_score - 1 (from recommend.json)")
    summary = {kv.key: kv.value for kv in build_run_view(data).summary}
    assert summary["Recommended by"] == data.recommended_by and "pickscore:tiny-random-v1" in summary["Scorers"]
    html = write_run_report(tiny_run).read_text(encoding="utf-8")
    assert "maximise pickscore_gain subject to clip_score &gt;= base_clip_score - 1" in html
    assert "hpsv2:tiny-random vs scale" in html
