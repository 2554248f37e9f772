"""`recommend` on an image-to-image run names a (scale, strength) pair: per strength the scale
rule against that strength's baseline, then the lowest strength reaching most of the style.
The rule on a hand-made scored frame (known numbers), and the CLI on a scored blend-provider run."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from lorascope.evals.recommend_pairs import recommend_pairs


def _frame(rows):
    """rows: (strength, lora, scale, clip_score, style_shift, input_ssim)."""
    records = []
    for i, (strength, lora, scale, clip, style, ssim) in enumerate(rows):
        records.append({"cell_id": f"c{i}", "provider": "p", "lora": lora, "scale": scale if lora else math.nan,
                        "n_loras": 1 if lora else 0, "status": "succeeded", "image_sha256": f"{i:064x}",
                        "image_path": f"images/{i}.png", "image_index": 0, "strength": strength, "init_image": "photo",
                        "clip_score": clip, "style_shift": style, "lora_effect": style, "input_ssim": ssim,
                        "input_cosine": ssim, "prompt_id": "p", "seed": 1})
    return pd.DataFrame.from_records(records)


def test_the_lowest_strength_reaching_most_of_the_style_wins():
    frame = _frame([
        (0.3, "", None, 0.50, None, 0.95),
        (0.3, "ink", 0.5, 0.50, 0.010, 0.90), (0.3, "ink", 1.0, 0.50, 0.030, 0.85),
        (0.6, "", None, 0.50, None, 0.70),
        (0.6, "ink", 0.5, 0.50, 0.050, 0.65), (0.6, "ink", 1.0, 0.50, 0.060, 0.60),
        (0.9, "", None, 0.50, None, 0.30),
        (0.9, "ink", 0.5, 0.50, 0.062, 0.25), (0.9, "ink", 1.0, 0.40, 0.200, 0.20),  # 1.0 at 0.9 loses the prompt
    ])
    (pair,) = recommend_pairs(frame, {}, target_fraction=0.9)
    # per strength: 0.3 -> scale 1.0 (0.030), 0.6 -> 1.0 (0.060), 0.9 -> 0.5 (0.062, 1.0 is not faithful)
    assert [(c.strength, c.scale) for c in pair.choices] == [(0.3, 1.0), (0.6, 1.0), (0.9, 0.5)]
    # best 0.062: 0.060 reaches 90% of it at the lower strength 0.6
    assert (pair.scale, pair.strength) == (1.0, 0.6)
    assert "keeps SSIM 0.600" in pair.reason
    assert pair.as_dict()["per_strength"][1]["input_ssim"] == 0.60


def test_no_pairs_for_a_text_to_image_run_and_none_when_no_strength_has_a_scale():
    frame = _frame([(0.5, "", None, 0.5, None, 0.9), (0.5, "ink", 1.0, 0.1, 0.2, 0.8)])  # unfaithful everywhere
    (pair,) = recommend_pairs(frame, {})
    assert pair.scale is None and pair.strength is None and "no strength" in pair.reason
    assert recommend_pairs(frame.assign(init_image=None, strength=None), {}) == []


async def test_recommend_cli_prints_and_saves_the_pair(tmp_path, monkeypatch):
    from tests.modes.test_modes_fidelity import _blend_run

    from lorascope.cli import app
    run = await _blend_run(tmp_path, monkeypatch)
    scored = CliRunner().invoke(app, ["score", str(run), "--clip", "tiny-random"], catch_exceptions=False)
    assert scored.exit_code == 0, scored.output
    assert "fidelity to the input (input_cosine, input_ssim): 8 image(s)" in scored.output
    result = CliRunner().invoke(app, ["recommend", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "recommended (scale, strength)" in result.output and "pair rule:" in result.output
    saved = json.loads((run / "recommend.json").read_text())
    (pair,) = saved["pairs"]
    assert pair["lora"] == "paint" and [c["strength"] for c in pair["per_strength"]] == [0.0, 0.3, 0.7, 1.0]
    assert all(c["input_ssim"] is not None for c in pair["per_strength"] if c["scale"] is not None)
    (rec,) = saved["recommendations"]  # the scale rule decided at the pair's strength, not pooled
    # (no pair: no scale, and the figures shown are the lowest strength's)
    assert rec["scale"] == pair["scale"]
    assert rec["strength"] == (pair["strength"] if pair["strength"] is not None else 0.0)
    assert [p["images"] for p in rec["points"]] == [1]  # 1 prompt x 1 seed at one strength, not 4 pooled
    # an objective may constrain fidelity: the CLI joins the fidelity columns
    kept = CliRunner().invoke(app, ["recommend", str(run), "--objective", "style_shift",
                                    "--constraint", "input_ssim >= 0"], catch_exceptions=False)
    assert kept.exit_code == 0, kept.output
    (by_objective,) = json.loads((run / "recommend.json").read_text())["recommendations"]
    assert by_objective["strength"] in (0.0, 0.3, 0.7, 1.0) and by_objective["basis"].endswith("input_ssim >= 0")
    # the catalogue's scale is a text-to-image fact: an image-conditioned run does not write it
    catalogue = tmp_path / "loras.yaml"
    catalogue.write_text("version: 1\nloras: []\n")
    refused = CliRunner().invoke(app, ["recommend", str(run), "--write", "--force", "--catalogue", str(catalogue)])
    assert refused.exit_code == 1 and "image-conditioned" in refused.output
    assert catalogue.read_text() == "version: 1\nloras: []\n"


def test_the_scale_rule_never_pools_strengths():
    """On a run sweeping strengths the scale rule decides each LoRA at the pair's strength,
    against that strength's baseline, with that strength's figures only; one strength (or none)
    is decided as before."""
    from lorascope.evals.recommend import recommend_scales

    rows = [(0.3, "", None, 0.50, None, 0.95), (0.3, "ink", 1.0, 0.50, 0.030, 0.85),
            (0.6, "", None, 0.60, None, 0.70), (0.6, "ink", 1.0, 0.58, 0.060, 0.60)]
    (rec,) = recommend_scales(_frame(rows), {})
    (pair,) = recommend_pairs(_frame(rows), {})
    assert (rec.scale, rec.strength) == (pair.scale, pair.strength) == (1.0, 0.6)
    # that strength's point and baseline alone: 1 image, not the 2 a pooled scale 1.0 holds
    assert [(p.scale, p.images, round(p.strength, 3)) for p in rec.points] == [(1.0, 1, 0.060)]
    assert rec.baseline_clip_score == pytest.approx(0.60)
    assert rec.reason.startswith("at strength 0.6 (the pair rule: lowest strength")
    assert rec.as_dict()["strength"] == 0.6
    # a LoRA no strength recommends: no scale, the lowest strength's figures, the pair's reason
    lost = [(0.3, "", None, 0.50, None, 0.9), (0.3, "ink", 1.0, 0.30, 0.05, 0.8),
            (0.6, "", None, 0.50, None, 0.7), (0.6, "ink", 1.0, 0.30, 0.08, 0.6)]
    (none,) = recommend_scales(_frame(lost), {})
    assert none.scale is None and none.strength == 0.3 and "no (scale, strength) pair" in none.reason
    (one,) = recommend_scales(_frame(rows[:2]), {})
    assert one.strength is None and one.scale == 1.0 and not one.reason.startswith("at strength")
    (t2i,) = recommend_scales(_frame(rows).assign(strength=None), {})
    assert t2i.strength is None and [p.images for p in t2i.points] == [2]


async def test_the_report_shows_the_pair_beside_the_scale(tmp_path, monkeypatch):
    """The (scale, strength) pair `recommend` prints is in the LoRA's section of report.html,
    with the same numbers as the evals rule computes."""
    import re

    from tests.modes.test_modes_fidelity import _blend_run

    from lorascope.cli import app
    from lorascope.evals.results import scored_frame
    from lorascope.harness.store import RunStore
    from lorascope.reports.service import write_run_report

    run = await _blend_run(tmp_path, monkeypatch)
    assert CliRunner().invoke(app, ["score", str(run), "--clip", "tiny-random"]).exit_code == 0
    with RunStore.open(run) as store:
        entries = store.lora_entries()
    (expected,) = recommend_pairs(scored_frame(run), entries)
    html = write_run_report(run).read_text()
    section = re.search(r'<section class="lora" id="lora-paint".*?</section>', html, re.S).group(0)
    table = re.search(r'<table class="data recs pairs">.*?</table>', section, re.S).group(0)
    (row,) = re.findall(r'<tr><td>([^<]+)</td><td class="num">([^<]+)</td><td class="num">([^<]+)</td>', table)
    assert row[0] == expected.provider
    assert row[1] == (f"{expected.scale:g}" if expected.scale is not None else "none")
    assert row[2] == (f"{expected.strength:g}" if expected.strength is not None else "none")


def test_an_objective_decides_over_scale_and_strength_cells():
    """`recommend --objective` on a strength sweep: each (scale, strength) cell against its own
    strength's baseline, constraints may name fidelity (input_ssim) and `strength`; the lowest
    strength, then smallest scale, reaching the target wins; never a pooled mean."""
    from lorascope.evals.objective import ObjectiveError, parse_objective, recommend_by_objective

    rows = [(0.3, "", None, 0.50, None, 0.95), (0.3, "ink", 0.5, 0.50, 0.020, 0.90), (0.3, "ink", 1.0, 0.50, 0.030, 0.85),
            (0.6, "", None, 0.50, None, 0.70), (0.6, "ink", 0.5, 0.50, 0.050, 0.65), (0.6, "ink", 1.0, 0.50, 0.060, 0.60)]
    frame = _frame(rows)
    free = parse_objective("style_shift", [], frame)
    (rec,) = recommend_by_objective(frame, {}, free, target_fraction=0.8)
    # best 0.060 at (1.0, 0.6); 80% of it = 0.048: (0.5, 0.6) is the lowest strength then scale reaching it
    assert (rec.scale, rec.strength) == (0.5, 0.6)
    assert [(p.scale, round(p.strength, 3)) for p in rec.points] == [(0.5, 0.05), (1.0, 0.06)]
    assert rec.reason.startswith("at strength 0.6: objective")
    kept = parse_objective("style_shift", ["input_ssim >= 0.8", "strength < 0.5"], frame)
    (faithful,) = recommend_by_objective(frame, {}, kept, target_fraction=0.8)
    assert (faithful.scale, faithful.strength) == (1.0, 0.3)  # 0.020 < 80% of 0.030
    impossible = parse_objective("style_shift", ["input_ssim > 0.99"], frame)
    (none,) = recommend_by_objective(frame, {}, impossible)
    assert none.scale is None and none.strength == 0.3 and "at any strength" in none.reason
    with pytest.raises(ObjectiveError, match="unknown name.*strength"):
        parse_objective("style_shift", ["strength < 0.5"], frame.assign(strength=None))


def test_report_curves_keep_strengths_apart_and_mark_the_decided_one():
    """The per-scale plots of a strength sweep: one curve per strength, each with its own
    strength's no-LoRA level; the recommended scale is drawn on the strength it was decided at."""
    from lorascope.reports.build_run import _curves
    from lorascope.reports.inputs import ScaleAggregate

    aggs = [ScaleAggregate(lora=lora, provider="p", scale=scale, metric="clip_score", mean=mean, strength=strength)
            for lora, scale, strength, mean in [("", None, 0.3, 0.50), ("", None, 0.7, 0.40),
                                                 ("ink", 0.5, 0.3, 0.49), ("ink", 1.0, 0.3, 0.48),
                                                 ("ink", 0.5, 0.7, 0.39), ("ink", 1.0, 0.7, 0.30)]]
    curves = _curves("ink", "clip_score", ["p"], aggs, {("ink", "p"): 1.0}, True, {("ink", "p"): 0.7})
    assert [c.label for c in curves] == ["strength 0.3", "strength 0.7"]
    assert [[pt.mean for pt in c.points] for c in curves] == [[0.49, 0.48], [0.39, 0.30]]
    assert [c.baseline_y for c in curves] == [0.50, 0.40]
    assert [c.recommended_x for c in curves] == [None, 1.0]
    plain = [a.model_copy(update={"strength": None}) for a in aggs if a.strength == 0.3]
    (one,) = _curves("ink", "clip_score", ["p"], plain, {("ink", "p"): 1.0}, True, {})
    assert one.label == "p" and one.recommended_x == 1.0
