"""Shared fixtures for the evals tests: an isolated cache and a run-like frame builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own LORASCOPE_CACHE (embeddings.db lives there)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORASCOPE_CACHE", str(cache))
    monkeypatch.delenv("LORASCOPE_CLIP_CHECKPOINT", raising=False)
    monkeypatch.delenv("LORASCOPE_CLIP", raising=False)
    return cache


def noise_image(path: Path, seed: int, size: int = 48) -> Path:
    """A deterministic RGB noise PNG (distinct seeds give clearly different images)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def make_image():
    """`make_image(path, seed, size=48)` writes a noise PNG and returns its path."""
    return noise_image


@pytest.fixture(scope="session")
def tiny_run_master(tmp_path_factory) -> Path:
    """A real run of evals/suites/tiny-styles.yaml (tiny Z-Image pipeline, two random LoRAs,
    20 images), made once per session with a private generation cache. Copy it before use."""
    from lorascope.evals.pytest_plugin import SUITES_DIR
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite

    root = tmp_path_factory.mktemp("tiny-run")
    summary = run_suite(load_suite(SUITES_DIR / "tiny-styles.yaml"), root / "run", progress=False,
                        cache=SharedCache(root / "gen-cache"))
    assert not summary.problems and not summary.fatal
    return root / "run"


@pytest.fixture
def tiny_run(tiny_run_master: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny run (tests may score, modify or break it)."""
    from lorascope.evals.session import copy_run

    return copy_run(tiny_run_master, tmp_path / "run")
