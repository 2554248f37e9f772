"""AI/ML API's synchronous endpoint against the loopback fake: body, URL and base64
images, billed cost from headers and usage, errors, no resend of a billed call."""

from __future__ import annotations

import json

import pytest

from lorascope.harness.errors import AuthError, BadResponse, InvalidRequest, ProviderUnavailable, RateLimited, RejectedRequest
from lorascope.harness.models import GenerationRequest, LoraSpec
from lorascope.harness.providers.aimlapi import billed_cost
from tests.fakes import MALFORMED, TEST_KEY as KEY, Reply
from tests.fakes.images import make_image

LORA = LoraSpec(id="childrens-drawings", scale=0.85, repo="ostris/z_image_turbo_childrens_drawings")


def request(**kw) -> GenerationRequest:
    base = dict(prompt="A T-Rex relaxing on a beach", width=1440, height=512, seed=3, loras=(LORA,))
    base.update(kw)
    return GenerationRequest(**base)


async def test_synchronous_call_on_the_wire_and_billed_cost(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    submitted = []

    async def on_submitted(task_id: str) -> None:
        submitted.append(task_id)

    async with make_provider("aimlapi", fake) as provider:
        result = await provider.generate(request(options={"acceleration": "none"}), on_submitted)
    (call,) = fake.hits("generate")
    assert call.path == "/v1/images/generations" and call.headers["authorization"] == f"Bearer {KEY}"
    assert call.json == {
        "model": "alibaba/z-image-turbo-lora",
        "prompt": "A T-Rex relaxing on a beach",
        "image_size": {"width": 1440, "height": 512},
        "num_inference_steps": 8,
        "num_images": 1,
        "output_format": "png",
        "enable_prompt_expansion": False,
        "seed": 3,
        "acceleration": "none",
        "loras": [{"path": "ostris/z_image_turbo_childrens_drawings", "scale": 0.85}],
    }
    assert submitted == []  # synchronous: nothing to write ahead
    (download,) = fake.hits("image")
    assert "authorization" not in download.headers
    assert result.images[0].data == make_image("png", 1440, 512, 0)
    assert (result.images[0].width, result.images[0].height) == (1440, 512)
    assert result.cost.source == "billed"
    assert result.cost.usd == pytest.approx(17850 / 2_000_000)
    assert result.cost.basis == "x-aimlapi-usd-spent header"
    assert result.request_id and result.request_id.startswith("gen-")


async def test_base64_images_and_credits_from_usage(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    fake.response_mode = "b64"
    fake.billing_headers = False
    async with make_provider("aimlapi", fake) as provider:
        result = await provider.generate(request(num_images=2, output_format="webp"))
    assert fake.hits("image") == []
    assert [img.format for img in result.images] == ["webp", "webp"]
    assert result.cost.usd == pytest.approx(2 * 17850 / 2_000_000)
    assert "meta.usage.credits_used" in result.cost.basis
    stored = result.metadata["response"]["data"][0]["b64_json"]
    assert len(stored) <= 2048  # big blobs are summarised, not stored


def test_billed_cost_prefers_usd_then_credits_header_then_usage():
    assert billed_cost({"x-aimlapi-usd-spent": "0.02"}, {}).usd == 0.02
    cost = billed_cost({"x-aimlapi-credits-used": "40000"}, {"meta": {"usage": {"credits_used": 1}}})
    assert cost.usd == pytest.approx(0.02) and "header" in cost.basis
    assert billed_cost({}, {"meta": {"usage": {"tokens_used": 17850}}}).usd == pytest.approx(0.008925)
    assert billed_cost({}, {}).source == "unknown"


async def test_bad_request_message_reaches_the_user_and_is_not_retried(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(400, {"message": "loras[0].path: repository not found", "path": "/v1/images/generations",
                                        "requestId": "r1", "statusCode": 400, "timestamp": "2026-01-01T00:00:00Z"}))
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(RejectedRequest, match="repository not found"):
            await provider.generate(request())
    assert len(fake.hits("generate")) == 1


async def test_429_without_retry_after_then_success(fake_factory, make_provider, clock):
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(429, {"message": "Too many requests", "statusCode": 429}))
    async with make_provider("aimlapi", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("generate")) == 2 and clock.sleeps == [0.25]
    assert result.images


async def test_rate_limit_that_outlasts_the_budget_gives_up(fake_factory, make_provider, clock):
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(429, {"message": "Too many requests"}, {"Retry-After": "600"}))
    async with make_provider("aimlapi", fake, retry_budget_s=60) as provider:
        with pytest.raises(RateLimited) as info:
            await provider.generate(request())
    assert info.value.retry_after == 600 and clock.sleeps == []
    assert len(fake.hits("generate")) == 1


async def test_500s_exhaust_max_retries(fake_factory, make_provider, clock):
    fake = fake_factory("aimlapi")
    fake.script("generate", *[Reply(500, {"message": "internal error"})] * 5)
    async with make_provider("aimlapi", fake, max_retries=2) as provider:
        with pytest.raises(ProviderUnavailable, match="internal error"):
            await provider.generate(request())
    assert len(fake.hits("generate")) == 3 and clock.sleeps == [0.25, 0.5]


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_error_on_a_billed_call_is_not_resent(fake_factory, make_provider, clock, status):
    # the gateway lost the upstream's answer: the image may have been made and billed
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(status, {"message": "upstream timed out"}))
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(ProviderUnavailable, match="not resent") as info:
            await provider.generate(request())
    assert len(fake.hits("generate")) == 1 and clock.sleeps == []
    assert info.value.status == status and "upstream timed out" in info.value.message


async def test_unreadable_answer_is_a_bad_response_not_a_raw_httpx_error(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(200, b"this is not gzip", {"Content-Encoding": "gzip"}))
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(BadResponse, match="DecodingError") as info:
            await provider.generate(request())
    assert len(fake.hits("generate")) == 1
    assert info.value.__context__ is None and info.value.__cause__ is None


async def test_read_timeout_on_a_billed_call_is_not_resent(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(200, {"data": []}, delay_s=1.0))
    async with make_provider("aimlapi", fake, read_timeout_s=0.2) as provider:
        with pytest.raises(ProviderUnavailable, match="not resent"):
            await provider.generate(request())
    assert len(fake.hits("generate")) == 1


async def test_malformed_json(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    fake.script("generate", Reply(200, MALFORMED))
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(BadResponse, match="malformed JSON"):
            await provider.generate(request())


async def test_undecodable_image_is_a_bad_response(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    fake.script("image", Reply(200, b"<html>not an image</html>", {"Content-Type": "image/png"}))
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(BadResponse, match="does not decode"):
            await provider.generate(request())


async def test_wrong_key(fake_factory, make_provider):
    fake = fake_factory("aimlapi", key="other-key-123456")
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(AuthError, match="AIMLAPI_KEY") as info:
            await provider.generate(request())
    assert KEY not in str(info.value)


async def test_validation_lists_every_documented_limit(fake_factory, make_provider):
    fake = fake_factory("aimlapi")
    bad = request(width=500, height=2100, steps=9, seed=0, num_images=5, prompt="x" * 4001,
                  loras=(LoraSpec(scale=-1, path="/local/file.safetensors"),),
                  options={"acceleration": "max", "sync_mode": True})
    async with make_provider("aimlapi", fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(bad)
    joined = "\n".join(info.value.problems)
    for needle in ("width 500", "height 2100", "multiple of 32", "steps 9", "seed 0", "num_images 5",
                   "4001 characters", "scale -1", "URL or a Hugging Face owner/repo", "acceleration='max'", "sync_mode"):
        assert needle in joined, needle
    assert fake.requests == []
    assert make_provider("aimlapi").validate(request(width=1024, height=1056)) == []


async def test_key_echoed_by_the_provider_is_masked_in_metadata(fake_factory, make_provider):
    import base64

    fake = fake_factory("aimlapi")
    png = base64.b64encode(make_image("png", 512, 512, 1)).decode()
    fake.script("generate", Reply(200, {"data": [{"b64_json": png}], "meta": {"usage": {"credits_used": 100}},
                                        "debug": {"echo": f"Authorization: Bearer {KEY}", "api_key": KEY}},
                                  {"x-aimlapi-credits-used": "100", "x-aimlapi-debug": f"caller {KEY}"}))
    async with make_provider("aimlapi", fake) as provider:
        result = await provider.generate(request(width=512, height=512))
    assert KEY not in repr(result.metadata) and KEY not in json.dumps(result.metadata)
    assert result.metadata["response"]["debug"]["api_key"] == "***"
    assert result.metadata["billing_headers"]["x-aimlapi-credits-used"] == "100"
    assert result.cost.usd == pytest.approx(100 / 2_000_000)
