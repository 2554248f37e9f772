"""Image-conditioned requests: input images by content hash or URL, strength and ControlNet
settings in the fingerprint, and text-to-image fingerprints exactly as before (stored runs
and the shared cache must still find them)."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from lorascope.harness.fingerprint import canonical_request, fingerprint
from lorascope.harness.models import GenerationRequest, InputImage, LoraSpec
from tests.fakes.images import make_image


def _png(seed: int = 1) -> InputImage:
    return InputImage(data=make_image("png", 32, 32, seed=seed), mime="image/png", width=32, height=32)


def test_text_to_image_fingerprints_are_unchanged() -> None:
    # Golden values computed with the fingerprint code before image inputs existed (HEAD c1ef6cf).
    r = GenerationRequest(prompt="a lighthouse at dusk, class1cpa1nt", width=512, height=768, seed=42, steps=8,
                          loras=(LoraSpec(id="x", scale=0.8, sha256="ab" * 32),),
                          options={"acceleration": "regular", "sync_mode": True})
    assert fingerprint("fal", "fal-ai/z-image/turbo/lora", "", r) == \
        "b56f411ece7293097839b5125b773d74081c710750224c7b10b76a4da3c960c6"
    r = GenerationRequest(prompt="a cat")
    assert fingerprint("diffusers", "diffusers:tiny-random", "tiny-random@tiny-random-v1;float32", r) == \
        "f57335b05ed7dd19278cf6afe872a5b0edbda574cd7c5b8bbe85620ecf84070a"
    assert "init_image" not in canonical_request("fal", "e", "", r)


def test_input_image_hash_strength_and_control_settings_are_fingerprinted() -> None:
    image = _png(1)
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
    base = GenerationRequest(prompt="p", seed=1, init_image=image, strength=0.6)
    fp = fingerprint("fal", "e", "", base)
    assert fp != fingerprint("fal", "e", "", GenerationRequest(prompt="p", seed=1))
    assert fp != fingerprint("fal", "e", "", base.model_copy(update={"strength": 0.7}))
    assert fp != fingerprint("fal", "e", "", base.model_copy(update={"init_image": _png(2)}))
    # same bytes from another file name: same request, nothing paid twice
    renamed = InputImage(data=image.data, mime="image/png", source="elsewhere/copy.png")
    assert fp == fingerprint("fal", "e", "", base.model_copy(update={"init_image": renamed}))
    masked = base.model_copy(update={"mask_image": _png(3)})
    assert masked.mode == "inpaint" and fingerprint("fal", "e", "", masked) != fp
    control = GenerationRequest(prompt="p", seed=1, control_image=image, control_scale=0.7, control_end=0.8,
                                preprocess="canny")
    canon = canonical_request("fal", "e", "", control)
    assert canon["control_image"] == f"sha256:{image.sha256}"
    assert (canon["control_scale"], canon["control_end"], canon["preprocess"]) == (0.7, 0.8, "canny")
    assert control.mode == "controlnet"
    by_url = GenerationRequest(prompt="p", init_image=InputImage(url="https://example.org/a.png"), strength=0.5)
    assert canonical_request("fal", "e", "", by_url)["init_image"] == "https://example.org/a.png"


def test_bytes_never_reach_the_stored_request_json() -> None:
    request = GenerationRequest(prompt="p", init_image=_png(1), strength=0.5)
    dumped = request.model_dump_json()
    assert request.init_image.sha256 in dumped and "data" not in request.model_dump()["init_image"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"mask_image": "M"}, "mask_image needs init_image"),
    ({"strength": 0.5}, "strength needs init_image"),
    ({"control_scale": 0.5}, "need control_image"),
    ({"init_image": "I", "strength": 1.5}, "less than or equal to 1"),
    ({"control_image": "I", "control_start": 0.9, "control_end": 0.2}, "control_start is after control_end"),
])
def test_inconsistent_conditioning_is_refused(kwargs: dict, needle: str) -> None:
    kwargs = {k: (_png(1) if v in ("I", "M") else v) for k, v in kwargs.items()}
    with pytest.raises(ValidationError, match=needle):
        GenerationRequest(prompt="p", **kwargs)


def test_input_image_checks_its_hash_and_url() -> None:
    with pytest.raises(ValidationError, match="does not match"):
        InputImage(data=b"abc", sha256="0" * 64)
    with pytest.raises(ValidationError, match="not https"):
        InputImage(url="http://example.org/a.png")
    with pytest.raises(ValidationError, match="exactly one"):
        InputImage()
    assert _png(1).data_uri().startswith("data:image/png;base64,iVBOR")


def test_data_uri_is_built_once_per_input_and_equality_ignores_it() -> None:
    image = _png(4)
    first = image.data_uri()
    assert image.data_uri() is first  # every cell of a grid shares the encoding
    assert image == InputImage(data=image.data, mime="image/png", width=32, height=32)
