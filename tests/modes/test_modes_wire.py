"""Image-conditioned requests on the wire: fal's mode endpoints (local inputs as data URIs)
and HighwayAPI's documented img2img/inpaint fields, against the loopback fakes, which refuse
fields a page does not document. Novita and AI/ML API refuse image modes."""

from __future__ import annotations

import base64

import pytest

from lorascope.harness.errors import InvalidRequest
from lorascope.harness.models import GenerationRequest, InputImage, LoraSpec
from tests.fakes import TEST_KEY
from tests.fakes.images import make_image

LORA = LoraSpec(id="classic", scale=0.8, url="https://example.org/classic.safetensors")
PHOTO = InputImage(data=make_image("png", 64, 64, seed=3), mime="image/png", source="photo.png")
MASK = InputImage(data=make_image("png", 64, 64, seed=9), mime="image/png", source="mask.png")


def req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a lighthouse, oil painting", "width": 512, "height": 512, "seed": 7,
                                "loras": (LORA,), **kw})


@pytest.mark.parametrize("loras, path", [((LORA,), "/fal-ai/z-image/turbo/image-to-image/lora"),
                                         ((), "/fal-ai/z-image/turbo/image-to-image")])
async def test_fal_img2img_sends_a_data_uri_and_strength(fake_factory, make_provider, loras, path):
    fake = fake_factory("fal")
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(req(loras=loras, init_image=PHOTO, strength=0.45))
    (submit,) = fake.hits("submit")
    assert submit.path == path
    body = submit.json
    assert body["strength"] == 0.45
    prefix = "data:image/png;base64,"
    assert body["image_url"].startswith(prefix)
    assert base64.b64decode(body["image_url"][len(prefix):]) == PHOTO.data
    assert ("loras" in body) == bool(loras) and "mask_image_url" not in body
    assert result.images and result.cost.usd == pytest.approx((0.0085 if loras else 0.005) * 0.262144, abs=1e-8)
    assert result.metadata["endpoint"] == path.lstrip("/")


async def test_fal_inpaint_sends_image_and_mask(fake_factory, make_provider):
    fake = fake_factory("fal")
    url_mask = InputImage(url="https://example.org/mask.png")
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(req(init_image=PHOTO, mask_image=url_mask, strength=1.0))
    (submit,) = fake.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/inpaint/lora"
    assert submit.json["mask_image_url"] == "https://example.org/mask.png"
    assert submit.json["image_url"].startswith("data:image/png;base64,") and submit.json["strength"] == 1.0
    assert result.cost.usd == pytest.approx(0.0115 * 0.262144, abs=1e-8)


async def test_fal_controlnet_sends_control_settings_only_when_set(fake_factory, make_provider):
    fake = fake_factory("fal")
    async with make_provider("fal", fake) as provider:
        await provider.generate(req(loras=(), control_image=PHOTO, control_scale=0.7, preprocess="canny"))
    (submit,) = fake.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/controlnet"
    assert submit.json["control_scale"] == 0.7 and submit.json["preprocess"] == "canny"
    assert "control_start" not in submit.json and "strength" not in submit.json


async def test_fal_fake_refuses_fields_an_endpoint_does_not_document(fake_factory, make_provider):
    """The fake is strict: strength on the text-to-image endpoint is a 422, like fal's."""
    import httpx

    fake = fake_factory("fal")
    async with httpx.AsyncClient() as client:
        bad = await client.post(f"{fake.url}/fal-ai/z-image/turbo", headers={"Authorization": f"Key {TEST_KEY}"},
                                json={"prompt": "p", "strength": 0.5})
        missing = await client.post(f"{fake.url}/fal-ai/z-image/turbo/inpaint", headers={"Authorization": f"Key {TEST_KEY}"},
                                    json={"prompt": "p", "image_url": "https://example.org/a.png"})
    assert (bad.status_code, missing.status_code) == (422, 422)
    assert any(d["loc"] == ["body", "strength"] for d in bad.json()["detail"])
    assert any(d["loc"] == ["body", "mask_image_url"] for d in missing.json()["detail"])


async def test_highway_img2img_and_inpaint_by_url(fake_factory, make_provider):
    fake = fake_factory("highway")
    init, mask = InputImage(url="https://example.org/in.png"), InputImage(url="https://example.org/m.png")
    async with make_provider("highway", fake) as provider:
        await provider.generate(req(init_image=init, strength=0.3))
        await provider.generate(req(init_image=init, mask_image=mask, strength=0.9))
    first, second = (h.json for h in fake.hits("submit"))
    assert (first["image_url"], first["strength"]) == (init.url, 0.3) and "mask" not in first
    assert (second["image_url"], second["mask"], second["strength"]) == (init.url, mask.url, 0.9)


@pytest.mark.parametrize("name", ["novita", "aimlapi"])
async def test_text_only_providers_refuse_image_modes_before_sending(fake_factory, make_provider, name):
    fake = fake_factory(name)
    async with make_provider(name, fake) as provider:
        problems = provider.validate(req(init_image=InputImage(url="https://example.org/in.png"), strength=0.5))
        assert any(f"mode img2img is not served by {name}" in p for p in problems)
        with pytest.raises(InvalidRequest):
            await provider.generate(req(init_image=InputImage(url="https://example.org/in.png"), strength=0.5))
    assert fake.hits("submit") == []
