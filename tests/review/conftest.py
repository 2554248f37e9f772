"""Fixtures for the review tests: a real run folder (the harness's runner with the in-process
fake provider: real run.db, real content-addressed PNGs), copied per test."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tests.helpers.harness_fakes import CATALOGUE, lookup  # noqa: E402

SUITE = """
name: review
providers:
  - fakeasync
loras: [paint, ink]
scales: [0.5, 1.0]
prompts:
  - id: cat
    text: a cat on a mat
  - id: dog
    text: 'a dog <script>alert("dog")</script> in fog'
seeds: [1, 2]
size: 64x64
steps: 2
"""


@pytest.fixture(scope="session")
def review_run_master(tmp_path_factory) -> Path:
    """One run: 2 LoRAs x 2 scales + baseline, 2 prompts (one hostile), 2 seeds = 20 images."""
    from lorascope.harness.runner import run_suite_async
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite

    root = tmp_path_factory.mktemp("review-run")
    (root / "loras.yaml").write_text(CATALOGUE)
    (root / "suite.yaml").write_text(SUITE)
    summary = asyncio.run(run_suite_async(load_suite(root / "suite.yaml"), root / "run", provider_lookup=lookup,
                                          progress=False, cache=SharedCache(root / "cache")))
    assert not summary.problems and not summary.fatal
    return root / "run"


@pytest.fixture
def review_run(review_run_master: Path, tmp_path: Path) -> Path:
    from lorascope.evals.session import copy_run

    return copy_run(review_run_master, tmp_path / "run")
