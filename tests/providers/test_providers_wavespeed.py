"""WaveSpeedAI's v3 prediction API against its loopback fake: wire format, the `{code,
message, data}` envelope, failures, deadlines, resume by prediction id. A SIGKILLed
`lorascope run` resumed without a second submission is tested with the other task-based hosts
in tests/harness/test_harness_reliability.py."""

from __future__ import annotations

import httpx
import pytest

from lorascope.harness.errors import AuthError, BadResponse, ContentFiltered, InvalidRequest, ProviderTimeout, RejectedRequest, TaskFailed
from lorascope.harness.models import GenerationRequest, LoraSpec
from tests.fakes import TEST_KEY as KEY, Reply
from tests.fakes.images import make_image

LORA = LoraSpec(id="coloring-book", scale=0.7, url="https://example.org/weights/coloring.safetensors")
SUBMIT_PATH = "/api/v3/wavespeed-ai/z-image/turbo-lora"


def request(**kw) -> GenerationRequest:
    base = dict(prompt="c0l0ringb00k, a fox in a forest", width=512, height=768, seed=42, loras=(LORA,))
    base.update(kw)
    return GenerationRequest(**base)


async def test_prediction_goes_over_the_wire_as_documented(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    fake.book.reported_times = (0.1, 1.234)  # (queue s, inference s) the provider reports
    seen_before_poll = []

    async def on_submitted(prediction_id: str) -> None:
        seen_before_poll.append((prediction_id, len(fake.hits("result"))))

    async with make_provider("wavespeed", fake) as provider:
        result = await provider.generate(request(output_format="webp"), on_submitted)

    (submit,) = fake.hits("submit")
    assert submit.method == "POST" and submit.path == SUBMIT_PATH
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    assert submit.headers["content-type"] == "application/json"
    assert submit.json == {
        "prompt": "c0l0ringb00k, a fox in a forest",
        "size": "512*768",
        "seed": 42,
        "output_format": "webp",
        "loras": [{"path": "https://example.org/weights/coloring.safetensors", "scale": 0.7}],
    }
    assert seen_before_poll == [(result.request_id, 0)]  # written ahead before the first poll
    (poll,) = fake.hits("result")
    assert poll.path == f"/api/v3/predictions/{result.request_id}/result"
    assert poll.headers["authorization"] == f"Bearer {KEY}"
    (download,) = fake.hits("image")
    assert "authorization" not in download.headers

    (image,) = result.images
    assert image.data == make_image("webp", 512, 768, 42)
    assert (image.format, image.width, image.height, image.nsfw) == ("webp", 512, 768, False)
    assert result.timings.inference_s == pytest.approx(1.234)  # timings.inference is in ms
    assert result.cost.source == "unknown" and result.cost.usd is None
    assert result.metadata["endpoint"] == "wavespeed-ai/z-image/turbo-lora"
    assert KEY not in repr(result.metadata)


async def test_no_lora_and_no_seed(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    async with make_provider("wavespeed", fake) as provider:
        await provider.generate(request(loras=(), seed=None))
    body = fake.hits("submit")[0].json
    assert body["seed"] == -1 and "loras" not in body  # -1 = random, as the page says


async def test_submit_is_retried_after_429_with_retry_after(fake_factory, make_provider, clock):
    fake = fake_factory("wavespeed")
    fake.script("submit", Reply(429, {"code": 429, "message": "Too Many Requests", "data": None}, {"Retry-After": "5"}))
    async with make_provider("wavespeed", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("submit")) == 2
    assert clock.sleeps[0] == 5.0
    assert result.images


async def test_failed_prediction_reports_its_error(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    fake.book.outcome = "fail"
    fake.book.fail_reason = "lora download failed: 403 Forbidden"
    async with make_provider("wavespeed", fake) as provider:
        with pytest.raises(TaskFailed) as info:
            await provider.generate(request())
    assert "lora download failed: 403 Forbidden" in str(info.value)
    assert info.value.request_id in fake.tasks


async def test_nsfw_failure_is_content_filtered(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    fake.book.outcome = "filtered"
    async with make_provider("wavespeed", fake) as provider:
        with pytest.raises(ContentFiltered, match="NSFW"):
            await provider.generate(request())


async def test_error_code_inside_a_200_envelope_is_mapped(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    fake.script("submit", Reply(200, {"code": 400, "message": "size: exceeds the maximum", "data": None}))
    async with make_provider("wavespeed", fake) as provider:
        with pytest.raises(RejectedRequest, match="size: exceeds the maximum"):
            await provider.generate(request())
    assert len(fake.hits("submit")) == 1


async def test_deadline_stops_polling_and_sends_no_undocumented_cancel(fake_factory, make_provider, clock):
    fake = fake_factory("wavespeed")
    fake.book.outcome = "never"
    async with make_provider("wavespeed", fake, deadline_s=30, poll_interval_s=2, poll_max_interval_s=4) as provider:
        with pytest.raises(ProviderTimeout, match="deadline_s=30"):
            await provider.generate(request())
    assert sum(clock.sleeps) == pytest.approx(30)
    assert {hit.route for hit in fake.requests} == {"submit", "result"}


async def test_resume_polls_the_same_prediction_without_submitting(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}{SUBMIT_PATH}", headers={"Authorization": f"Bearer {KEY}"},
                                   json={"prompt": "a fox", "size": "512*512", "seed": 7, "output_format": "png"})
    prediction_id = answer.json()["data"]["id"]
    async with make_provider("wavespeed", fake) as provider:
        result = await provider.resume(prediction_id, request(width=512, height=512, seed=7))
    assert len(fake.hits("submit")) == 1  # only ours above
    assert result.request_id == prediction_id and result.images[0].data == make_image("png", 512, 512, 7)


async def test_expired_output_url_is_a_clear_error(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    fake.outputs_gone = True
    async with make_provider("wavespeed", fake) as provider:
        with pytest.raises(BadResponse, match="HTTP 404.*expired"):
            await provider.generate(request())


async def test_wrong_key_names_the_variable_and_never_shows_it(fake_factory, make_provider):
    fake = fake_factory("wavespeed", key="the-right-key-000")
    async with make_provider("wavespeed", fake) as provider:
        with pytest.raises(AuthError) as info:
            await provider.generate(request())
    assert "WAVESPEED_API_KEY" in str(info.value) and "invalid authentication" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)


async def test_invalid_request_lists_every_problem_and_sends_nothing(fake_factory, make_provider):
    fake = fake_factory("wavespeed")
    bad = request(width=2048, height=128, seed=-5, steps=4, num_images=2,
                  loras=(LoraSpec(scale=5.0, url="https://example.org/a.safetensors"), LoraSpec(scale=1.0, repo="a/b")),
                  options={"enable_sync_mode": True})
    async with make_provider("wavespeed", fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(bad)
    joined = "\n".join(info.value.problems)
    for needle in ("width 2048", "height 128", "seed -5", "steps=4", "num_images=2", "scale 5", "https URL",
                   "enable_sync_mode"):
        assert needle in joined, needle
    assert fake.requests == []
