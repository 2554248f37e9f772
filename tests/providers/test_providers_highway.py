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


async def test_img2img_and_mask_from_the_request_inputs(fake_factory, make_provider):
    from lorascope.harness.models import InputImage

    fake = fake_factory("highway")
    init, mask = InputImage(url="https://example.org/in.png"), InputImage(url="https://example.org/m.png")
    async with make_provider("highway", fake) as provider:
        await provider.generate(request(init_image=init, mask_image=mask, strength=0.4))
    body = fake.hits("submit")[0].json
    assert (body["image_url"], body["strength"], body["mask"]) == (init.url, 0.4, mask.url)


def test_validation_of_highway_fields(make_provider, monkeypatch):
    from lorascope.harness.models import InputImage

    provider = make_provider("highway")
    local = InputImage(data=b"\x89PNG not really", mime="image/png", source="in.png")
    problems = "\n".join(provider.validate(request(init_image=local, strength=0.5, options={"endpoint": "base"})))
    for needle in ("takes input images as https URLs only; in.png is a local file", "endpoint='base'"):
        assert needle in problems, needle
    control = request(control_image=InputImage(url="https://example.org/edges.png"))
    assert any("mode controlnet is not served by highway" in p for p in provider.validate(control))
    assert any("unknown option(s) image_url" in p for p in provider.validate(request(options={"image_url": "x"})))
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
