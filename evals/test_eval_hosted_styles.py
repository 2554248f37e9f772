"""Style LoRAs on the hosted providers, scored with a real CLIP (evals/suites/hosted-styles.yaml).

Each provider without its API key is left out; with none set the test is skipped and says
which variables to set. It also needs real CLIP weights: ViT-B-32:openai (downloaded once by
open_clip) or LORASCOPE_CLIP_CHECKPOINT. Costs money: about 12 images per provider.
"""

from __future__ import annotations

import pytest

from lorascope.evals.pytest_plugin import assert_clip_score_near_baseline, assert_style_shift_up

pytestmark = pytest.mark.lorascope

SUITE = "hosted-styles"
STYLE_LORAS = ("classic-painting", "coloring-book")


@pytest.fixture(scope="module")
def hosted(lorascope):
    from lorascope.evals.scorer import ScorerUnavailable

    if lorascope.clip == "tiny-random":
        pytest.skip("style shift needs a real CLIP model; --lorascope-clip tiny-random gives meaningless numbers")
    try:
        return lorascope.run(SUITE, clip="ViT-B-32:openai")
    except ScorerUnavailable as exc:
        pytest.skip(f"no CLIP weights: {exc}")


@pytest.mark.parametrize("lora", STYLE_LORAS)
def test_style_lora_at_its_recommended_scale_moves_the_style_and_keeps_the_prompt(hosted, lora):
    for provider in hosted.providers:
        assert_style_shift_up(hosted, lora, provider=provider, min_mean=0.0)
        assert_clip_score_near_baseline(hosted, lora, provider=provider, tolerance=0.10)


def test_hosted_providers_match_their_baseline(lorascope, hosted):
    """With --lorascope-baseline DIR (the session then asks the providers anew, so this sees
    what they do today): no cell regressed against the stored run. Skipped without keys, or
    without a baseline folder; a folder lacking the baseline fails under CI."""
    from lorascope.evals.pytest_plugin import assert_no_regression

    assert_no_regression(lorascope.compare_to_baseline(hosted))
