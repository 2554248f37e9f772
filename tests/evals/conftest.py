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
