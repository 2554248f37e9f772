"""lorascope's pytest plugin (entry point `pytest11`): eval runs as tests.

Options:
  --lorascope-provider NAME     run only these providers (repeatable); default: the suite's
  --lorascope-baseline DIR      baselines live in DIR/<suite name>/ (a run folder)
  --lorascope-update-baseline   copy this session's runs into the baseline folder instead of
                                comparing (review the diff, then commit or keep it)
  --lorascope-fresh             generate anew instead of reusing stored generations; the
                                default whenever --lorascope-baseline is given (a regression
                                check must see what the provider does today)
  --lorascope-reuse             with a baseline: reuse stored generations instead (a
                                comparison whose run came entirely from the cache still fails)
  --lorascope-allow-cached      let such a cache-only comparison pass (compares stored results)
  --lorascope-require-baseline  a missing baseline fails instead of skipping; a baseline
                                folder given without the suite's run also fails under CI
                                (the CI environment variable set)
  --lorascope-clip MODEL        CLIP model for scoring (default: what each test asks for)
  --lorascope-runs DIR          where eval runs are kept (default: pytest's cache folder), so a
                                re-run resumes from the store and sends nothing

Fixture `lorascope` (session): `.run(suite) -> ScoredRun` (run through the store, scored),
`.compare_to_baseline(scored) -> CompareReport`. Suite paths resolve against the pytest
rootdir, then evals/suites/ by name. Hosted providers without their API key are
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
    group.addoption("--lorascope-reuse", action="store_true", default=False,
                    help="With --lorascope-baseline: reuse stored generations instead of asking anew.")
    group.addoption("--lorascope-allow-cached", action="store_true", default=False,
                    help="Let a comparison pass whose run came entirely from the shared cache.")
    group.addoption("--lorascope-require-baseline", action="store_true", default=False,
                    help="A missing baseline fails the test instead of skipping it (default when CI is set).")
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
        self.reuse: bool = bool(config.getoption("--lorascope-reuse"))
        # a comparison asks the providers anew unless told to reuse (cache-only checks prove nothing)
        self.fresh: bool = bool(config.getoption("--lorascope-fresh")) or (
            self.baseline_root is not None and not self.reuse
        )
        self.allow_cached: bool = bool(config.getoption("--lorascope-allow-cached"))
        self.explicit_require: bool = bool(config.getoption("--lorascope-require-baseline"))
        # a baseline folder given but without the suite's baseline (a typo, a lost artefact):
        # under CI that fails, or the job goes green having checked nothing
        self.require_baseline: bool = self.explicit_require or running_in_ci()
        self.rootpath = Path(config.rootpath)
        runs = config.getoption("--lorascope-runs")
        if runs:
            self.runs_root = Path(runs)
        elif getattr(config, "cache", None) is not None:
            self.runs_root = Path(config.cache.mkdir("lorascope-runs"))
        else:  # cacheprovider disabled (-p no:cacheprovider)
            self.runs_root = Path(config.rootpath) / ".lorascope-cache" / "runs"
        self._runs: dict[tuple, "ScoredRun"] = {}

    def suite_path(self, suite: str | Path) -> Path:
        """A suite file (a relative path resolves against the pytest rootdir, wherever pytest
        was started), or a name from evals/suites/. The error lists every place looked at."""
        path = Path(suite)
        looked: list[Path] = []
        if path.suffix in (".yaml", ".yml"):
            candidate = path if path.is_absolute() else self.rootpath / path
            looked.append(candidate)
            if candidate.is_file():
                return candidate
        else:
            candidate = SUITES_DIR / f"{suite}.yaml"
            looked.append(candidate)
            if candidate.is_file():
                return candidate
        shipped = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))) or "none"
        raise pytest.UsageError(
            f"no suite {str(suite)!r}: looked at {', '.join(map(str, looked))} "
            f"(relative paths resolve against the pytest rootdir {self.rootpath}; shipped suites by name: {shipped})"
        )

    def run(
        self,
        suite: str | Path,
        *,
        clip: str | None = None,
        scorers: str | None = None,
        providers: list[str] | None = None,
        fresh: bool | None = None,
        name: str | None = None,
        **run_kwargs: Any,
    ) -> "ScoredRun":
        """Run the suite through the store (a re-run sends nothing) and score it. `clip`
        is the test's choice; --lorascope-clip overrides it; `scorers` adds plugin scorers
        (e.g. "aesthetic,hpsv2") as columns. `fresh` defaults to --lorascope-fresh. Skips the
        test when every provider lacks its API key."""
        from lorascope.evals.session import MissingProviderKeys, run_and_score

        path = self.suite_path(suite)
        chosen_clip = self.clip or clip
        chosen_providers = self.providers or providers
        fresh = self.fresh if fresh is None else fresh
        key = (str(path), chosen_clip, scorers, tuple(chosen_providers or ()), fresh, name)
        if key in self._runs and not run_kwargs:
            return self._runs[key]
        try:
            scored = run_and_score(path, self.runs_root, providers=chosen_providers, clip=chosen_clip,
                                   scorers=scorers, fresh=fresh, name=name, **run_kwargs)
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
        the new baseline is on disk for review). No baseline: skipped, saying how to create
        it. A given folder without the baseline fails instead under CI or with
        --lorascope-require-baseline; no folder at all fails only with the latter. A run served
        entirely from the shared cache fails unless --lorascope-allow-cached."""
        __tracebackhide__ = True
        from lorascope.evals.session import compare_with, copy_run

        target = self.baseline_dir(scored.suite_name)
        if target is None:  # nothing asked for: CI alone does not make this a failure
            message = ("no baseline folder given: pass --lorascope-baseline DIR "
                       f"(DIR/{scored.suite_name}/ holds the baseline run)")
            if self.explicit_require:
                pytest.fail(f"{message} [a missing baseline fails because --lorascope-require-baseline]",
                            pytrace=False)
            pytest.skip(message)
        if self.update_baseline:
            copy_run(scored.run_dir, target)
        elif not (target / "run.db").is_file():
            self._no_baseline(f"no baseline at {target} (no run.db); create it with: pytest "
                              f"--lorascope-baseline {self.baseline_root} --lorascope-update-baseline")
        report = compare_with(target, scored, tolerances=tolerances, allow_cached=self.allow_cached or self.update_baseline)
        if report.cache_only and not report.allow_cached:
            from lorascope.evals.assertions import failure_text

            pytest.fail(failure_text(report), pytrace=False)
        return report

    def _no_baseline(self, message: str) -> None:
        __tracebackhide__ = True
        if self.require_baseline:
            why = "--lorascope-require-baseline" if self.explicit_require else "CI is set"
            pytest.fail(f"{message} [a missing baseline fails because {why}]", pytrace=False)
        pytest.skip(message)


def running_in_ci() -> bool:
    """CI services set CI (GitHub Actions, GitLab, CircleCI, Travis, Buildkite...)."""
    import os

    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def lorascope(request: pytest.FixtureRequest) -> LorascopeEvals:
    """Run suites through lorascope and get scored results back (see the module docstring)."""
    return LorascopeEvals(request.config)
