"""The pytest plugin: options, marker, skips for missing keys, readable assertion failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest_plugins = ["pytester"]

# the inner sessions get the same asyncio settings as the project's own pyproject
INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"

HOSTED_KEYS = ("FAL_KEY", "NOVITA_API_KEY", "HIGHWAY_API_KEY", "AIMLAPI_KEY")


@pytest.fixture
def no_keys(monkeypatch):
    for var in HOSTED_KEYS:
        monkeypatch.delenv(var, raising=False)


def test_hosted_suite_is_skipped_naming_the_missing_keys(pytester, no_keys):
    from evals.pytest_plugin import SUITES_DIR

    pytester.makeini(INI)
    pytester.makepyfile(test_hosted=f"""
        import pytest

        @pytest.mark.lorascope
        def test_styles(lorascope):
            lorascope.run({str(SUITES_DIR / 'hosted-styles.yaml')!r})
    """)
    result = pytester.runpytest_inprocess("-rs", "-p", "no:randomly", "--strict-markers")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*FAL_KEY is not set*NOVITA_API_KEY is not set*"])


def test_options_are_registered(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_opts="""
        def test_opts(lorascope):
            assert lorascope.providers == ["diffusers", "fal"]
            assert lorascope.clip == "tiny-random"
            assert lorascope.update_baseline is True
            assert lorascope.baseline_dir("s").name == "s"
    """)
    result = pytester.runpytest_inprocess(
        "--lorascope-provider", "diffusers", "--lorascope-provider", "fal", "--lorascope-clip", "tiny-random",
        "--lorascope-baseline", str(pytester.path / "bl"), "--lorascope-update-baseline",
    )
    result.assert_outcomes(passed=1)


def test_only_the_providers_with_keys_run(monkeypatch, no_keys):
    from evals.pytest_plugin import SUITES_DIR
    from evals.session import MissingProviderKeys, missing_keys, run_and_score
    from harness.suite import load_suite

    suite = load_suite(SUITES_DIR / "hosted-styles.yaml")
    assert missing_keys(suite) == {p: f"{v} is not set" for p, v in zip(["fal", "novita", "highway", "aimlapi"], HOSTED_KEYS)}
    monkeypatch.setenv("FAL_KEY", "x")
    assert "fal" not in missing_keys(suite)
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(MissingProviderKeys, match="AIMLAPI_KEY is not set"):
        run_and_score(SUITES_DIR / "hosted-styles.yaml", Path("/nonexistent"))


def _scored(tmp_path):
    from evals.session import ScoredRun
    from registry.models import LoraEntry

    rows = [dict(provider="fal", lora="", scale=float("nan"), prompt_id="trex", seed=42, status="succeeded",
                 image_path="images/base.png", clip_score=0.80, style_shift=float("nan"), error="")]
    for seed, shift in ((42, -0.012), (1234, 0.004)):
        rows.append(dict(provider="fal", lora="ink", scale=0.8, prompt_id="trex", seed=seed, status="succeeded",
                         image_path=f"images/ink-{seed}.png", clip_score=0.70, style_shift=shift, error=""))
    entry = LoraEntry(id="ink", name="Ink", source={"type": "path", "path": "ink.safetensors"}, kind="style",
                      scale={"recommended": 0.8, "range": [0.5, 1.0]}, style_prompt="an ink drawing")
    return ScoredRun("s", tmp_path, pd.DataFrame(rows), "m", {"ink": entry})


def test_assertion_failures_name_lora_scale_prompt_seed_numbers_and_images(tmp_path):
    from evals.assertions import EvalAssertionError, assert_clip_score_near_baseline, assert_style_shift_up

    scored = _scored(tmp_path)
    with pytest.raises(EvalAssertionError) as err:
        assert_style_shift_up(scored, "ink")
    text = str(err.value)
    assert "ink @ 0.8: mean style shift -0.0040" in text and "'an ink drawing'" in text
    assert "style shift -0.0120: ink @ 0.8 on fal, prompt 'trex' seed 42" in text
    assert str(tmp_path / "images" / "ink-42.png") in text

    with pytest.raises(EvalAssertionError) as err:
        assert_clip_score_near_baseline(scored, "ink", tolerance=0.05)
    assert "mean CLIPScore 0.7000 vs no-LoRA baseline 0.8000" in str(err.value)
    lora_mean, base_mean = assert_clip_score_near_baseline(scored, "ink", tolerance=0.2)
    assert (lora_mean, base_mean) == pytest.approx((0.7, 0.8))
    assert assert_style_shift_up(scored, "ink", min_mean=-0.01) == pytest.approx(-0.004)
