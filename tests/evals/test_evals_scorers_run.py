"""`lorascope score --scorer ...` on a real tiny run: one pass, stored per model, gains, re-score."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from lorascope.cli import app

runner = CliRunner()
ALL = "clip,aesthetic:tiny-random,hpsv2:tiny-random,pickscore:tiny-random"


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "220"})


def test_several_scorers_in_one_pass_stored_with_model_ids_and_gains(tiny_run: Path):
    out = invoke("score", str(tiny_run), "--clip", "tiny-random", "--scorer", ALL, "--no-progress")
    assert out.exit_code == 0, out.output
    assert "aesthetic-v2@random-seed" in out.output and "random weights" in out.output
    # CLIP's own output is unchanged: 28 rows, 24 distinct images embedded once
    assert "scored 28 image(s)" in out.output and "24 newly embedded" in out.output
    with sqlite3.connect(tiny_run / "run.db") as conn:
        stored = dict(conn.execute("SELECT scorer, model_id FROM scorer_runs"))
        counts = dict(conn.execute("SELECT scorer, count(*) FROM scorer_scores GROUP BY scorer"))
        assert conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 28
    assert stored == {"aesthetic": "aesthetic-v2@random-seed20261202+tiny-random-clip-v1",
                      "hpsv2": "hpsv2:tiny-random-v1", "pickscore": "pickscore:tiny-random-v1"}
    assert counts == {"aesthetic": 28, "hpsv2": 28, "pickscore": 28}

    frame = pd.read_parquet(tiny_run / "results.parquet")
    assert "style_shift" in frame.columns  # NaN on baseline rows, as before
    for col in ("clip_score", "aesthetic", "aesthetic_gain", "hpsv2_gain", "pickscore_gain"):
        assert col in frame.columns and frame[col].notna().all(), col
    base = frame[frame["lora"] == ""]
    assert (base["aesthetic_gain"] == 0).all()
    # a gain is the image's score minus its same-seed baseline's, computed here independently
    lora = frame[frame["lora"] != ""]
    for _, r in lora.iterrows():
        b = base[(base["provider"] == r["provider"]) & (base["prompt_id"] == r["prompt_id"]) & (base["seed"] == r["seed"])]
        assert r["pickscore_gain"] == np.float64(r["pickscore"] - b["pickscore"].iloc[0])
    # scale 0 of tiny-neon reproduces the baseline bytes: zero gain there
    zero = lora[(lora["lora"] == "tiny-neon") & (lora["scale"] == 0)]
    assert len(zero) and (zero["hpsv2_gain"].abs() < 1e-12).all()
    assert "scorers per (LoRA, scale, provider)" in out.output and "hpsv2 gain" in out.output


def test_rescore_with_the_same_scorers_does_no_forward_pass(tiny_run: Path):
    first = invoke("score", str(tiny_run), "--clip", "tiny-random", "--scorer", ALL, "--no-progress")
    assert first.exit_code == 0, first.output
    with sqlite3.connect(tiny_run / "run.db") as conn:
        before = conn.execute("SELECT * FROM scorer_scores ORDER BY 1, 2, 4").fetchall()
    again = invoke("score", str(tiny_run), "--clip", "tiny-random", "--scorer", ALL, "--no-progress")
    assert again.exit_code == 0, again.output
    assert "0 forward pass(es) in this pass" in again.output
    assert "0 newly embedded, 0 forward pass(es)" in again.output
    assert again.output.count("0 newly scored") == 3
    with sqlite3.connect(tiny_run / "run.db") as conn:
        assert conn.execute("SELECT * FROM scorer_scores ORDER BY 1, 2, 4").fetchall() == before


def test_scorers_without_clip_leave_clip_scores_alone_and_keep_other_columns(tiny_run: Path):
    assert invoke("score", str(tiny_run), "--clip", "tiny-random", "--no-progress").exit_code == 0
    out = invoke("score", str(tiny_run), "--scorer", "hpsv2:tiny-random", "--no-progress")
    assert out.exit_code == 0, out.output and "scored 28 image(s)" not in out.output
    frame = pd.read_parquet(tiny_run / "results.parquet")
    assert frame["clip_score"].notna().all() and frame["hpsv2"].notna().all()
    # a later CLIP-only score keeps the stored scorer columns in results.parquet
    assert invoke("score", str(tiny_run), "--clip", "tiny-random", "--no-progress").exit_code == 0
    assert "hpsv2_gain" in pd.read_parquet(tiny_run / "results.parquet").columns


def test_missing_aesthetic_head_is_a_usage_error_naming_the_download(tiny_run: Path, monkeypatch):
    monkeypatch.delenv("LORASCOPE_AESTHETIC_HEAD", raising=False)
    out = invoke("score", str(tiny_run), "--clip", "tiny-random", "--scorer", "aesthetic", "--no-progress")
    assert out.exit_code == 2
    assert "sac+logos+ava1-l14-linearMSE.pth" in out.output and "LORASCOPE_AESTHETIC_HEAD" in out.output


def test_unknown_scorer_is_a_usage_error_listing_the_known(tiny_run: Path):
    out = invoke("score", str(tiny_run), "--scorer", "clip,beauty", "--no-progress")
    assert out.exit_code == 2 and "beauty" in out.output and "pickscore" in out.output


def test_clip_as_a_scorer_gives_the_clipscore_column(tiny_run: Path, tmp_path: Path):
    """CLIP through the scorer interface is today's CLIPScore, number for number."""
    from lorascope.evals.embedding_cache import EmbeddingCache
    from lorascope.evals.scorer_plugin import ScorerContext, parse_scorers, score_items

    assert invoke("score", str(tiny_run), "--clip", "tiny-random", "--no-progress").exit_code == 0
    frame = pd.read_parquet(tiny_run / "results.parquet")
    items = [(r.image_sha256, tiny_run / r.image_path, r.prompt) for r in frame.itertuples()]
    (clip,) = parse_scorers("clip", ScorerContext(cache=EmbeddingCache(tmp_path / "c.db"), clip="tiny-random"))
    values, _ = score_items([clip], items)
    got = [values["clip"][clip.key(sha, p)] for sha, _, p in items]
    np.testing.assert_allclose(got, frame["clip_score"].to_numpy(), atol=1e-6)
