"""Every test run keeps lorascope's caches (generations, embeddings, validated catalogues) in
one temporary folder of its own, never in the user's ~/.cache/lorascope; folders that need a
cache per test (tests/harness, tests/evals, ...) set their own on top of this."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("lorascope-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(_session_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORASCOPE_CACHE", str(_session_cache))
