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
    from lorascope.evals.pytest_plugin import SUITES_DIR

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
    pytester.makepyfile(test_plugin_options="""
        def test_given(lorascope):
            assert lorascope.providers == ["diffusers", "fal"]
            assert lorascope.clip == "tiny-random"
            assert lorascope.update_baseline is True
            assert lorascope.baseline_dir("s").name == "s"
            assert lorascope.fresh is True and lorascope.runs_root.name == "kept-runs"

        def test_defaults(lorascope):
            assert lorascope.fresh is False and lorascope.baseline_dir("s") is None
    """)
    result = pytester.runpytest_inprocess(
        "--lorascope-provider", "diffusers", "--lorascope-provider", "fal", "--lorascope-clip", "tiny-random",
        "--lorascope-baseline", str(pytester.path / "bl"), "--lorascope-update-baseline", "--lorascope-fresh",
        f"--lorascope-runs={pytester.path / 'kept-runs'}", "-k", "test_given",
    )
    result.assert_outcomes(passed=1)
    pytester.runpytest_inprocess("-k", "test_defaults").assert_outcomes(passed=1)


def test_only_the_providers_with_keys_run(monkeypatch, no_keys):
    from lorascope.evals.pytest_plugin import SUITES_DIR
    from lorascope.evals.session import MissingProviderKeys, missing_keys, run_and_score
    from lorascope.harness.suite import load_suite

    suite = load_suite(SUITES_DIR / "hosted-styles.yaml")
    assert missing_keys(suite) == {p: f"{v} is not set" for p, v in zip(["fal", "novita", "highway", "aimlapi"], HOSTED_KEYS)}
    monkeypatch.setenv("FAL_KEY", "x")
    assert "fal" not in missing_keys(suite)
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(MissingProviderKeys, match="AIMLAPI_KEY is not set"):
        run_and_score(SUITES_DIR / "hosted-styles.yaml", Path("/nonexistent"))


def _scored(tmp_path):
    from lorascope.evals.session import ScoredRun
    from lorascope.registry.models import LoraEntry

    rows = [dict(provider="fal", lora="", scale=float("nan"), prompt_id="trex", seed=42, status="succeeded",
                 image_path="images/base.png", clip_score=0.80, style_shift=float("nan"), error="")]
    for seed, shift in ((42, -0.012), (1234, 0.004)):
        rows.append(dict(provider="fal", lora="ink", scale=0.8, prompt_id="trex", seed=seed, status="succeeded",
                         image_path=f"images/ink-{seed}.png", clip_score=0.70, style_shift=shift, error=""))
    entry = LoraEntry(id="ink", name="Ink", source={"type": "path", "path": "ink.safetensors"}, kind="style",
                      scale={"recommended": 0.8, "range": [0.5, 1.0]}, style_prompt="an ink drawing")
    return ScoredRun("s", tmp_path, pd.DataFrame(rows), "m", {"ink": entry})


def test_assertion_failures_name_lora_scale_prompt_seed_numbers_and_images(tmp_path):
    from lorascope.evals.assertions import EvalAssertionError, assert_clip_score_near_baseline, assert_style_shift_up

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


ONE_CELL_SUITE = """\
name: one-cell
catalogue: {catalogue}
providers:
  - diffusers: {{model: tiny-random}}
prompts:
  - id: trex
    text: A T-Rex relaxing on a beach
seeds: [7]
size: 64x64
steps: 2
"""


def test_baseline_options_skip_create_compare_and_catch_a_change(pytester, tmp_path, monkeypatch):
    """The baseline workflow through the plugin's options: no folder -> skip; folder but no
    baseline -> skip saying how to make one; --lorascope-update-baseline writes it; the next
    session compares against it, generating anew (a comparison asks the provider; the run
    folder under --lorascope-runs is the one used); a changed picture fails with the cell
    and the numbers."""
    monkeypatch.delenv("CI", raising=False)  # interactively a missing baseline skips
    import hashlib
    import sqlite3

    from PIL import Image, ImageOps

    from lorascope.evals.pytest_plugin import SUITES_DIR

    suite = tmp_path / "one-cell.yaml"
    suite.write_text(ONE_CELL_SUITE.format(catalogue=SUITES_DIR / "tiny" / "loras.yaml"))
    baselines, runs = tmp_path / "baselines", tmp_path / "runs"
    pytester.makeini(INI)
    pytester.makepyfile(test_baseline=f"""
        import pytest
        from lorascope.evals.pytest_plugin import assert_no_regression

        @pytest.mark.lorascope
        def test_matches_baseline(lorascope):
            scored = lorascope.run({str(suite)!r}, clip="tiny-random")
            print("SENT", sum(p.sent for p in scored.run_summary.providers.values()))
            assert_no_regression(lorascope.compare_to_baseline(scored))
    """)
    # NAME=VALUE: a bare path argument would make pytest look for its ini file there
    common = ("-rsP", "-p", "no:randomly", f"--lorascope-runs={runs}")
    # The run once out here first. Inner in-process sessions drop the modules they imported
    # when they end, and torch cannot be imported twice in one process; and it proves that
    # the sessions below use --lorascope-runs (they find this run there and send nothing).
    from lorascope.evals.session import run_and_score

    assert run_and_score(suite, runs, clip="tiny-random").run_summary.providers["diffusers"].sent == 1

    result = pytester.runpytest_inprocess(*common)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no baseline folder given: pass --lorascope-baseline DIR*"])

    result = pytester.runpytest_inprocess(*common, f"--lorascope-baseline={baselines}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*no baseline at {baselines / 'one-cell'} (no run.db)*--lorascope-update-baseline*"])

    result = pytester.runpytest_inprocess(*common, f"--lorascope-baseline={baselines}", "--lorascope-update-baseline")
    result.assert_outcomes(passed=1)
    assert (baselines / "one-cell" / "run.db").is_file()

    result = pytester.runpytest_inprocess(*common, f"--lorascope-baseline={baselines}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["SENT 1"])  # compared against a baseline: asked anew
    assert len(list((runs / "one-cell" / "images").iterdir())) == 1  # into the kept run folder

    # the baseline's picture now differs (as if the pipeline had changed since it was stored)
    base = baselines / "one-cell"
    with sqlite3.connect(base / "run.db") as conn:
        # the latest generation's image (the one the baseline shows)
        gid, idx, rel = conn.execute("SELECT generation_id, idx, path FROM images ORDER BY generation_id DESC").fetchone()
        ImageOps.invert(Image.open(base / rel).convert("RGB")).save(base / "images" / "inverted.png")
        sha = hashlib.sha256((base / "images" / "inverted.png").read_bytes()).hexdigest()
        conn.execute("UPDATE images SET path = ?, sha256 = ? WHERE generation_id = ? AND idx = ?",
                     ("images/inverted.png", sha, gid, idx))
    result = pytester.runpytest_inprocess(*common, f"--lorascope-baseline={baselines}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*regressed: 1 regressed of 1 cell (diffusers: 1 regressed)*",
        "*regressed diffusers no-LoRA prompt=trex seed=7: *SSIM*",
        f"*lorascope report {runs / 'one-cell'} --compare {base}*",
    ])


def test_assertion_helpers_name_a_scale_the_grid_lacks_instead_of_nan(tmp_path):
    from lorascope.evals.assertions import EvalAssertionError, assert_clip_score_near_baseline, assert_style_shift_up

    scored = _scored(tmp_path)
    with pytest.raises(EvalAssertionError, match=r"ink: scale 0.5 is not in the grid of .* \(its scales: 0.8\); add it"):
        assert_clip_score_near_baseline(scored, "ink", scale=0.5)
    entry = scored.entries["ink"]
    scored.entries["ink"] = entry.model_copy(update={"scale": entry.scale.model_copy(update={"recommended": 0.6})})
    with pytest.raises(EvalAssertionError, match=r"ink: the catalogue's recommended scale 0.6 is not in the grid"):
        assert_style_shift_up(scored, "ink")
    with pytest.raises(EvalAssertionError, match=r"LoRA 'inc' is not in .* \(its LoRAs: ink\)"):
        assert_style_shift_up(scored, "inc", scale=0.8)
    with pytest.raises(EvalAssertionError, match=r"provider 'novita' is not in .* \(its providers: fal\)"):
        assert_style_shift_up(scored, "ink", scale=0.8, provider="novita")


def test_a_measured_recommendation_drives_a_test(tiny_run):
    """`ScoredRun.recommendation` gives the scale this run measures (the recommend rule), to
    assert at, instead of the catalogue's figure."""
    from lorascope.evals.assertions import assert_clip_score_near_baseline
    from lorascope.evals.recommend import recommend_scales
    from lorascope.evals.scoring import score_run
    from lorascope.evals.session import ScoredRun
    from lorascope.harness.store import RunStore

    score = score_run(tiny_run, "tiny-random", progress=False)
    with RunStore.open(tiny_run) as store:
        entries = store.lora_entries()
    scored = ScoredRun("tiny-styles", tiny_run, score.frame, score.clip_model, entries)
    rec = scored.recommendation("tiny-ink", provider="diffusers", clip_tolerance=1.0, target_fraction=0.0)
    expected = [r for r in recommend_scales(score.frame, entries, clip_tolerance=1.0, target_fraction=0.0)
                if r.lora == "tiny-ink"]
    assert rec.scale == expected[0].scale and rec.scale is not None
    lora_mean, base_mean = assert_clip_score_near_baseline(scored, "tiny-ink", scale=rec.scale, tolerance=1.0)
    assert lora_mean > 0 and base_mean > 0
    with pytest.raises(KeyError, match="no recommendation for 'nope'.*its LoRAs: tiny-ink, tiny-neon"):
        scored.recommendation("nope")


def test_suite_paths_resolve_against_the_rootdir_wherever_pytest_starts(pytester, monkeypatch):
    pytester.makeini(INI)
    (pytester.path / "suites").mkdir()
    (pytester.path / "suites" / "mine.yaml").write_text("name: mine\n")
    sub = pytester.mkpydir("checks")
    (sub / "test_where.py").write_text(
        "import pytest\n"
        "def test_where(lorascope):\n"
        f"    assert str(lorascope.suite_path('suites/mine.yaml')) == {str(pytester.path / 'suites' / 'mine.yaml')!r}\n"
        "    assert lorascope.suite_path('tiny-styles').name == 'tiny-styles.yaml'\n"
        "    with pytest.raises(pytest.UsageError) as err:\n"
        "        lorascope.suite_path('suites/nope.yaml')\n"
        "    print(err.value)\n"
    )
    monkeypatch.chdir(sub)  # started from a subfolder: the rootdir (the ini's folder) still anchors paths
    result = pytester.runpytest_inprocess("-s", "-p", "no:randomly", "test_where.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        f"*no suite 'suites/nope.yaml': looked at {pytester.path / 'suites' / 'nope.yaml'} (relative paths resolve "
        f"against the pytest rootdir {pytester.path}; shipped suites by name: hosted-styles, tiny-styles)*"])
