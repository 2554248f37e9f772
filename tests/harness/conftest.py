"""Fixtures for harness tests (helpers live in tests/helpers/harness_fakes.py, so test
modules and fixtures share one copy of the fake provider classes)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tests.helpers.harness_fakes import CATALOGUE, FAKE_PROVIDERS, FakeAsync  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test its own shared cache; fakes start with empty logs and default behaviour."""
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "shared-cache"))
    monkeypatch.delenv("LORASCOPE_CATALOGUE", raising=False)
    for cls in FAKE_PROVIDERS.values():
        cls.calls.clear()
    monkeypatch.setattr(FakeAsync, "behaviours", {})
    monkeypatch.setattr(FakeAsync, "price", 0.01)
    yield


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder with loras.yaml; suites written into it find the catalogue."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "loras.yaml").write_text(CATALOGUE)
    return root


@pytest.fixture
def write_suite(project):
    def write(text: str, name: str = "suite.yaml") -> Path:
        path = project / name
        path.write_text(text)
        return path

    return write


