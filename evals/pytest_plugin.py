"""lorascope's pytest plugin (entry point `pytest11`): eval runs as tests.

Options:
  --lorascope-provider NAME     run only these providers (repeatable); default: the suite's
  --lorascope-baseline DIR      baselines live in DIR/<suite name>/ (a run folder)
  --lorascope-update-baseline   copy this session's runs into the baseline folder instead of
                                comparing (review the diff, then commit or keep it)
  --lorascope-fresh             generate anew instead of reusing stored generations (a
                                regression check must see what the provider does today)
  --lorascope-clip MODEL        CLIP model for scoring (default: what each test asks for)
  --lorascope-runs DIR          where eval runs are kept (default: pytest's cache folder), so a
                                re-run resumes from the store and sends nothing

Fixture `lorascope` (session): `.run(suite) -> ScoredRun` (run through the store, scored),
`.compare_to_baseline(scored) -> CompareReport`. Hosted providers without their API key are
left out; a test whose providers all lack keys is skipped with the variable names. Marker:
`@pytest.mark.lorascope` for eval tests (select them with `-m lorascope`).

This module is imported by every pytest run in the environment: it imports nothing heavy at
module level (no torch, no pandas); the fixtures import what they need when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from lorascope.evals.compare import CompareReport, Tolerances
    from lorascope.evals.session import ScoredRun

from lorascope.evals.assertions import (  # noqa: F401  (re-exported for test modules)
    assert_clip_score_near_baseline,
    assert_drift_detected,
    assert_matches_exactly,
    assert_no_regression,
    assert_style_shift_up,
)

SUITES_DIR = Path(__file__).resolve().parent / "suites"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lorascope", "lorascope eval runs")
    group.addoption("--lorascope-provider", action="append", default=None, metavar="NAME",
                    help="Run only this provider (repeatable). Default: the providers the suite lists.")
    group.addoption("--lorascope-baseline", default=None, metavar="DIR",
                    help="Folder of baselines: DIR/<suite name>/ is a run folder to compare against.")
    group.addoption("--lorascope-update-baseline", action="store_true", default=False,
                    help="Write this session's runs as the new baselines instead of comparing.")
    group.addoption("--lorascope-fresh", action="store_true", default=False,
                    help="Ask the providers anew instead of reusing stored generations (what a regression "
                         "check against a baseline needs; hosted providers charge for it).")
    group.addoption("--lorascope-clip", default=None, metavar="MODEL",
                    help="CLIP model for scoring, e.g. ViT-B-32:openai or tiny-random.")
    group.addoption("--lorascope-runs", default=None, metavar="DIR",
                    help="Where eval runs are kept (default: .pytest_cache/d/lorascope-runs).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lorascope: an eval test that generates images through lorascope (hosted providers cost money; "
        "they are skipped when their API key is not set)",
    )


class LorascopeEvals:
    """What the `lorascope` fixture hands a test."""

    def __init__(self, config: pytest.Config) -> None:
        self.providers: list[str] | None = config.getoption("--lorascope-provider")
        baseline = config.getoption("--lorascope-baseline")
        self.baseline_root: Path | None = Path(baseline) if baseline else None
        self.update_baseline: bool = bool(config.getoption("--lorascope-update-baseline"))
        self.clip: str | None = config.getoption("--lorascope-clip")
        self.fresh: bool = bool(config.getoption("--lorascope-fresh"))
        runs = config.getoption("--lorascope-runs")
        if runs:
            self.runs_root = Path(runs)
        elif getattr(config, "cache", None) is not None:
            self.runs_root = Path(config.cache.mkdir("lorascope-runs"))
        else:  # cacheprovider disabled (-p no:cacheprovider)
            self.runs_root = Path(config.rootpath) / ".lorascope-cache" / "runs"
        self._runs: dict[tuple, "ScoredRun"] = {}

    def suite_path(self, suite: str | Path) -> Path:
        """A suite by file path, or by name from evals/suites/."""
        path = Path(suite)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return path
        candidate = SUITES_DIR / f"{suite}.yaml"
        if candidate.is_file():
            return candidate
        raise pytest.UsageError(f"no suite {suite!r} (looked for {path} and {candidate})")

    def run(
        self,
        suite: str | Path,
        *,
        clip: str | None = None,
        providers: list[str] | None = None,
        fresh: bool | None = None,
        name: str | None = None,
        **run_kwargs: Any,
    ) -> "ScoredRun":
        """Run the suite through the store (a re-run sends nothing) and score it. `clip`
        is the test's choice; --lorascope-clip overrides it. `fresh` defaults to
        --lorascope-fresh. Skips the test when every provider lacks its API key."""
        from lorascope.evals.session import MissingProviderKeys, run_and_score

        path = self.suite_path(suite)
        chosen_clip = self.clip or clip
        chosen_providers = self.providers or providers
        fresh = self.fresh if fresh is None else fresh
        key = (str(path), chosen_clip, tuple(chosen_providers or ()), fresh, name)
        if key in self._runs and not run_kwargs:
            return self._runs[key]
        try:
            scored = run_and_score(path, self.runs_root, providers=chosen_providers, clip=chosen_clip,
                                   fresh=fresh, name=name, **run_kwargs)
        except MissingProviderKeys as exc:
            pytest.skip(str(exc))
        if not run_kwargs:
            self._runs[key] = scored
        return scored

    def baseline_dir(self, suite_name: str) -> Path | None:
        return self.baseline_root / suite_name if self.baseline_root else None

    def compare_to_baseline(
        self, scored: "ScoredRun", *, tolerances: "Tolerances | None" = None
    ) -> "CompareReport":
        """Compare with the stored baseline (--lorascope-baseline). With
        --lorascope-update-baseline the run becomes the baseline first (so this passes and
        the new baseline is on disk for review). Skips when no baseline is configured or
        none exists yet, saying how to create it."""
        from lorascope.evals.session import compare_with, copy_run

        target = self.baseline_dir(scored.suite_name)
        if target is None:
            pytest.skip("no baseline folder given (--lorascope-baseline DIR)")
        if self.update_baseline:
            copy_run(scored.run_dir, target)
        elif not (target / "run.db").is_file():
            pytest.skip(f"no baseline at {target}; create it with --lorascope-baseline {self.baseline_root} "
                        "--lorascope-update-baseline")
        return compare_with(target, scored, tolerances=tolerances)


@pytest.fixture(scope="session")
def lorascope(request: pytest.FixtureRequest) -> LorascopeEvals:
    """Run suites through lorascope and get scored results back (see the module docstring)."""
    return LorascopeEvals(request.config)
