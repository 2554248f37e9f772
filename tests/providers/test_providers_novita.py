"""Novita's async task protocol against the loopback fake: wire format, task states,
failures, expiring URLs, base64 output, deadlines and resume."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lorascope.harness.errors import AuthError, BadResponse, ContentFiltered, InvalidRequest, ProviderTimeout, TaskFailed
from lorascope.harness.models import GenerationRequest, LoraSpec
from tests.fakes import MALFORMED, TEST_KEY as KEY, Reply
from tests.fakes.images import make_image

LORA = LoraSpec(id="coloring-book", scale=0.7, url="https://example.org/weights/coloring.safetensors")


def request(**kw) -> GenerationRequest:
    base = dict(prompt="c0l0ringb00k, a fox in a forest", width=512, height=768, seed=42, loras=(LORA,))
    base.update(kw)
    return GenerationRequest(**base)


async def test_lora_request_goes_over_the_wire_as_documented(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.book.reported_times = (0.15, 1.234)  # debug_info: execute - submit, complete - execute
    seen_before_poll = []

    async def on_submitted(task_id: str) -> None:
        seen_before_poll.append((task_id, len(fake.hits("result"))))

    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request(), on_submitted)

    (submit,) = fake.hits("submit")
    assert submit.method == "POST" and submit.path == "/v3/async/z-image-turbo-lora"
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    assert submit.headers["content-type"] == "application/json"
    assert submit.json == {
        "prompt": "c0l0ringb00k, a fox in a forest",
        "size": "512*768",
        "seed": 42,
        "loras": [{"path": "https://example.org/weights/coloring.safetensors", "scale": 0.7}],
    }
    # the write-ahead callback ran with the task id before the first task-result poll
    assert seen_before_poll == [(result.request_id, 0)]
    (poll,) = fake.hits("result")
    assert poll.path == "/v3/async/task-result" and poll.query == {"task_id": result.request_id}
    assert poll.headers["authorization"] == f"Bearer {KEY}"
    # the image CDN never sees the key
    (download,) = fake.hits("image")
    assert "authorization" not in download.headers

    (image,) = result.images
    assert image.data == make_image("png", 512, 768, 42)
    assert (image.format, image.width, image.height) == ("png", 512, 768)
    assert result.seed == 42  # Novita sends it as a string
    assert result.timings.queue_s == pytest.approx(0.15)
    assert result.timings.inference_s == pytest.approx(1.234)
    assert result.timings.download_s is not None and result.timings.total_s >= 0
    assert result.cost.source == "unknown" and result.cost.usd is None
    assert KEY not in repr(result.metadata)


async def test_no_lora_uses_base_endpoint_and_random_seed(fake_factory, make_provider):
    fake = fake_factory("novita")
    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request(loras=(), seed=None))
    (submit,) = fake.hits("submit")
    assert submit.path == "/v3/async/z-image-turbo"
    assert submit.json["seed"] == -1 and "loras" not in submit.json
    assert isinstance(result.seed, int) and result.seed > 0  # the seed Novita picked


async def test_polls_through_queued_and_processing_adaptively(fake_factory, make_provider, clock):
    """First poll soon after submitting, then an eighth of the time elapsed (so the measured
    latency overshoots by at most ~1/8), never shorter than the first delay, capped."""
    fake = fake_factory("novita")
    fake.book.polls_before_done = 40
    async with make_provider("novita", fake, poll_interval_s=0.1, poll_max_interval_s=2.0) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("result")) == 41 and result.images
    sleeps = clock.sleeps
    assert sleeps[:8] == [pytest.approx(0.1)] * 8  # an eighth of < 0.8 s is under the first delay
    elapsed = 0.0
    for delay in sleeps:
        assert delay == pytest.approx(min(2.0, max(0.1, elapsed / 8)))
        elapsed += delay
    assert sleeps == sorted(sleeps) and max(sleeps) == pytest.approx(2.0)  # growing, capped


async def test_failed_task_reports_its_reason(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.book.outcome = "fail"
    fake.book.fail_reason = "lora file could not be loaded: 404"
    async with make_provider("novita", fake) as provider:
        with pytest.raises(TaskFailed) as info:
            await provider.generate(request())
    assert info.value.kind == "task_failed"
    assert "lora file could not be loaded: 404" in str(info.value)
    assert info.value.request_id in fake.tasks


async def test_filtered_task_is_content_filtered(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.book.outcome = "filtered"
    async with make_provider("novita", fake) as provider:
        with pytest.raises(ContentFiltered, match="NSFW"):
            await provider.generate(request())


async def test_expired_image_url_is_refreshed_once_through_task_result(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.expired_tokens = 1
    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("result")) == 2  # the poll, then one re-poll for fresh URLs
    tokens = [hit.query["token"] for hit in fake.hits("image")]
    assert tokens == ["1", "2"]
    assert result.images[0].data == make_image("png", 512, 768, 42)


async def test_image_url_that_stays_expired_is_a_clear_error(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.expired_tokens = 99
    async with make_provider("novita", fake) as provider:
        with pytest.raises(BadResponse) as info:
            await provider.generate(request())
    message = str(info.value)
    assert "HTTP 403" in message and "expired" in message and "image_url_ttl=[3600]" in message
    assert len(fake.hits("image")) == 2  # tried the first URL and the refreshed one, no more


async def test_base64_output_is_decoded_without_a_download(fake_factory, make_provider):
    fake = fake_factory("novita")
    async with make_provider("novita", fake) as provider:  # documented on the base endpoint only (001)
        result = await provider.generate(request(loras=(), options={"enable_base64_output": True}))
    assert fake.hits("submit")[0].json["enable_base64_output"] is True
    assert fake.hits("image") == []
    assert result.images[0].data == make_image("png", 512, 768, 42)
    # the stored metadata does not carry the image blob
    assert len(repr(result.metadata)) < 2000


async def test_task_that_never_finishes_hits_the_deadline(fake_factory, make_provider, clock):
    fake = fake_factory("novita")
    fake.book.outcome = "never"
    async with make_provider("novita", fake, deadline_s=30, poll_interval_s=2, poll_max_interval_s=4) as provider:
        with pytest.raises(ProviderTimeout, match="deadline_s=30"):
            await provider.generate(request())
    assert sum(clock.sleeps) == pytest.approx(30)
    assert {hit.route for hit in fake.requests} == {"submit", "result"}  # Novita has no cancel endpoint


async def test_resume_polls_by_id_without_resubmitting(fake_factory, make_provider):
    fake = fake_factory("novita")
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{fake.url}/v3/async/z-image-turbo-lora",
            json={"prompt": "a fox", "size": "512*512", "seed": 7, "loras": []},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    task_id = answer.json()["task_id"]
    async with make_provider("novita", fake) as provider:
        result = await provider.resume(task_id, request(width=512, height=512, seed=7))
    assert len(fake.hits("submit")) == 1  # only ours above
    assert result.request_id == task_id and result.seed == 7


async def test_submit_is_retried_after_429_with_retry_after(fake_factory, make_provider, clock):
    fake = fake_factory("novita")
    fake.script("submit", Reply(429, {"code": 429, "reason": "RATE_LIMIT", "message": "too many images per minute"},
                                {"Retry-After": "7"}))
    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("submit")) == 2
    assert clock.sleeps[0] == 7.0
    assert result.images


async def test_poll_survives_a_500(fake_factory, make_provider, clock):
    fake = fake_factory("novita")
    fake.script("result", Reply(500, {"message": "internal error"}))
    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("result")) == 2
    assert clock.sleeps == [0.25]  # full jitter: rng 0.5 * base 0.5 * 2**0
    assert result.images


async def test_malformed_json_from_submit_is_a_bad_response_and_not_resent(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.script("submit", Reply(200, MALFORMED))
    async with make_provider("novita", fake) as provider:
        with pytest.raises(BadResponse, match="malformed JSON"):
            await provider.generate(request())
    assert len(fake.hits("submit")) == 1


async def test_provider_rejection_carries_its_message(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.script("submit", Reply(400, {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "loras[0].path: not found"}))
    async with make_provider("novita", fake) as provider:
        with pytest.raises(Exception) as info:
            await provider.generate(request())
    assert info.value.kind == "rejected"
    assert "loras[0].path: not found" in str(info.value)
    assert len(fake.hits("submit")) == 1  # a request that is wrong is not retried


async def test_wrong_key_names_the_variable_and_never_shows_the_key(fake_factory, make_provider):
    fake = fake_factory("novita", key="the-right-key-000")
    async with make_provider("novita", fake) as provider:
        with pytest.raises(AuthError) as info:
            await provider.generate(request())
    assert "NOVITA_API_KEY" in str(info.value)
    for text in (str(info.value), repr(info.value), info.value.message, repr(provider)):
        assert KEY not in text
    assert len(fake.hits("submit")) == 1


async def test_missing_key_fails_before_any_request(fake_factory, make_provider, monkeypatch):
    fake = fake_factory("novita")
    provider = make_provider("novita", fake, api_key=None)
    assert any("NOVITA_API_KEY" in p for p in provider.validate(request()))
    with pytest.raises(AuthError, match="NOVITA_API_KEY"):
        await provider.generate(request())
    assert fake.requests == []
    monkeypatch.setenv("NOVITA_API_KEY", KEY)
    assert provider.validate(request()) == []


async def test_invalid_request_lists_every_problem_and_sends_nothing(fake_factory, make_provider):
    fake = fake_factory("novita")
    bad = request(width=2048, height=128, seed=-5, steps=4, num_images=2,
                  loras=(LoraSpec(scale=5.0, repo="a/b"),), options={"bogus": 1, "enable_base64_output": True})
    bad_base = request(width=2048, height=128, loras=())
    async with make_provider("novita", fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(bad)
        with pytest.raises(InvalidRequest) as base_info:
            await provider.generate(bad_base)
    problems = info.value.problems
    joined = "\n".join(problems + base_info.value.problems)
    for needle in ("width 2048", "height 128", "seed -5", "steps=4", "num_images=2", "scale 5", "https URL", "bogus",
                   "enable_base64_output: novita documents it for /v3/async/z-image-turbo only"):
        assert needle in joined, needle
    # the side range is on the base page (001) only; the LoRA page (000) states none
    assert not any(p.startswith(("width", "height")) for p in problems)
    assert fake.requests == []


async def test_lora_endpoint_takes_sizes_its_page_does_not_limit(fake_factory, make_provider):
    fake = fake_factory("novita")
    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request(width=2048, height=1024))
    assert fake.hits("submit")[0].json["size"] == "2048*1024"
    assert (result.images[0].width, result.images[0].height) == (2048, 1024)


async def test_ctrl_c_during_polling_reraises(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.book.outcome = "never"
    provider = make_provider("novita", fake, deadline_s=10_000)
    submitted = asyncio.Event()

    async def on_submitted(task_id: str) -> None:
        submitted.set()

    task = asyncio.create_task(provider.generate(request(), on_submitted))
    await submitted.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.aclose()


async def test_image_download_follows_storage_redirects_without_the_key(fake_factory, make_provider):
    fake = fake_factory("novita")
    fake.redirect_images = True
    async with make_provider("novita", fake) as provider:
        result = await provider.generate(request())
    (hop,) = fake.hits("redirect")
    (image,) = fake.hits("image")
    assert "authorization" not in hop.headers and "authorization" not in image.headers
    assert result.images[0].data == make_image("png", 512, 768, 42)

