"""HighwayAPI: Novita's protocol at its own root, with output_format and img2img/inpaint
fields sent only when asked for."""

from __future__ import annotations

import pytest

from lorascope.harness.errors import InvalidRequest
from lorascope.harness.models import GenerationRequest, LoraSpec
from tests.fakes import TEST_KEY as KEY

LORA = LoraSpec(id="technically-color", scale=0.5, url="https://example.org/tc.safetensors")


def request(**kw) -> GenerationRequest:
    base = dict(prompt="t3chnic4lly, a diner at night", width=1920, height=1080, seed=5, loras=(LORA,),
                output_format="webp")
    base.update(kw)
    return GenerationRequest(**base)


async def test_lora_endpoint_with_output_format(fake_factory, make_provider):
    fake = fake_factory("highway")
    async with make_provider("highway", fake) as provider:
        result = await provider.generate(request())
    (submit,) = fake.hits("submit")
    assert submit.path == "/v3/async/z-image-turbo-lora"
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    assert submit.json == {
        "prompt": "t3chnic4lly, a diner at night", "size": "1920*1080", "seed": 5,
        "loras": [{"path": "https://example.org/tc.safetensors", "scale": 0.5}], "output_format": "webp",
    }
    image = result.images[0]
    assert (image.format, image.width, image.height) == ("webp", 1920, 1080)


async def test_no_lora_still_uses_the_documented_lora_endpoint(fake_factory, make_provider):
    fake = fake_factory("highway")
    async with make_provider("highway", fake) as provider:
        result = await provider.generate(request(loras=(), output_format="jpeg", width=512, height=512))
    (submit,) = fake.hits("submit")
    assert submit.path == "/v3/async/z-image-turbo-lora" and submit.json["loras"] == []
    assert result.images[0].format == "jpeg"


async def test_base64_output_on_the_lora_endpoint(fake_factory, make_provider):
    fake = fake_factory("highway")  # 002 documents enable_base64_output on the LoRA endpoint
    async with make_provider("highway", fake) as provider:
        result = await provider.generate(request(width=512, height=512, options={"enable_base64_output": True}))
    assert fake.hits("submit")[0].json["enable_base64_output"] is True and fake.hits("image") == []
    assert result.images[0].format == "webp"


async def test_img2img_and_mask_only_when_given(fake_factory, make_provider):
    fake = fake_factory("highway")
    options = {"image_url": "https://example.org/in.png", "strength": 0.4, "mask": "https://example.org/m.png"}
    async with make_provider("highway", fake) as provider:
        await provider.generate(request(options=options))
    body = fake.hits("submit")[0].json
    assert (body["image_url"], body["strength"], body["mask"]) == (options["image_url"], 0.4, options["mask"])


def test_validation_of_highway_fields(make_provider, monkeypatch):
    provider = make_provider("highway")
    problems = "\n".join(provider.validate(request(options={"strength": 1.5, "mask": "m.png", "endpoint": "base"})))
    for needle in ("strength 1.5", "strength needs option image_url", "mask must be an http(s) URL",
                   "mask needs option image_url", "endpoint='base'"):
        assert needle in problems, needle
    assert "width" not in problems  # HighwayAPI documents no size range


def test_env_root_and_key(monkeypatch):
    from lorascope.harness.providers.highway import HighwayProvider

    monkeypatch.setenv("LORASCOPE_HIGHWAY_URL", "http://127.0.0.1:9/proxy/")
    monkeypatch.setenv("HIGHWAY_API_KEY", "hw-key-from-env")
    provider = HighwayProvider()
    assert provider.root == "http://127.0.0.1:9/proxy"
    assert provider.validate(request()) == []
    monkeypatch.delenv("HIGHWAY_API_KEY")
    with pytest.raises(Exception, match="HIGHWAY_API_KEY"):
        provider.check(request())
    assert HighwayProvider().root == "http://127.0.0.1:9/proxy"
    monkeypatch.delenv("LORASCOPE_HIGHWAY_URL")
    assert HighwayProvider().root == "https://api.highwayapi.ai"
    with pytest.raises(InvalidRequest):
        HighwayProvider({"api_key": "k-123456"}).check(request(steps=3))
