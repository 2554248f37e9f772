"""The project's offline eval suite: the local diffusers provider on the tiny random
Z-Image pipeline, scored with the tiny random CLIP (evals/suites/tiny-styles.yaml).

Random weights make CLIP's numbers meaningless, so nothing here claims a LoRA "looks
better". What is asserted is what random weights CAN show: every cell is stored and scored,
a re-run sends nothing and re-scoring does no model work, the local provider reproduces its
baseline bit for bit, and a provider that applies a different LoRA scale than asked is caught.
"""

from __future__ import annotations

import math

import pytest

from lorascope.evals.pytest_plugin import assert_drift_detected, assert_matches_exactly, assert_no_regression

pytestmark = pytest.mark.lorascope

SUITE = "tiny-styles"
CLIP = "tiny-random"


def test_every_cell_is_stored_and_scored(lorascope):
    scored = lorascope.run(SUITE, clip=CLIP)
    frame = scored.frame
    # 2 LoRAs x 3 scales x 2 prompts x 2 seeds + 2 x 2 no-LoRA baselines
    assert len(frame) == 28
    assert (frame["status"] == "succeeded").all(), frame[frame["status"] != "succeeded"][["lora", "error"]]
    assert frame["clip_score"].between(0.0, 2.5).all()
    assert ((frame["clip_score"] - 2.5 * frame["clip_cosine"].clip(lower=0)).abs() < 1e-9).all()
    base = frame[frame["lora"] == ""]
    loras = frame[(frame["lora"] != "") & (frame["scale"] > 0)]
    assert (base["lora_effect"] == 0).all() and base["style_shift"].isna().all()
    # every LoRA image differs from its baseline, and has a style shift (both have style prompts)
    assert (loras["lora_effect"] > 0).all() and loras["style_shift"].notna().all()
    for path in frame["image_path"]:
        assert (scored.run_dir / path).is_file()


def test_scale_zero_reproduces_the_no_lora_baseline_exactly(lorascope):
    """Scale 0 means "LoRA loaded, weight 0": for a LoRA without trigger words, the very same
    pixels as no LoRA at all, so LoRA effect and style shift are exactly 0 (true for any
    weights, random included). A LoRA with a trigger word still changes the prompt, and so
    the picture: at scale 0 its LoRA effect measures the trigger word alone."""
    scored = lorascope.run(SUITE, clip=CLIP)
    frame = scored.frame
    base = frame[frame["lora"] == ""].set_index(["prompt_id", "seed"])
    assert not scored.entries["tiny-neon"].triggers and scored.entries["tiny-ink"].triggers
    neon = frame[(frame["lora"] == "tiny-neon") & (frame["scale"] == 0)]
    assert len(neon) == 4
    for row in neon.itertuples():
        assert row.image_sha256 == base.at[(row.prompt_id, row.seed), "image_sha256"], scored.describe(row._asdict())
    assert (neon["lora_effect"].abs() < 1e-6).all() and (neon["style_shift"].abs() < 1e-6).all()
    ink = frame[(frame["lora"] == "tiny-ink") & (frame["scale"] == 0)]
    for row in ink.itertuples():
        assert "t1nyink" in row.final_prompt and row.final_prompt != base.at[(row.prompt_id, row.seed), "final_prompt"]
        assert row.image_sha256 != base.at[(row.prompt_id, row.seed), "image_sha256"]


def test_a_rerun_sends_nothing_and_rescoring_does_no_forward_pass(lorascope):
    from lorascope.evals.session import run_and_score

    first = lorascope.run(SUITE, clip=CLIP)
    again = run_and_score(lorascope.suite_path(SUITE), lorascope.runs_root, clip=CLIP)
    assert again.run_dir == first.run_dir
    sent = sum(p.sent for p in again.run_summary.providers.values())
    assert sent == 0
    assert again.score_summary.forward_passes == 0 and again.score_summary.embedded == 0
    assert again.frame["clip_score"].tolist() == first.frame["clip_score"].tolist()


def test_the_local_provider_reproduces_its_baseline_bit_for_bit(lorascope, tmp_path):
    from lorascope.evals.session import compare_with
    from lorascope.harness.store import SharedCache

    baseline = lorascope.run(SUITE, clip=CLIP)
    # fresh generations in a new folder, with a private cache: nothing can be reused
    again = lorascope.run(SUITE, clip=CLIP, fresh=True, name=f"{SUITE}-repeat", cache=SharedCache(tmp_path / "cache"))
    assert sum(p.sent for p in again.run_summary.providers.values()) == 28
    report = compare_with(baseline.run_dir, again)
    assert_matches_exactly(report)
    assert report.overall == "same" and report.counts["same"] == 28


class _ScaleBugProvider:
    """A local provider with a bug: it applies every LoRA at half the requested scale."""

    @staticmethod
    def make(setup):
        from lorascope.harness.providers.local import DiffusersProvider

        class HalfScale(DiffusersProvider):
            async def generate_batch(self, requests):
                halved = [
                    r.model_copy(update={"loras": tuple(l.model_copy(update={"scale": l.scale / 2}) for l in r.loras)})
                    for r in requests
                ]
                return await super().generate_batch(halved)

        return HalfScale(setup.config) if setup.name == "diffusers" else setup.cls(setup.config)


def test_a_provider_applying_the_wrong_lora_scale_is_caught_as_drift(lorascope, tmp_path):
    from lorascope.evals.compare import Tolerances
    from lorascope.evals.session import compare_with
    from lorascope.harness.store import SharedCache

    baseline = lorascope.run(SUITE, clip=CLIP)
    buggy = lorascope.run(SUITE, clip=CLIP, fresh=True, name=f"{SUITE}-halfscale",
                          cache=SharedCache(tmp_path / "cache"), provider_factory=_ScaleBugProvider.make)
    report = compare_with(baseline.run_dir, buggy)
    changed = assert_drift_detected(report)
    by_verdict = {c.verdict for c in report.cells if c.lora and c.scales != "0"}
    assert "same" not in by_verdict, "a LoRA cell at a wrong scale went unnoticed"
    # half of 0 is 0: those cells, and the no-LoRA ones, must still match exactly
    assert all(c.verdict == "same" and c.exact for c in report.cells if not c.lora or c.scales == "0")
    assert {c.lora for c in changed} == {"tiny-ink", "tiny-neon"}
    assert all(c.ssim is not None and c.ssim < 1.0 for c in changed)
    assert report.overall in ("drifted", "regressed")
    # the same change fails a strict tolerance on pixels: regression, exit code 1 territory
    strict = compare_with(baseline.run_dir, buggy, tolerances=Tolerances(ssim=0.9999))
    assert strict.regressed and strict.counts["regressed"] == len(changed)
    assert (buggy.run_dir / "compare.json").is_file()


def test_scores_aggregate_with_confidence_intervals(lorascope):
    from lorascope.evals.metrics import aggregate

    agg = aggregate(lorascope.run(SUITE, clip=CLIP).frame)
    lora_rows = agg[agg["lora"] != ""]
    assert len(lora_rows) == 6 and (lora_rows["clip_score_n"] == 4).all()
    for _, row in lora_rows.iterrows():
        assert row["clip_score_low"] <= row["clip_score_mean"] <= row["clip_score_high"]
        assert not math.isnan(row["style_shift_high"])


def test_the_run_matches_its_stored_baseline(lorascope):
    """With --lorascope-baseline DIR: today's run against the stored one (skipped otherwise)."""
    scored = lorascope.run(SUITE, clip=CLIP)
    report = lorascope.compare_to_baseline(scored)
    assert_no_regression(report)


def test_the_committed_tiny_loras_fit_the_tiny_pipeline(tmp_path):
    """The suite's LoRA files are what the writer makes today; if the tiny pipeline recipe
    changed, regenerate them with `python -m lorascope.evals.tiny_assets`."""
    import numpy as np
    from safetensors.numpy import load_file

    from lorascope.evals.tiny_assets import TINY_DIR, TINY_LORAS, write_tiny_loras

    fresh = write_tiny_loras(tmp_path)
    for lora_id, (name, _, _) in TINY_LORAS.items():
        committed, expected = load_file(TINY_DIR / name), load_file(fresh[lora_id])
        stale = f"{TINY_DIR / name} is stale: run `python -m lorascope.evals.tiny_assets`"
        assert committed.keys() == expected.keys(), stale
        assert all(np.array_equal(committed[k], expected[k]) for k in expected), stale


def test_plugin_scorers_join_the_scored_frame(lorascope):
    """`lorascope.run(..., scorers=...)` scores as `lorascope score --scorer` does: each
    scorer's value and its gain over the same-seed no-LoRA image are columns a test reads."""
    import math

    scored = lorascope.run(SUITE, clip=CLIP, scorers="hpsv2:tiny-random")
    frame = scored.frame
    assert {"hpsv2", "hpsv2_gain", "clip_score"} <= set(frame.columns)
    images = frame[frame["status"] == "succeeded"]
    assert len(images) and all(math.isfinite(v) for v in images["hpsv2"])
    styled = images[images["lora"] != ""]
    assert len(styled) and all(math.isfinite(v) for v in styled["hpsv2_gain"])
