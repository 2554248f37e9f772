"""`lorascope score / recommend / compare` end to end on a real tiny run (CliRunner, in-process)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lorascope.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})
    return result


def test_score_writes_scores_and_parquet_and_rescore_does_no_model_work(tiny_run: Path):
    (tiny_run / "results.parquet").unlink(missing_ok=True)
    first = invoke("score", str(tiny_run), "--clip", "tiny-random", "--no-progress")
    assert first.exit_code == 0, first.output
    # 28 images, 24 distinct: tiny-neon at scale 0 reproduces the 4 baselines byte for byte,
    # and an image is embedded once per content hash
    assert "scored 28 image(s)" in first.output and "24 newly embedded" in first.output
    frame = pd.read_parquet(tiny_run / "results.parquet")
    for col in ("clip_score", "clip_cosine", "style_shift", "lora_effect", "agreement", "clip_model"):
        assert col in frame.columns
    assert frame["clip_score"].notna().all() and set(frame["clip_model"]) == {"tiny-random-clip-v1"}
    with sqlite3.connect(tiny_run / "run.db") as conn:
        assert conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 28
        before = conn.execute("SELECT cell_id, clip_score FROM scores ORDER BY cell_id").fetchall()

    again = invoke("score", str(tiny_run), "--clip", "tiny-random", "--no-progress")
    assert again.exit_code == 0 and "0 newly embedded, 0 forward pass(es)" in again.output
    with sqlite3.connect(tiny_run / "run.db") as conn:
        assert conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 28  # replaced, not appended
        assert conn.execute("SELECT cell_id, clip_score FROM scores ORDER BY cell_id").fetchall() == before
    assert "tiny-ink" in again.output and "per provider" in again.output


def test_score_usage_errors(tmp_path: Path, tiny_run: Path, monkeypatch):
    import huggingface_hub.constants

    result = invoke("score", str(tmp_path))
    assert result.exit_code == 2 and "not a lorascope run folder" in result.output
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = invoke("score", str(tiny_run), "--clip", "ViT-B-32:openai", "--no-progress")
    assert result.exit_code == 2
    assert "LORASCOPE_CLIP_CHECKPOINT" in result.output.replace("\n", "")


def test_recommend_needs_scores_then_shows_and_writes(tiny_run: Path, tmp_path: Path):
    result = invoke("recommend", str(tiny_run))
    assert result.exit_code == 2 and "lorascope score" in result.output
    assert invoke("score", str(tiny_run), "--clip", "tiny-random", "--no-progress").exit_code == 0

    shown = invoke("recommend", str(tiny_run))
    assert shown.exit_code == 0, shown.output
    assert "tiny-ink" in shown.output and "tiny-neon" in shown.output and "rule:" in shown.output
    data = json.loads((tiny_run / "recommend.json").read_text())
    assert {r["lora"] for r in data["recommendations"]} == {"tiny-ink", "tiny-neon"}
    # beside the catalogue's recommendation and range (evals/suites/tiny/loras.yaml)
    assert {r["lora"]: (r["catalogue_scale"], r["catalogue_range"]) for r in data["recommendations"]} == {
        "tiny-ink": (1.0, [0.25, 1.5]), "tiny-neon": (0.5, [0.25, 1.5])}
    table_rows = [line for line in shown.output.splitlines() if "tiny-neon" in line and "diffusers" in line]
    assert table_rows and "0.5" in table_rows[0] and "0.25–1.5" in table_rows[0]
    assert all([p["scale"] for p in r["points"]] == [0.0, 0.5, 1.0] for r in data["recommendations"])

    from lorascope.evals.pytest_plugin import SUITES_DIR

    catalogue = tmp_path / "cat" / "loras.yaml"
    catalogue.parent.mkdir()
    shutil.copy(SUITES_DIR / "tiny" / "loras.yaml", catalogue)
    for f in ("tiny-ink.safetensors", "tiny-neon.safetensors"):
        shutil.copy(SUITES_DIR / "tiny" / f, catalogue.parent / f)
    original = catalogue.read_text()
    # random weights: the rule may or may not find a scale; force one by accepting any CLIPScore and shift
    loose = ("--catalogue", str(catalogue), "--clip-tolerance", "1.0", "--target", "0.0")
    refused = invoke("recommend", str(tiny_run), "--write", *loose)
    assert refused.exit_code == 1, refused.output
    assert "random weights:" in refused.output and "carry no meaning" in refused.output
    assert "was not changed" in refused.output and "--force" in refused.output
    assert catalogue.read_text() == original  # scales from random-weight scores are not written
    written = invoke("recommend", str(tiny_run), "--write", "--force", *loose)
    assert written.exit_code == 0, written.output
    recs = {r["lora"]: r for r in json.loads((tiny_run / "recommend.json").read_text())["recommendations"]}
    # the write path really ran: the tiny run gives tiny-ink a recommendation under this loose rule
    assert recs["tiny-ink"]["scale"] in (0.5, 1.0) and "updated scale.recommended of tiny-ink" in written.output
    from lorascope.registry.catalogue import load_catalogue

    cat = load_catalogue(catalogue)
    for lora_id, rec in recs.items():
        entry = cat.get(lora_id)
        if rec["scale"] is not None:
            assert entry.scale.recommended == rec["scale"]
            assert str(tiny_run) in entry.provenance["scale"].source
        else:
            assert entry.scale.recommended == {"tiny-ink": 1.0, "tiny-neon": 0.5}[lora_id]
    assert original.splitlines()[0] == catalogue.read_text().splitlines()[0]  # header comment kept


def test_compare_same_run_exits_0_and_a_changed_image_exits_1(tiny_run: Path, tmp_path: Path):
    from lorascope.evals.session import copy_run

    other = copy_run(tiny_run, tmp_path / "other")
    same = invoke("compare", str(tiny_run), str(other), "--clip", "tiny-random", "--no-progress")
    assert same.exit_code == 0, same.output
    report = json.loads((other / "compare.json").read_text())
    assert report["overall"] == "same" and report["counts"]["same"] == 28

    # overwrite one stored image with an inverted copy (a different picture)
    from PIL import Image, ImageOps

    frame = pd.read_parquet(other / "results.parquet") if (other / "results.parquet").exists() else None
    with sqlite3.connect(other / "run.db") as conn:
        gid, rel = conn.execute(
            "SELECT i.generation_id, i.path FROM images i JOIN generations g ON g.id = i.generation_id "
            "JOIN cells c ON c.fingerprint = g.fingerprint WHERE c.lora = 'tiny-ink' LIMIT 1").fetchone()
        img = Image.open(other / rel).convert("RGB")
        new_rel = "images/inverted.png"
        ImageOps.invert(img).save(other / new_rel)
        import hashlib

        sha = hashlib.sha256((other / new_rel).read_bytes()).hexdigest()
        conn.execute("UPDATE images SET path = ?, sha256 = ? WHERE generation_id = ?", (new_rel, sha, gid))
    del frame
    changed = invoke("compare", str(tiny_run), str(other), "--clip", "tiny-random", "--no-progress")
    assert changed.exit_code == 1, changed.output
    assert "regressed" in changed.output and "tiny-ink" in changed.output
    report = json.loads((other / "compare.json").read_text())
    assert report["overall"] == "regressed" and report["counts"]["regressed"] == 1
    bad = [c for c in report["cells"] if c["verdict"] == "regressed"][0]
    assert bad["run_image"].endswith("inverted.png") and bad["ssim"] < 0.6


def test_compare_usage_errors(tiny_run: Path, tmp_path: Path):
    result = invoke("compare", str(tiny_run), str(tmp_path), "--clip", "tiny-random")
    assert result.exit_code == 2 and "not a lorascope run folder" in result.output
    result = invoke("compare", str(tiny_run), str(tiny_run), "--tolerance", "wobble=3")
    assert result.exit_code == 2 and "wobble=3" in result.output


def test_compare_latency_ratio_tolerance_turns_a_slower_provider_into_a_regression(tiny_run: Path, tmp_path: Path):
    """Same pictures, three times slower: off by default (drift in time is not a picture
    change), a regression with --tolerance latency_ratio=2, and compare.json says why."""
    from lorascope.evals.session import copy_run

    slow = copy_run(tiny_run, tmp_path / "slow")
    with sqlite3.connect(slow / "run.db") as conn:
        conn.execute("UPDATE generations SET latency_s = latency_s * 3")
    default = invoke("compare", str(tiny_run), str(slow), "--clip", "tiny-random", "--no-progress")
    assert default.exit_code == 0, default.output
    info = json.loads((slow / "compare.json").read_text())["providers"]["diffusers"]
    assert info["latency_ratio"] == pytest.approx(3.0)
    assert info["run_latency_median_s"] == pytest.approx(3 * info["baseline_latency_median_s"])
    assert info["baseline_images"] == info["run_images"] == 28
    assert info["baseline_cost_per_image_usd"] == info["run_cost_per_image_usd"] == 0.0  # local: free

    gated = invoke("compare", str(tiny_run), str(slow), "--clip", "tiny-random", "--no-progress",
                   "--tolerance", "latency_ratio=2")
    assert gated.exit_code == 1, gated.output
    report = json.loads((slow / "compare.json").read_text())
    assert report["overall"] == "regressed" and report["counts"]["same"] == 28
    assert any("diffusers: median latency x3.00" in n for n in report["notes"])


def test_scoring_with_the_progress_bar_embeds_the_same_and_only_once(tiny_run: Path):
    """The progress-bar path (the default on a terminal) looks the cache up once and embeds
    exactly what the quiet path would: the same vectors, nothing twice."""
    import numpy as np

    from lorascope.evals.scorer import Embedder
    from lorascope.evals.scoring import compute_scores

    embedder = Embedder.open("tiny-random")
    try:
        shown = compute_scores(tiny_run, embedder, progress=True)
        again = compute_scores(tiny_run, embedder, progress=True)
    finally:
        embedder.close()
    assert shown.summary.embedded == 24 and again.summary.embedded == 0 and again.summary.forward_passes == 0
    quiet = Embedder.open("tiny-random")
    try:
        plain = compute_scores(tiny_run, quiet, progress=False)
    finally:
        quiet.close()
    assert plain.image_vectors.keys() == shown.image_vectors.keys() == again.image_vectors.keys()
    for sha, vector in plain.image_vectors.items():
        np.testing.assert_array_equal(vector, again.image_vectors[sha])
        np.testing.assert_array_equal(vector, shown.image_vectors[sha])
    pd.testing.assert_frame_equal(plain.frame, again.frame)
