"""Cell-by-cell comparison: verdicts on hand-built frames with real image files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lorascope.evals.compare import CompareReport, Tolerances, cell_key, compare_frames


def save(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def row(run_dir: Path, name: str, arr: np.ndarray | None, *, provider="fal", lora="ink", seed=1, status="succeeded", **kw):
    sha, rel = "", ""
    if arr is not None:
        rel = f"images/{name}.png"
        sha = save(run_dir / rel, arr)
    base = dict(provider=provider, lora=lora, scale=1.0 if lora else float("nan"), scales="1" if lora else "",
                prompt_id="p", seed=seed, options="{}", image_index=0, status=status, error=kw.pop("error", ""),
                image_path=rel, image_sha256=sha, latency_s=1.0, cost_usd=0.01, clip_score=0.8, style_shift=0.05)
    base.update(kw)
    return base


@pytest.fixture
def pictures():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3)).astype(np.int16)
    slightly = np.clip(img + rng.integers(-2, 3, img.shape), 0, 255)
    other = rng.integers(0, 256, (64, 64, 3))
    return img, slightly, other


def compare(tmp_path, base_rows, run_rows, vectors=None, tol=None):
    b, r = pd.DataFrame(base_rows), pd.DataFrame(run_rows)
    vectors = vectors or {}
    cells = compare_frames(b, r, tmp_path / "base", tmp_path / "run", vectors, vectors, tol or Tolerances())
    return {(c.provider, c.seed): c for c in cells}


def test_verdicts(tmp_path, pictures):
    img, slightly, other = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    base = [
        row(B, "same", img, seed=1),
        row(B, "noise", img, seed=2),
        row(B, "changed", img, seed=3),
        row(B, "failing", img, seed=4),
        row(B, "gone", img, seed=5),
        row(B, "local", img, provider="diffusers", seed=6),
        row(B, "clipdrop", img, seed=8, clip_score=0.9),
    ]
    run = [
        row(R, "same", img, seed=1, latency_s=1.5, cost_usd=0.02),
        row(R, "noise", slightly, seed=2),
        row(R, "changed", other, seed=3),
        row(R, "failing", None, seed=4, status="failed", error="ProviderError: 500"),
        row(R, "local", slightly, provider="diffusers", seed=6),
        row(R, "fresh", img, seed=7),
        row(R, "clipdrop", slightly, seed=8, clip_score=0.6),
    ]
    cells = compare(tmp_path, base, run)
    same = cells[("fal", 1)]
    assert same.verdict == "same" and same.exact and same.latency_delta_s == pytest.approx(0.5)
    assert same.cost_delta_usd == pytest.approx(0.01)
    # a non-deterministic provider: bytes differ, picture the same -> same
    assert cells[("fal", 2)].verdict == "same" and not cells[("fal", 2)].exact and cells[("fal", 2)].ssim > 0.98
    changed = cells[("fal", 3)]
    assert changed.verdict == "regressed" and any("SSIM" in r for r in changed.reasons)
    assert cells[("fal", 4)].verdict == "regressed" and "ProviderError: 500" in cells[("fal", 4)].reasons[0]
    assert cells[("fal", 5)].verdict == "missing"
    # the deterministic local provider: the same tiny noise is drift
    assert cells[("diffusers", 6)].verdict == "drifted"
    assert cells[("fal", 7)].verdict == "new"
    assert cells[("fal", 8)].verdict == "regressed" and "CLIPScore" in cells[("fal", 8)].reasons[0]
    assert cells[("fal", 8)].clip_score_delta == pytest.approx(-0.3)


def test_clip_image_cosine_threshold_and_tolerances(tmp_path, pictures):
    img, slightly, _ = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    b = [row(B, "x", img)]
    r = [row(R, "x", slightly)]
    vectors = {b[0]["image_sha256"]: np.array([1.0, 0.0]), r[0]["image_sha256"]: np.array([0.8, 0.6])}
    cell = compare(tmp_path, b, r, vectors)[("fal", 1)]
    assert cell.image_cosine == pytest.approx(0.8) and cell.verdict == "regressed"
    loose = compare(tmp_path, b, r, vectors, Tolerances.parse(["image_cosine=0.5"]))[("fal", 1)]
    assert loose.verdict == "drifted"  # within tolerance, but below the 'same' cosine


def test_tolerance_parsing_names_the_problem():
    tol = Tolerances.parse(["ssim=0.7", "clip-score=0.02", "latency_ratio=2"])
    assert (tol.ssim, tol.clip_score, tol.latency_ratio) == (0.7, 0.02, 2.0)
    with pytest.raises(ValueError) as err:
        Tolerances.parse(["ssim", "bogus=1", "ssim=high"])
    text = str(err.value)
    assert "'ssim'" in text and "'bogus=1'" in text and "'high' is not a number" in text


def test_a_compare_json_cell_keys_like_the_rows_it_was_made_from(tmp_path, pictures):
    """reports joins compare.json's cells back to both runs' rows with `cell_key`: after a
    JSON round trip a cell (a stack, an unseeded request, options) must give its rows' key."""
    img, _, _ = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    rows = [
        row(B, "stack", img, lora="ink+neon", scale=0.8, scales="0.80+0.5", options='{"acceleration": "high"}'),
        row(B, "unseeded", img, seed=None, image_index=1),
    ]
    cells = compare_frames(pd.DataFrame(rows), pd.DataFrame(rows), B, R, {}, {}, Tolerances())
    report = CompareReport("b", "r", "m", Tolerances(), cells, {})
    cells_json = json.loads(json.dumps(report.to_json(), default=str))["cells"]
    assert [cell_key(c) for c in cells_json] == [cell_key(r) for r in rows]
    assert cell_key(cells_json[0])[2] == "0.8+0.5" and cell_key(cells_json[1])[4] == ""


def test_provider_changes_median_latency_mean_known_cost_and_a_provider_gone(tmp_path, pictures):
    from lorascope.evals.compare import provider_changes

    img, _, _ = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    base = pd.DataFrame([
        row(B, "f1", img, seed=1, latency_s=1.0, cost_usd=0.01),
        row(B, "f2", img, seed=2, latency_s=3.0, cost_usd=None),
        row(B, "f3", None, seed=3, status="failed", latency_s=99.0, cost_usd=0.5),  # no image: not counted
        row(B, "n1", img, provider="novita", seed=1, latency_s=2.0, cost_usd=0.006),
    ])
    run = pd.DataFrame([
        row(R, "f1", img, seed=1, latency_s=4.0, cost_usd=0.02),
        row(R, "f2", img, seed=2, latency_s=6.0, cost_usd=0.04),
    ])
    changes = provider_changes(base, run)
    assert changes["fal"] == {
        "baseline_images": 2, "baseline_latency_median_s": 2.0, "baseline_cost_per_image_usd": pytest.approx(0.01),
        "run_images": 2, "run_latency_median_s": 5.0, "run_cost_per_image_usd": pytest.approx(0.03),
        "latency_ratio": 2.5,
        # no queue/inference figures in these frames: the provider reported none
        "baseline_queue_median_s": None, "baseline_inference_median_s": None,
        "run_queue_median_s": None, "run_inference_median_s": None,
        # no model_version / endpoint columns in these frames
        "baseline_model_versions": [], "run_model_versions": [], "baseline_endpoints": [], "run_endpoints": [],
    }
    assert changes["novita"]["run_images"] == 0 and changes["novita"]["run_latency_median_s"] is None
    assert changes["novita"]["run_cost_per_image_usd"] is None and changes["novita"]["latency_ratio"] is None


def test_a_changed_model_version_is_said_over_common_cells_only(tmp_path, pictures):
    """The version a provider ran is compared over the cells both runs hold: a changed version
    is a note in words; an endpoint only the baseline's extra cells used is not a change."""
    from lorascope.evals.compare import provider_changes, version_notes

    img, _, _ = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    base = pd.DataFrame([
        row(B, "a", img, seed=1, model_version="v1", endpoint="fal-ai/z-image/turbo/lora"),
        row(B, "b", img, lora="", seed=1, model_version="v1", endpoint="fal-ai/z-image/turbo"),
    ])
    same = pd.DataFrame([row(R, "a", img, seed=1, model_version="v1", endpoint="fal-ai/z-image/turbo/lora")])
    assert version_notes(provider_changes(base, same)) == []
    newer = same.assign(model_version="v2")
    changes = provider_changes(base, newer)
    assert changes["fal"]["baseline_model_versions"] == ["v1"] and changes["fal"]["run_model_versions"] == ["v2"]
    assert version_notes(changes) == ["fal: the model version changed (v1 → v2); the run's images come from the new one"]


def test_unseeded_cells_are_not_compared_picture_to_picture(tmp_path, pictures):
    """Two runs of a `null` seed draw two random seeds: different pictures are expected, not
    a regression; the cell still says why, and a failure there still counts."""
    img, _, other = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    base = [row(B, "u", img, seed=None), row(B, "u2", img, seed=None, lora="")]
    run = [row(R, "u", other, seed=None, clip_score=0.3), row(R, "u2", None, seed=None, lora="", status="failed")]
    cells = compare_frames(pd.DataFrame(base), pd.DataFrame(run), B, R, {}, {}, Tolerances())
    unseeded, failed = sorted(cells, key=lambda c: c.lora == "")
    assert unseeded.verdict == "same" and "unseeded" in unseeded.reasons[0] and unseeded.ssim is None
    assert unseeded.clip_score_delta == pytest.approx(-0.5)  # the numbers are still there to read
    assert unseeded.label() == "fal ink@1 prompt=p seed=random"
    assert failed.verdict == "regressed"


def test_cells_are_listed_worst_first_in_the_order_the_report_shows_them():
    from lorascope.evals.compare import CellComparison, worst_first
    from lorascope.reports.inputs import CHANGED_VERDICTS

    cells = [CellComparison("fal", "ink", "1", "p", seed, "{}", 0, verdict=v)
             for seed, v in enumerate(["same", "new", "missing", "drifted", "regressed", "drifted", "damaged"])]
    assert [(c.verdict, c.seed) for c in worst_first(cells)] == [
        ("regressed", 4), ("damaged", 6), ("drifted", 3), ("drifted", 5), ("missing", 2), ("new", 1), ("same", 0)]
    assert sorted(CHANGED_VERDICTS, key=CHANGED_VERDICTS.get) == ["regressed", "damaged", "drifted", "missing", "new"]


class _ExactPlugin:
    """A third-party provider class that promises exact reproducibility."""

    deterministic = True


def test_determinism_comes_from_the_provider_class(monkeypatch):
    import lorascope.harness.providers as registry
    from lorascope.evals.compare import is_deterministic

    is_deterministic.cache_clear()
    monkeypatch.setitem(registry.BUILTIN, "exact-plugin", f"{__name__}:_ExactPlugin")
    registry._targets.cache_clear()
    try:
        assert is_deterministic("diffusers") and is_deterministic("exact-plugin")
        assert not is_deterministic("fal") and not is_deterministic("no-such-provider")
    finally:
        registry._targets.cache_clear()
        is_deterministic.cache_clear()


def test_image_conditioned_cells_are_matched_by_strength_and_input(tmp_path, pictures):
    """An img2img grid has one cell per (strength, input) beside prompt and seed: each is
    compared with its own baseline cell, never a neighbour's, and the cell says which it is,
    in compare.json too (its keys match the rows it came from)."""
    img, _, other = pictures
    B, R = tmp_path / "base", tmp_path / "run"
    cells = [(strength, image) for strength in (0.3, 0.7) for image in ("cat", "dog")]
    base = [row(B, f"b{s}{i}", img, strength=s, init_image=i) for s, i in cells]
    run = [row(R, f"r{s}{i}", other if (s, i) == (0.7, "dog") else img, strength=s, init_image=i) for s, i in cells]
    found = compare_frames(pd.DataFrame(base), pd.DataFrame(run), B, R, {}, {}, Tolerances())
    assert len(found) == 4
    verdicts = {(c.strength, c.init_image): c.verdict for c in found}
    assert verdicts == {(0.3, "cat"): "same", (0.3, "dog"): "same", (0.7, "cat"): "same", (0.7, "dog"): "regressed"}
    (bad,) = [c for c in found if c.verdict == "regressed"]
    assert bad.label().endswith("image=dog strength=0.7")
    report = CompareReport("b", "r", "m", Tolerances(), found, {})
    as_json = json.loads(json.dumps(report.to_json(), default=str))["cells"]
    assert [cell_key(c) for c in as_json] == [cell_key(r) for r in base]
    # text-to-image keys keep their old shape (compare.json files written before still match)
    assert len(cell_key(row(B, "t2i", img))) == 7
