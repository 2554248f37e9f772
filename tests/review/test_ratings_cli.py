"""`lorascope ratings RUN | export | import`: what the user sees and what lands in run.db."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.evals.results import write_scores
from lorascope.harness.store import RunStore

from review_helpers import cast_votes, rows


def test_export_then_import_into_a_fresh_copy_reproduces_the_table(review_run, tmp_path):
    from lorascope.evals.session import copy_run

    fresh = copy_run(review_run, tmp_path / "fresh")  # before any vote
    cast_votes(review_run, "ann", 12)
    cast_votes(review_run, "bob", 5, prefer_high=False)
    runner = CliRunner()
    out = tmp_path / "votes.jsonl"
    r = runner.invoke(app, ["ratings", "export", str(review_run), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported 17 vote(s)" in r.output
    lines = out.read_text().splitlines()
    assert len(lines) == 17 and json.loads(lines[0])["vote_id"] == "ann-0"
    r = runner.invoke(app, ["ratings", "import", str(fresh), str(out)])
    assert r.exit_code == 0, r.output
    assert "imported 17 vote(s)" in r.output and "0 were already there" in r.output
    assert rows(fresh) == rows(review_run)
    again = runner.invoke(app, ["ratings", "import", str(fresh), str(out)])
    assert again.exit_code == 0 and "imported 0 vote(s)" in again.output and "17 were already there" in again.output
    assert rows(fresh) == rows(review_run)


def test_a_bad_votes_file_lists_every_problem_and_imports_nothing(review_run, tmp_path):
    good = cast_votes(review_run, "ann", 2)
    conn = sqlite3.connect(review_run / "run.db")
    conn.execute("DELETE FROM ratings")
    conn.commit()
    conn.close()
    bad = good[1].model_dump()
    bad.update(vote_id="x2", choice="both", left_sha256="nothex")
    foreign = good[0].model_dump()
    foreign.update(vote_id="x3", right_sha256="f" * 64)
    path = tmp_path / "votes.jsonl"
    other = "right" if good[0].choice != "right" else "left"  # the same id, another answer
    path.write_text("\n".join([json.dumps(good[0].model_dump()), "{not json", json.dumps(bad), json.dumps(foreign),
                               json.dumps({**good[0].model_dump(), "choice": other})]) + "\n")
    r = CliRunner().invoke(app, ["ratings", "import", str(review_run), str(path)])
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "nothing imported" in text
    assert f"{path.name}:2: not JSON" in text.replace(str(path.parent) + "/", "")
    assert "vote 'x2': choice" in text and "vote 'x2': left_sha256" in text
    assert "vote 'x3': right_sha256: image ffffffffffff" in text and "is not in this run" in text
    assert "appears twice with different content" in text
    assert rows(review_run) == []


def test_ratings_prints_strengths_preferred_scale_and_metric_agreement(review_run):
    cast_votes(review_run, "ann", 24, prefer_high=True)
    with RunStore.open(review_run) as store:
        frame = store.results_frame()
    # scores: lora_effect grows with the scale (agrees with this rater), clip_score falls (disagrees)
    scale = frame["scale"].fillna(0.0)
    rows_ = [(c, int(i), s, 0.8 - 0.2 * x, None, None, 0.1 * x, 0.3 * x, None)
             for c, i, s, x in zip(frame["cell_id"], frame["image_index"], frame["image_sha256"], scale)]
    conn = sqlite3.connect(review_run / "run.db")
    write_scores(conn, "tiny", "tiny-random", rows_)
    conn.close()
    r = CliRunner().invoke(app, ["ratings", str(review_run), "--resamples", "100"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "human-preferred scale: 1 " in r.output
    out = " ".join(r.output.split())
    assert "paint · fakeasync" in out and "ink · fakeasync" in out
    table = json.loads((review_run / "ratings.json").read_text())
    agreement = {a["metric"]: a for a in table["agreement"]}
    assert agreement["lora_effect"]["share"] == 1.0 and agreement["clip_score"]["share"] == 0.0
    assert agreement["style_shift"]["share"] == 1.0  # baseline's shift counts as 0
    assert all(f["preferred_scale"] == 1.0 for f in table["fits"])
    assert "LoRA effect" in out and "100%" in out


def test_ratings_without_votes_says_how_to_get_some(review_run):
    r = CliRunner().invoke(app, ["ratings", str(review_run)])
    assert r.exit_code == 2 and "lorascope review" in r.output


def test_recommend_objective_human_uses_the_votes_and_writes_the_catalogue(review_run, tmp_path):
    from tests.helpers.harness_fakes import CATALOGUE

    runner = CliRunner()
    none = runner.invoke(app, ["recommend", str(review_run), "--objective", "human"])
    assert none.exit_code == 2 and "lorascope review" in none.output
    cast_votes(review_run, "ann", 24, prefer_high=False)  # this rater likes the lowest scale best
    r = runner.invoke(app, ["recommend", str(review_run), "--objective", "human"], terminal_width=250)
    assert r.exit_code == 0, r.output
    saved = json.loads((review_run / "recommend.json").read_text())
    by_lora = {rec["lora"]: rec for rec in saved["recommendations"]}
    # people preferred no LoRA over every scale: no recommendation, and the reason says so
    assert all(rec["scale"] is None and "preferred no LoRA" in rec["reason"] for rec in by_lora.values())
    conn = sqlite3.connect(review_run / "run.db")
    conn.execute("DELETE FROM ratings")
    conn.commit()
    conn.close()
    cast_votes(review_run, "ann", 24, prefer_high=True)
    catalogue = tmp_path / "loras.yaml"
    catalogue.write_text(CATALOGUE)
    r = runner.invoke(app, ["recommend", str(review_run), "--objective", "human", "--write", "--catalogue",
                            str(catalogue)], terminal_width=250)
    assert r.exit_code == 0, r.output
    saved = json.loads((review_run / "recommend.json").read_text())
    assert {rec["lora"]: rec["scale"] for rec in saved["recommendations"]} == {"paint": 1.0, "ink": 1.0}
    assert all(rec["basis"] == "human" for rec in saved["recommendations"])
    assert saved["objective_expr"] == "human" and saved["objective"].startswith("objective: human")
    text = catalogue.read_text()
    assert "recommended: 1.0" in text and "human votes (lorascope review)" in text
