"""The run report with votes: each LoRA shows its human strengths beside the curves, and a
"which metric matches your eye" table; without votes the report has neither."""

from __future__ import annotations

import re
import sqlite3

from lorascope.evals.results import write_scores
from lorascope.harness.store import RunStore
from lorascope.reports.service import write_run_report

from review_helpers import cast_votes


def _score(run) -> None:
    with RunStore.open(run) as store:
        frame = store.results_frame()
    scale = frame["scale"].fillna(0.0)
    rows = [(c, int(i), s, 0.8 - 0.2 * x, None, None, 0.1 * x, 0.3 * x, None)
            for c, i, s, x in zip(frame["cell_id"], frame["image_index"], frame["image_sha256"], scale)]
    conn = sqlite3.connect(run / "run.db")
    write_scores(conn, "tiny", "tiny-random", rows)
    conn.close()


def _section(html: str, anchor: str) -> str:
    m = re.search(rf'<section[^>]*id="{anchor}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"no section #{anchor}"
    return m.group(1)


def test_report_shows_strengths_and_agreement_when_the_run_has_votes(review_run):
    _score(review_run)
    before = write_run_report(review_run).read_text()
    assert 'id="votes"' not in before and "Human votes" not in before
    cast_votes(review_run, "ann", 24, prefer_high=True)
    html = write_run_report(review_run).read_text()
    votes = _section(html, "votes")
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">([^<]+)</td>", votes)
    assert rows[-1] == ("CLIPScore", "0.0%")  # best agreement first
    assert {("LoRA effect", "100.0%"), ("style shift", "100.0%")} <= set(rows)
    paint = _section(html, "lora-paint")
    assert "Human votes · fakeasync" in paint
    preferred = re.findall(r'<tr class="preferred"><td>([^<]+)</td>', paint)
    assert preferred == ["scale 1"]
    assert re.search(r"<td>no LoRA</td><td class=\"num\">\+0\.00 \[\+0\.00, \+0\.00\]</td>", paint)
    assert "human-preferred scale 1" in paint and "rater(s): ann" in paint
    assert 'aria-label="Human votes: strength vs scale' in paint  # drawn beside the automatic curves
    assert 'aria-label="style shift' in paint or "CLIPScore" in paint


def test_report_recommends_by_the_votes_when_recommend_chose_human(review_run):
    """`recommend --objective human` saved: the report's recommendations are the votes' scales
    and its summary says the votes chose (it used to fall back to the default rule's label)."""
    from typer.testing import CliRunner

    from lorascope.cli import app

    _score(review_run)
    cast_votes(review_run, "ann", 24, prefer_high=True)
    r = CliRunner().invoke(app, ["recommend", str(review_run), "--objective", "human"], terminal_width=250)
    assert r.exit_code == 0, r.output
    html = write_run_report(review_run).read_text()
    assert "<dt>Recommended by</dt><dd>human votes: the scale with the highest Bradley-Terry strength" in html
    paint = _section(html, "lora-paint")
    reasons = re.findall(r'<td class="reason">([^<]*)</td>', paint)
    assert reasons and all("Bradley-Terry strength" in reason for reason in reasons)
