"""Bradley-Terry strengths, intervals and metric agreement against hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lorascope.evals.ratings import bt_log_strengths, fit_group, metric_agreement, wilson
from lorascope.harness.ratings import Vote

SHA = {name: (c * 64) for name, c in zip(("", "0.5", "1"), "abc")}


def vote(i: int, left: str, right: str, choice: str, rater: str = "ann") -> Vote:
    return Vote(vote_id=f"v{i}", rater=rater, created_at=float(i), provider="fal", lora="paint", prompt_id="cat",
                seed=1, left_cell=f"c{left}", left_index=0, left_sha256=SHA[left], left_scale=left,
                right_cell=f"c{right}", right_index=0, right_sha256=SHA[right], right_scale=right, choice=choice)


def votes(*spec: tuple[str, str, str, int]) -> list[Vote]:
    out = []
    for left, right, choice, n in spec:
        out += [vote(len(out) + k, left, right, choice) for k in range(n)]
    return out


def test_two_scales_without_prior_is_the_win_ratio():
    # 0.5 beats the baseline 3 times out of 4: pi(0.5)/pi(base) = 3/1
    s = bt_log_strengths([("0.5", "", "left")] * 3 + [("", "0.5", "left")], ["", "0.5"], prior=0)
    assert s["0.5"] - s[""] == pytest.approx(math.log(3), abs=1e-6)


def test_a_tie_is_half_a_win_each():
    # 2 wins, 1 loss, 1 tie: (2 + 0.5) / (1 + 0.5)
    outcomes = [("0.5", "", "left")] * 2 + [("0.5", "", "right"), ("", "0.5", "tie")]
    s = bt_log_strengths(outcomes, ["", "0.5"], prior=0)
    assert s["0.5"] - s[""] == pytest.approx(math.log(2.5 / 1.5), abs=1e-6)


def test_three_scales_consistent_data_recovers_the_strengths():
    # Strengths 1 : 2 : 4 give P(0.5 > base) = 2/3, P(1 > 0.5) = 2/3, P(1 > base) = 4/5;
    # with exactly those win counts the likelihood equations hold at (1, 2, 4).
    outcomes = ([("0.5", "", "left")] * 2 + [("0.5", "", "right")]
                + [("1", "0.5", "left")] * 2 + [("1", "0.5", "right")]
                + [("", "1", "right")] * 4 + [("", "1", "left")])
    s = bt_log_strengths(outcomes, ["", "0.5", "1"], prior=0)
    assert s["0.5"] - s[""] == pytest.approx(math.log(2), abs=1e-6)
    assert s["1"] - s[""] == pytest.approx(math.log(4), abs=1e-6)


def test_a_clean_sweep_stays_finite_with_the_prior():
    # 3-0 has no finite plain-BT answer; one virtual tie adds half a win each: 3.5 / 0.5 = 7
    with pytest.raises(ValueError, match="unbounded"):
        bt_log_strengths([("0.5", "", "left")] * 3, ["", "0.5"], prior=0)
    s = bt_log_strengths([("0.5", "", "left")] * 3, ["", "0.5"], prior=1.0)
    assert s["0.5"] - s[""] == pytest.approx(math.log(7), abs=1e-6)


def test_fit_group_counts_interval_and_preferred_scale():
    vs = votes(("0.5", "", "left", 6), ("", "0.5", "left", 1), ("1", "0.5", "right", 5), ("1", "0.5", "left", 1),
               ("1", "", "tie", 2)) + [vote(100, "1", "", "skip")]
    fit = fit_group(vs, prior=1.0, resamples=300, scales=["", "0.5", "1"])
    by = {s.scale: s for s in fit.strengths}
    assert fit.reference == "" and by[""].strength == 0 and by[""].low == 0 == by[""].high
    assert (by["0.5"].wins, by["0.5"].losses, by["0.5"].ties) == (11, 2, 0)
    assert (by["1"].wins, by["1"].losses, by["1"].ties) == (1, 5, 2)
    assert (fit.decided, fit.ties, fit.skips) == (13, 2, 1)
    assert fit.preferred.scale == "0.5" and fit.preferred_scale == 0.5
    assert by["0.5"].low < by["0.5"].strength < by["0.5"].high
    assert by["0.5"].low > 0  # clearly preferred over no LoRA
    assert by["0.5"].p_best > 0.9
    assert sum(s.p_best for s in fit.strengths) == pytest.approx(1.0)
    # the point estimate is the fit of all votes with the prior
    point = bt_log_strengths([(v.left_scale, v.right_scale, v.choice) for v in vs if v.choice != "skip"],
                             ["", "0.5", "1"], prior=1.0)
    assert by["1"].strength == pytest.approx(point["1"] - point[""])


def test_people_preferring_no_lora_get_no_scale():
    fit = fit_group(votes(("", "0.5", "left", 5), ("", "1", "left", 5)), resamples=50)
    assert fit.preferred.scale == "" and fit.preferred_scale is None


def test_wilson_interval_of_three_in_four():
    share, low, high = wilson(3, 4)
    assert share == 0.75
    assert (round(low, 4), round(high, 4)) == (0.3006, 0.9544)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_agreement_counts_only_decided_votes_the_metric_separates():
    scored = pd.DataFrame({
        "cell_id": ["c", "c0.5", "c1"], "image_index": [0, 0, 0], "image_sha256": [SHA[""], SHA["0.5"], SHA["1"]],
        "lora": ["", "paint", "paint"],
        "clip_score": [0.7, 0.6, 0.6],          # prefers the baseline; 0.5 and 1 equal
        "style_shift": [math.nan, 0.05, 0.10],  # baseline NaN is the zero of the shift
        "lora_effect": [0.0, 0.2, 0.4],
    })
    vs = votes(("0.5", "", "left", 3), ("", "0.5", "left", 1), ("1", "0.5", "left", 2), ("1", "", "tie", 4))
    agreement = {a.metric: a for a in metric_agreement(vs, scored)}
    assert "agreement" not in agreement  # the run has no such column
    clip = agreement["clip_score"]
    assert (clip.agree, clip.disagree, clip.undecided) == (1, 3, 2)
    shift = agreement["style_shift"]
    assert (shift.agree, shift.disagree, shift.undecided) == (5, 1, 0)
    assert shift.share == pytest.approx(5 / 6)
    assert (shift.low, shift.high) == pytest.approx(wilson(5, 6)[1:])


def test_human_recommendation_is_the_preferred_scale_clamped_into_the_range():
    from lorascope.evals.ratings import human_recommendations
    from lorascope.registry.models import LoraEntry

    entry = LoraEntry(id="paint", name="Paint", source={"type": "path", "path": "p.safetensors"}, kind="style",
                      scale={"recommended": 0.7, "range": [0.3, 0.8]}, license="apache-2.0")
    prefers_1 = fit_group(votes(("1", "0.5", "left", 5), ("1", "", "left", 5), ("0.5", "", "left", 3)), resamples=50)
    (rec,) = human_recommendations([prefers_1], {"paint": entry})
    assert (rec.basis, rec.measured_scale, rec.scale, rec.catalogue_scale) == ("human", 1.0, 0.8, 0.7)
    assert "outside the catalogue range" in rec.warnings[0]
    assert [p.scale for p in rec.points] == [0.5, 1.0] and rec.points[1].strength > rec.points[0].strength
    no_lora = fit_group(votes(("", "0.5", "left", 5)), resamples=50)
    (rec,) = human_recommendations([no_lora], {})
    assert rec.scale is None and "preferred no LoRA" in rec.reason


def test_agreement_covers_plugin_scorers_the_frame_carries():
    scored = pd.DataFrame({
        "cell_id": ["c", "c0.5", "c1"], "image_index": [0, 0, 0], "image_sha256": [SHA[""], SHA["0.5"], SHA["1"]],
        "lora": ["", "paint", "paint"], "clip_score": [0.5, 0.5, 0.5],
        "aesthetic": [5.0, 6.0, 4.0], "aesthetic_gain": [0.0, 1.0, -1.0],
    })
    vs = votes(("0.5", "", "left", 2), ("1", "0.5", "right", 2), ("1", "", "left", 1))
    agreement = {a.metric: a for a in metric_agreement(vs, scored)}
    assert set(agreement) == {"clip_score", "aesthetic"}  # no separate entry for the gain column
    assert (agreement["aesthetic"].agree, agreement["aesthetic"].disagree) == (4, 1)
    assert (agreement["clip_score"].n, agreement["clip_score"].undecided) == (0, 5)
