"""Warnings for non-style LoRAs used the way a style LoRA is (registry/usage.py)."""

from __future__ import annotations

from lorascope.registry.catalogue import PROJECT_CATALOGUE, load_catalogue
from lorascope.registry.usage import usage_warnings


def test_non_style_kinds_in_a_text_to_image_grid_are_warned_about() -> None:
    cat = load_catalogue(PROJECT_CATALOGUE)
    (adapter,) = usage_warnings(cat.get("training-adapter"), [1.0])
    assert "'training-adapter' is a training-adapter LoRA" in adapter and "de-distills Turbo" in adapter
    assert "de-turbo" in usage_warnings(cat.get("re-turbo"), [1.0])[0]
    assert "image-to-image" in usage_warnings(cat.get("dejpeg"), [1.0])[0]
    assert usage_warnings(cat.get("dejpeg"), [1.0], image_conditioned=True) == []


def test_a_slider_swept_over_style_scales_is_warned_about() -> None:
    slider = load_catalogue(PROJECT_CATALOGUE).get("cinematic-slider")
    (warning,) = usage_warnings(slider, [0.0, 0.5, 1.0, 1.5])
    assert "useful scales are 2..4; swept over 0..1.5 it barely moves the image" in warning
    assert usage_warnings(slider, [2.0, 3.0, 4.0]) == [] and usage_warnings(slider, [1.0, 3.0]) == []


def test_style_and_character_loras_get_no_warning() -> None:
    cat = load_catalogue(PROJECT_CATALOGUE)
    for entry in cat.entries:
        if entry.kind in ("style", "character", "concept"):
            assert usage_warnings(entry, [0.0, 0.5, 1.0, 1.5]) == [], entry.id
