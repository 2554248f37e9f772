"""Evals over a hosted provider speaking fal's real queue protocol (loopback fake) beside the
local tiny pipeline: cross-provider agreement, per-provider cost/latency, key-less skipping,
and a hosted provider whose pictures changed caught as a regression."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.fal import FalFake  # noqa: E402

SUITE = """\
name: mixed
catalogue: {catalogue}
providers:
  - fal
  - diffusers: {{model: tiny-random}}
prompts:
  - id: trex
    text: A T-Rex relaxing on a beach
seeds: [1, 2]
size: 64x64
steps: 2
"""


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    from lorascope.evals.pytest_plugin import SUITES_DIR

    path = tmp_path / "mixed.yaml"
    path.write_text(SUITE.format(catalogue=SUITES_DIR / "tiny" / "loras.yaml"))
    return path


@pytest.fixture
def fal(monkeypatch):
    with FalFake(key="test-key") as fake:
        monkeypatch.setenv("FAL_KEY", "test-key")
        monkeypatch.setenv("LORASCOPE_FAL_URL", fake.url)
        yield fake


def test_agreement_cost_and_latency_across_a_hosted_and_the_local_provider(fal, suite_file, tmp_path):
    from lorascope.evals.metrics import provider_stats
    from lorascope.evals.session import run_and_score
    from lorascope.harness.store import SharedCache

    scored = run_and_score(suite_file, tmp_path / "runs", clip="tiny-random", cache=SharedCache(tmp_path / "gc"))
    frame = scored.frame
    assert sorted(frame["provider"].unique()) == ["diffusers", "fal"] and len(frame) == 4
    assert len(fal.hits("submit")) == 2
    # each image's agreement is its cosine to the other provider's image of the same cell
    by = {(r.provider, r.seed): r.agreement for r in frame.itertuples()}
    assert by[("fal", 1)] == pytest.approx(by[("diffusers", 1)]) and 0 < by[("fal", 1)] <= 1
    stats = provider_stats(frame)
    assert stats.loc["fal", "cost_known"] == 2 and stats.loc["fal", "cost_per_image"] > 0
    assert stats.loc["diffusers", "cost_per_image"] == 0.0

    again = run_and_score(suite_file, tmp_path / "runs", clip="tiny-random", cache=SharedCache(tmp_path / "gc"))
    assert len(fal.hits("submit")) == 2, "a re-run must not pay again"
    assert again.score_summary.forward_passes == 0


def test_a_provider_without_its_key_is_left_out(suite_file, tmp_path, monkeypatch):
    from lorascope.evals.session import run_and_score
    from lorascope.harness.store import SharedCache

    monkeypatch.delenv("FAL_KEY", raising=False)
    scored = run_and_score(suite_file, tmp_path / "runs", clip="tiny-random", cache=SharedCache(tmp_path / "gc"))
    assert scored.providers == ["diffusers"]
    assert scored.skipped_providers == {"fal": "FAL_KEY is not set"}


def test_a_hosted_provider_whose_pictures_changed_is_a_regression(fal, suite_file, tmp_path):
    from lorascope.evals.assertions import EvalAssertionError, assert_no_regression
    from lorascope.evals.session import compare_with, run_and_score
    from lorascope.harness.store import SharedCache

    cache = SharedCache(tmp_path / "gc")
    baseline = run_and_score(suite_file, tmp_path / "runs", clip="tiny-random", cache=cache, name="before")
    fal.variant = 1  # the same requests now answered with other pictures (a changed model)
    today = run_and_score(suite_file, tmp_path / "runs", clip="tiny-random", cache=cache, name="today", fresh=True)
    report = compare_with(baseline.run_dir, today)
    verdicts = {(c.provider, c.seed): c.verdict for c in report.cells}
    assert verdicts == {("fal", 1): "regressed", ("fal", 2): "regressed",
                        ("diffusers", 1): "same", ("diffusers", 2): "same"}
    with pytest.raises(EvalAssertionError) as err:
        assert_no_regression(report)
    message = str(err.value)
    assert message.startswith("regressed: 2 regressed of 4 cells (diffusers: 2 same; fal: 2 regressed)")
    assert "regressed fal no-LoRA prompt=trex seed=1: " in message and "SSIM" in message
    assert f"lorascope report {today.run_dir} --compare {baseline.run_dir}" in message


def test_score_prints_the_provider_agreement_table(fal, suite_file, tmp_path):
    from typer.testing import CliRunner

    from lorascope.evals.session import run_and_score
    from lorascope.harness.store import SharedCache
    from lorascope.cli import app

    scored = run_and_score(suite_file, tmp_path / "runs", clip="tiny-random", cache=SharedCache(tmp_path / "gc"))
    result = CliRunner().invoke(app, ["score", str(scored.run_dir), "--clip", "tiny-random", "--no-progress"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "cross-provider agreement" in result.output
    line = next(l for l in result.output.splitlines() if l.strip("│ ").startswith("fal"))
    expected = f"{scored.frame[scored.frame['provider'] == 'fal']['agreement'].mean():.3f}"
    assert expected in line and "1.000" in line
