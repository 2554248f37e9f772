"""A regression check that cannot pass by accident (issue 18), against Novita's real task
protocol on loopback: the documented plugin test asks the provider anew by default and fails
when the provider's pictures changed; a comparison served entirely from the shared cache
fails with its reason; a missing baseline fails under CI; the failure is short and names the
`lorascope report --compare` command; latency resolves a 0.3 s from a 1.5 s provider."""

from __future__ import annotations

import json
import os
import re
import stat
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.novita import NovitaFake  # noqa: E402

# pytester's in-process sessions (and the pytester fixture itself) drop the modules imported
# after they started, and torch and pandas' Arrow extension types cannot be imported twice in
# one process: import them before any of that.
import open_clip  # noqa: E402,F401
import pandas.core.arrays.arrow.extension_types  # noqa: E402,F401

pytest_plugins = ["pytester"]

INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
KEY = "sk-test-0123456789abcdef"

SUITE = """\
name: reg
providers:
  - novita: {concurrency: 4}
prompts:
  - id: trex
    text: A T-Rex relaxing on a beach
  - id: lighthouse
    text: A lighthouse on a cliff at dusk
seeds: [1, 2]
size: 256x256
steps: 8
"""

# the regression example of docs/evals.md, as a user would paste it
DOCUMENTED_TEST = """
import pytest
from lorascope.evals.pytest_plugin import assert_no_regression

pytestmark = pytest.mark.lorascope

def test_provider_unchanged(lorascope):
    assert_no_regression(lorascope.compare_to_baseline(lorascope.run("suites/reg.yaml", clip="tiny-random")))
"""


@pytest.fixture
def novita(monkeypatch):
    with NovitaFake(key=KEY) as fake:
        monkeypatch.setenv("NOVITA_API_KEY", KEY)
        monkeypatch.setenv("LORASCOPE_NOVITA_URL", fake.url)
        monkeypatch.delenv("CI", raising=False)
        yield fake


@pytest.fixture
def project(pytester):
    """A user's project: the suite under suites/ and the documented test under tests/."""

    pytester.makeini(INI)
    (pytester.path / "suites").mkdir()
    (pytester.path / "suites" / "reg.yaml").write_text(SUITE)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_provider.py").write_text(DOCUMENTED_TEST)
    return pytester


def _failure_section(output: str) -> list[str]:
    """The lines pytest prints for the failed test (its header up to the summary)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^_+ test_provider_unchanged _+$", line))
    end = next(i for i, line in enumerate(lines) if i > start and "short test summary info" in line)
    return lines[start:end]


def test_documented_check_asks_the_provider_and_fails_when_its_pictures_changed(project, novita, tmp_path):
    bl, runs = tmp_path / "baselines", tmp_path / "runs"
    args = ("-p", "no:randomly", f"--lorascope-runs={runs}", f"--lorascope-baseline={bl}", "tests")

    result = project.runpytest_inprocess(*args, "--lorascope-update-baseline")
    result.assert_outcomes(passed=1)
    assert (bl / "reg" / "run.db").is_file() and len(novita.hits("submit")) == 4

    # same provider, same pictures: the check asks again (4 more requests) and passes
    result = project.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
    assert len(novita.hits("submit")) == 8

    # the provider now answers every request with a different picture
    novita.variant = 1
    result = project.runpytest_inprocess(*args)  # no extra flag
    result.assert_outcomes(failed=1)
    assert len(novita.hits("submit")) == 12, "the regression check must reach the provider"
    section = _failure_section(result.stdout.str())
    text = "\n".join(section)
    assert len(section) < 30, text
    assert "regressed: 4 regressed of 4 cells" in text
    assert re.search(r"regressed +novita no-LoRA prompt=trex seed=1: .*SSIM", text)
    assert f"lorascope report {runs / 'reg'} --compare {bl / 'reg'}" in text
    assert "DataFrame" not in text and "def compare_to_baseline" not in text  # helper frames hidden


def test_a_comparison_served_entirely_from_the_cache_fails_unless_allowed(project, novita, tmp_path):
    bl = tmp_path / "baselines"
    common = ("-p", "no:randomly", f"--lorascope-baseline={bl}", "tests")
    project.runpytest_inprocess(*common, f"--lorascope-runs={tmp_path / 'r1'}",
                                "--lorascope-update-baseline").assert_outcomes(passed=1)
    sent = len(novita.hits("submit"))

    # a new runs folder and --lorascope-reuse: every image comes from the shared cache
    result = project.runpytest_inprocess(*common, f"--lorascope-runs={tmp_path / 'r2'}", "--lorascope-reuse")
    result.assert_outcomes(failed=1)
    assert len(novita.hits("submit")) == sent
    result.stdout.fnmatch_lines(["*same: nothing changed of 4 cells (run served entirely from the cache: not a check)*",
                                 "*all 4 images of * came from the shared generation cache*--fresh*--allow-cached*"])
    from lorascope.reports.service import write_compare_report

    page = write_compare_report(bl / "reg", tmp_path / "r2" / "reg").read_text()
    assert "no check: the run was served entirely from the cache" in page

    result = project.runpytest_inprocess(*common, f"--lorascope-runs={tmp_path / 'r3'}", "--lorascope-reuse",
                                         "--lorascope-allow-cached")
    result.assert_outcomes(passed=1)
    assert len(novita.hits("submit")) == sent

    # the run folder the baseline was copied from, reused: stored (not cached) results, but the
    # baseline's own generations (same task ids): compared with themselves, so no check either
    result = project.runpytest_inprocess(*common, f"--lorascope-runs={tmp_path / 'r1'}", "--lorascope-reuse")
    result.assert_outcomes(failed=1)
    assert len(novita.hits("submit")) == sent
    result.stdout.fnmatch_lines(["*all 4 images of * or are the baseline's own generations*"])


def test_a_missing_baseline_fails_under_ci_and_skips_interactively(project, novita, tmp_path, monkeypatch):
    missing = tmp_path / "no-such-baselines"
    args = ("-rs", "-p", "no:randomly", f"--lorascope-runs={tmp_path / 'runs'}", f"--lorascope-baseline={missing}", "tests")
    result = project.runpytest_inprocess(*args)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*no baseline at {missing / 'reg'}*--lorascope-update-baseline*"])

    monkeypatch.setenv("CI", "true")
    result = project.runpytest_inprocess(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*no baseline at {missing / 'reg'} (no run.db); create it with: pytest "
                                 f"--lorascope-baseline {missing} --lorascope-update-baseline*CI is set*"])
    monkeypatch.delenv("CI")
    result = project.runpytest_inprocess(*args, "--lorascope-require-baseline")
    result.assert_outcomes(failed=1)

    # no folder given at all: nothing was asked for, so CI alone still skips (the project's
    # own suites call compare_to_baseline and run in CI without baselines); the flag fails it
    no_folder = ("-rs", "-p", "no:randomly", f"--lorascope-runs={tmp_path / 'runs'}", "tests")
    monkeypatch.setenv("CI", "true")
    project.runpytest_inprocess(*no_folder).assert_outcomes(skipped=1)
    result = project.runpytest_inprocess(*no_folder, "--lorascope-require-baseline")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline folder given: pass --lorascope-baseline DIR*require-baseline*"])


def test_latency_resolves_the_provider_not_the_poll_and_compare_flags_the_slowdown(novita, tmp_path):
    """0.3 s and 1.5 s stand-ins measure within ~0.3 s of those figures (a 1 s first poll
    read both as ~1.2 s); the provider's own queue/inference times are kept beside them;
    `compare --tolerance latency_ratio=1.5` (the documented gate) calls the 5x slowdown a
    regression, verdict and per-provider counts first."""
    from typer.testing import CliRunner

    from lorascope.cli import app
    from lorascope.evals.session import run_and_score
    from lorascope.harness.store import SharedCache

    suite = tmp_path / "reg.yaml"
    suite.write_text(SUITE)
    medians = {}
    for name, latency in (("fast", 0.3), ("slow", 1.5)):
        novita.latency = latency
        novita.book.queue_s = latency / 3
        scored = run_and_score(suite, tmp_path / name, clip="tiny-random", fresh=True, cache=SharedCache(tmp_path / "gc"))
        frame = scored.frame
        assert len(frame) == 4 and (frame["origin"] == "sent").all()
        medians[name] = statistics.median(frame["latency_s"])
        # Novita's debug_info, as reported: queue = execute - submit, inference = complete - execute
        assert frame["queue_s"].tolist() == pytest.approx([latency / 3] * 4, abs=0.002)
        assert frame["inference_s"].tolist() == pytest.approx([latency * 2 / 3] * 4, abs=0.002)
    assert medians["fast"] == pytest.approx(0.3, abs=0.3) and medians["slow"] == pytest.approx(1.5, abs=0.3)
    assert medians["slow"] / medians["fast"] > 2.5

    result = CliRunner().invoke(app, ["compare", str(tmp_path / "fast" / "reg"), str(tmp_path / "slow" / "reg"),
                                      "--clip", "tiny-random", "--no-progress", "--tolerance", "latency_ratio=1.5"],
                                catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("overall: regressed: nothing changed of 4 cells"), result.output
    assert lines[1].strip() == "novita: 4 same"
    assert re.search(r"novita: median latency x[0-9.]+ \(tolerance x1.5\)", result.output)
    # the provider's own queue / inference medians beside our wall time, both sides
    info = json.loads((tmp_path / "slow" / "reg" / "compare.json").read_text())["providers"]["novita"]
    assert (info["baseline_queue_median_s"], info["baseline_inference_median_s"]) == pytest.approx((0.1, 0.2), abs=0.002)
    assert (info["run_queue_median_s"], info["run_inference_median_s"]) == pytest.approx((0.5, 1.0), abs=0.002)
    assert "0.10 / 0.20 → 0.50 / 1.00" in result.output

    # the run report: queue vs inference as the provider reported them, readable by others
    from lorascope.reports.service import write_run_report

    old = os.umask(0o022)
    try:
        page = write_run_report(tmp_path / "slow" / "reg")
    finally:
        os.umask(old)
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
    row = re.search(r"<tr><td>novita</td>.*?</tr>", page.read_text()).group(0)
    assert "<td class=\"num\">500 ms</td><td class=\"num\">1.00 s</td>" in row
