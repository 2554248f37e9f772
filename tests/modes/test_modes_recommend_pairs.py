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


def test_the_per_scale_rule_says_when_it_pools_strengths():
    """The default rule groups by scale only: on a run sweeping strengths it says that its
    figures pool them and points at the pair; one strength (or none) gets no such warning."""
    from lorascope.evals.recommend import recommend_scales

    rows = [(0.3, "", None, 0.50, None, 0.95), (0.3, "ink", 1.0, 0.50, 0.030, 0.85),
            (0.6, "", None, 0.50, None, 0.70), (0.6, "ink", 1.0, 0.50, 0.060, 0.60)]
    (rec,) = recommend_scales(_frame(rows), {})
    assert any("sweeps denoising strengths 0.3, 0.6" in w and "(scale, strength) pair" in w for w in rec.warnings)
    (one,) = recommend_scales(_frame(rows[:2]), {})
    assert not any("strengths" in w for w in one.warnings)
    (t2i,) = recommend_scales(_frame(rows).assign(strength=None), {})
    assert not any("strengths" in w for w in t2i.warnings)


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
