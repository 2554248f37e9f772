"""Helpers for the local provider tests (imported by name: tests/local is on sys.path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lorascope.harness.models import GenerationRequest, GenerationResult, LoraSpec


def with_loras(request: GenerationRequest, *pairs: tuple[Path, float]) -> GenerationRequest:
    return request.model_copy(update={"loras": tuple(LoraSpec(path=str(p), scale=s) for p, s in pairs)})


def pixels(result: GenerationResult) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(result.images[0].data)).convert("RGB")).astype(np.int16)


def mean_abs_diff(a: GenerationResult, b: GenerationResult) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())
