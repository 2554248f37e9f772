"""Damaged data is never trusted (issue 19): an image file overwritten or deleted is found by
its sha256 when scoring and comparing (never "same", never its old score), and `compare`
refuses two runs that do not answer the same question."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.evals.session import copy_run

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [*args], catch_exceptions=False)


def _image_of(run: Path, lora: str = "tiny-ink") -> tuple[str, str]:
    with sqlite3.connect(run / "run.db") as conn:
        return conn.execute(
            "SELECT i.path, i.sha256 FROM images i JOIN generations g ON g.id = i.generation_id "
            "JOIN cells c ON c.fingerprint = g.fingerprint WHERE c.lora = ? ORDER BY i.path LIMIT 1", (lora,)).fetchone()


def _compare(baseline: Path, run: Path, *extra: str):
    result = invoke("compare", str(baseline), str(run), "--clip", "tiny-random", "--no-progress", *extra)
    report = json.loads((run / "compare.json").read_text()) if (run / "compare.json").exists() else None
    return result, report


def test_an_overwritten_image_is_damaged_not_same_and_loses_its_score(tiny_run: Path, tmp_path: Path):
    other = copy_run(tiny_run, tmp_path / "other")
    first, _ = _compare(tiny_run, other)  # embeds every image once: the cache knows them by sha256
    assert first.exit_code == 0, first.output
    rel, sha = _image_of(other)
    (other / rel).unlink()
    (other / rel).write_bytes(b"\x89PNG garbage, not the stored picture")
    result, report = _compare(tiny_run, other)
    assert result.exit_code == 1, result.output
    damaged = [c for c in report["cells"] if c["verdict"] == "damaged"]
    assert report["overall"] == "regressed" and report["counts"]["damaged"] == len(damaged) >= 1
    assert all(c["reasons"][0].startswith("run image damaged: its bytes hash to") for c in damaged)
    assert not any(c["verdict"] == "same" and c.get("run_image", "").endswith(rel) for c in report["cells"])
    assert "damaged" in result.output

    score = invoke("score", str(other), "--clip", "tiny-random", "--no-progress")
    assert "damaged" in score.output and rel.split("/")[-1] in score.output.replace("\n", "")
    with sqlite3.connect(other / "run.db") as conn:
        assert conn.execute("SELECT count(*) FROM scores WHERE image_sha256 = ?", (sha,)).fetchone()[0] == 0


def test_a_deleted_baseline_image_is_damaged(tiny_run: Path, tmp_path: Path):
    base = copy_run(tiny_run, tmp_path / "base")
    other = copy_run(tiny_run, tmp_path / "other")
    rel, _ = _image_of(base, "tiny-neon")
    (base / rel).unlink()
    result, report = _compare(base, other)
    assert result.exit_code == 1, result.output
    (cell, *_) = [c for c in report["cells"] if c["verdict"] == "damaged"]
    assert cell["reasons"] == [f"baseline image missing: {base / rel}"]


def test_runs_of_different_suites_are_refused_unless_allowed(tiny_run: Path, tmp_path: Path):
    other = copy_run(tiny_run, tmp_path / "other")
    with sqlite3.connect(other / "run.db") as conn:
        text = conn.execute("SELECT value FROM meta WHERE key = 'suite_text'").fetchone()[0]
        renamed = text.replace("name: tiny-styles", "name: someone-elses-suite", 1)
        assert renamed != text
        conn.execute("UPDATE meta SET value = ? WHERE key = 'suite_text'", (renamed,))
        conn.execute("UPDATE meta SET value = 'someone-elses-suite' WHERE key = 'suite_name'")
    result, report = _compare(tiny_run, other)
    assert result.exit_code == 2 and report is None
    text = " ".join(result.output.split())
    assert "'tiny-styles'" in text and "'someone-elses-suite'" in text and "--allow-unrelated" in text
    allowed, report = _compare(tiny_run, other, "--allow-unrelated")
    assert allowed.exit_code == 0 and report["overall"] == "same"


def test_runs_with_no_cell_in_common_are_refused(tiny_run: Path, tmp_path: Path):
    other = copy_run(tiny_run, tmp_path / "other")
    with sqlite3.connect(other / "run.db") as conn:
        conn.execute("UPDATE cells SET seed = seed + 1000")
    (other / "results.parquet").unlink(missing_ok=True)
    result, _ = _compare(tiny_run, other)
    assert result.exit_code == 2, result.output
    assert "no cell in common" in " ".join(result.output.split())


def test_a_report_shows_a_damaged_image_as_damaged_not_its_old_thumbnail(tiny_run: Path, tmp_path: Path):
    other = copy_run(tiny_run, tmp_path / "other")
    first = invoke("report", str(other))
    assert first.exit_code == 0, first.output
    thumbs_before = {p.name for p in (other / "thumbs").glob("*.jpg")}
    rel, sha = _image_of(other)
    assert any(name.startswith(sha[:32]) for name in thumbs_before)  # its thumbnail exists and would be reused
    (other / rel).unlink()
    (other / rel).write_bytes(b"not the picture")
    again = invoke("report", str(other))
    assert again.exit_code == 0, again.output
    html = (other / "report.html").read_text()
    assert f"image file damaged: its bytes hash to" in html and Path(rel).name in html


def test_plugin_scorers_leave_a_damaged_image_unscored(tiny_run: Path):
    scorers = "clip,aesthetic:tiny-random"
    first = invoke("score", str(tiny_run), "--clip", "tiny-random", "--scorer", scorers, "--no-progress")
    assert first.exit_code == 0, first.output
    rel, sha = _image_of(tiny_run)
    (tiny_run / rel).unlink()
    (tiny_run / rel).write_bytes(b"overwritten")
    again = invoke("score", str(tiny_run), "--clip", "tiny-random", "--scorer", scorers, "--no-progress")
    assert "damaged" in again.output
    with sqlite3.connect(tiny_run / "run.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"scores", "scorer_scores"} <= tables
        for table in ("scores", "scorer_scores"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE image_sha256 = ?", (sha,)).fetchone()[0] == 0, table
