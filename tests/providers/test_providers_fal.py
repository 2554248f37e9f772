"""fal's queue protocol against the loopback fake: submit, status polling, response,
cancel on deadline and Ctrl-C, returned-URL rebasing, resume by request id."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lorascope.harness.errors import AuthError, ContentFiltered, ProviderTimeout, RejectedRequest, TaskFailed
from lorascope.harness.models import GenerationRequest, LoraSpec
from tests.fakes import TEST_KEY as KEY, Reply
from tests.fakes.images import make_image

LORA = LoraSpec(id="classic-painting", scale=0.6, repo="renderartist/Classic-Painting-Z-Image-Turbo-LoRA",
                file="Classic_Painting.safetensors", revision="abc123")


def request(**kw) -> GenerationRequest:
    base = dict(prompt="class1cpa1nt, a harbour at dusk", width=640, height=512, seed=1234, loras=(LORA,))
    base.update(kw)
    return GenerationRequest(**base)


async def test_queue_protocol_on_the_wire(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.book.polls_before_done = 2
    fake.book.reported_times = (0.0, 0.842)  # metrics.inference_time
    submitted = []

    async def on_submitted(request_id: str) -> None:
        submitted.append((request_id, len(fake.hits("status"))))

    async with make_provider("fal", fake, poll_interval_s=0.5) as provider:
        result = await provider.generate(request(options={"acceleration": "high"}), on_submitted)

    (submit,) = fake.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/lora"
    assert submit.headers["authorization"] == f"Key {KEY}"
    assert submit.json == {
        "prompt": "class1cpa1nt, a harbour at dusk",
        "image_size": {"width": 640, "height": 512},
        "num_inference_steps": 8,
        "num_images": 1,
        "output_format": "png",
        "enable_prompt_expansion": False,
        "seed": 1234,
        "acceleration": "high",
        "loras": [{
            "path": "https://huggingface.co/renderartist/Classic-Painting-Z-Image-Turbo-LoRA/resolve/abc123/Classic_Painting.safetensors",
            "scale": 0.6,
        }],
    }
    rid = result.request_id
    assert submitted == [(rid, 0)]
    statuses = fake.hits("status")
    assert [h.path for h in statuses] == [f"/fal-ai/z-image/requests/{rid}/status"] * 3
    assert all(h.query == {"logs": "0"} and h.headers["authorization"] == f"Key {KEY}" for h in statuses)
    (response,) = fake.hits("response")
    assert response.path == f"/fal-ai/z-image/requests/{rid}" and response.headers["authorization"] == f"Key {KEY}"
    (download,) = fake.hits("image")
    assert "authorization" not in download.headers

    image = result.images[0]
    assert image.data == make_image("png", 640, 512, 0)
    assert (image.format, image.width, image.height, image.nsfw) == ("png", 640, 512, False)
    assert result.seed == 1234
    assert result.timings.inference_s == pytest.approx(0.842)  # metrics.inference_time
    assert result.timings.queue_s is not None
    assert result.cost.source == "estimated"
    assert result.cost.usd == pytest.approx(0.0085 * 640 * 512 / 1e6)
    assert "fal.ai/models/fal-ai/z-image/turbo/lora" in result.cost.basis


async def test_base_endpoint_without_loras_and_its_price(fake_factory, make_provider):
    fake = fake_factory("fal")
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(request(loras=(), output_format="jpeg", num_images=2))
    (submit,) = fake.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo" and "loras" not in submit.json
    assert [img.format for img in result.images] == ["jpeg", "jpeg"]
    assert result.cost.usd == pytest.approx(0.005 * 2 * 640 * 512 / 1e6)


async def test_returned_urls_on_another_origin_are_rebased_onto_the_configured_root(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.returned_origin = "https://queue.fal.run"  # what fal itself returns
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(request())
    # every follow-up reached the configured root (the key never went to another host)
    assert len(fake.hits("status")) == 1 and len(fake.hits("response")) == 1
    assert result.images


async def test_proxy_root_with_a_path_prefix(fake_factory, make_provider):
    fake = fake_factory("fal")
    # A gateway mounts fal under /gateway/fal; the fake's fal routes do not match the prefixed
    # paths, so scripted replies answer, and the recorded paths show where each request went.
    fake.script("unknown",
                Reply(200, {"request_id": "r-1", "status_url": "https://queue.fal.run/fal-ai/z-image/requests/r-1/status",
                            "response_url": "https://queue.fal.run/fal-ai/z-image/requests/r-1",
                            "cancel_url": "https://queue.fal.run/fal-ai/z-image/requests/r-1/cancel"}),
                Reply(200, {"status": "COMPLETED", "metrics": {}}),
                Reply(500, {"detail": "stop here"}))
    provider = make_provider("fal", fake, base_url=f"{fake.url}/gateway/fal", max_retries=0)
    assert provider.rebase("https://queue.fal.run/fal-ai/z-image/requests/r-1/status") == \
        f"{fake.url}/gateway/fal/fal-ai/z-image/requests/r-1/status"
    with pytest.raises(TaskFailed, match="stop here"):
        await provider.generate(request())
    await provider.aclose()
    paths = [h.path for h in fake.requests]
    assert paths[0] == "/gateway/fal/fal-ai/z-image/turbo/lora"
    assert paths[1] == "/gateway/fal/fal-ai/z-image/requests/r-1/status"
    assert paths[2] == "/gateway/fal/fal-ai/z-image/requests/r-1"


async def test_failed_request_reports_error(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.book.outcome = "fail"
    fake.book.fail_reason = "LoRA weights could not be downloaded"
    async with make_provider("fal", fake) as provider:
        with pytest.raises(TaskFailed, match="LoRA weights could not be downloaded"):
            await provider.generate(request())
        assert provider._urls == {}  # a long run of failures does not pile up returned URLs


async def test_content_policy_is_content_filtered(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.book.outcome = "filtered"
    async with make_provider("fal", fake) as provider:
        with pytest.raises(ContentFiltered, match="content_policy_violation"):
            await provider.generate(request())


async def test_sync_mode_data_uris_are_decoded_without_a_download(fake_factory, make_provider):
    fake = fake_factory("fal")
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(request(num_images=2, output_format="webp", options={"sync_mode": True}))
    assert fake.hits("submit")[0].json["sync_mode"] is True and fake.hits("image") == []
    assert [img.data for img in result.images] == [make_image("webp", 640, 512, i) for i in range(2)]
    assert [img.format for img in result.images] == ["webp", "webp"]
    assert len(repr(result.metadata)) < 4000  # the data URIs are not stored twice


async def test_nsfw_flags_are_kept_on_the_images(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.nsfw = True
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(request())
    assert result.images[0].nsfw is True


async def test_422_is_rejected_with_field_and_message(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.script("submit", Reply(422, {"detail": [{"loc": ["body", "loras", 0, "path"], "msg": "could not fetch LoRA", "type": "value_error"}]}))
    async with make_provider("fal", fake) as provider:
        with pytest.raises(RejectedRequest) as info:
            await provider.generate(request())
    assert "loras.0.path: could not fetch LoRA" in str(info.value)
    assert len(fake.hits("submit")) == 1


async def test_deadline_cancels_at_the_server(fake_factory, make_provider, clock):
    fake = fake_factory("fal")
    fake.book.outcome = "never"
    async with make_provider("fal", fake, deadline_s=20, poll_interval_s=1, poll_max_interval_s=5) as provider:
        with pytest.raises(ProviderTimeout):
            await provider.generate(request())
    (cancel,) = fake.hits("cancel")
    (rid,) = fake.tasks
    assert cancel.method == "PUT" and cancel.path == f"/fal-ai/z-image/requests/{rid}/cancel"
    assert cancel.headers["authorization"] == f"Key {KEY}"
    assert fake.tasks[rid].cancelled


async def test_ctrl_c_cancels_at_the_server_then_reraises(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.book.outcome = "never"
    provider = make_provider("fal", fake, deadline_s=10_000)
    submitted = asyncio.Event()

    async def on_submitted(request_id: str) -> None:
        submitted.set()

    task = asyncio.create_task(provider.generate(request(), on_submitted))
    await submitted.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.aclose()
    assert len(fake.hits("cancel")) == 1
    assert all(t.cancelled for t in fake.tasks.values())


async def test_resume_rebuilds_urls_from_the_request_id(fake_factory, make_provider):
    fake = fake_factory("fal")
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}/fal-ai/z-image/turbo/lora",
                                   json={"prompt": "x", "image_size": {"width": 512, "height": 512}, "seed": 9},
                                   headers={"Authorization": f"Key {KEY}"})
    rid = answer.json()["request_id"]
    async with make_provider("fal", fake) as provider:  # a fresh process: no URLs remembered
        result = await provider.resume(rid, request(width=512, height=512, seed=9))
    assert len(fake.hits("submit")) == 1
    assert fake.hits("status")[0].path == f"/fal-ai/z-image/requests/{rid}/status"
    assert result.request_id == rid and result.seed == 9


async def test_wrong_key_is_auth_error(fake_factory, make_provider):
    fake = fake_factory("fal", key="another-key-9999")
    async with make_provider("fal", fake) as provider:
        with pytest.raises(AuthError) as info:
            await provider.generate(request())
    assert "FAL_KEY" in str(info.value) and "No user found" in str(info.value)
    assert KEY not in str(info.value)


async def test_status_429_without_retry_after_uses_jittered_backoff(fake_factory, make_provider, clock):
    fake = fake_factory("fal")
    fake.script("status", Reply(429, {"detail": "rate limited"}), Reply(429, {"detail": "rate limited"}))
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(request())
    assert clock.sleeps[:2] == [0.25, 0.5]  # rng 0.5 x min(cap, 0.5 * 2**n)
    assert result.images


def test_validate_lists_fal_problems(make_provider):
    provider = make_provider("fal")
    bad = request(steps=12, num_images=5, loras=(LoraSpec(scale=4.5, path="/tmp/x.safetensors"),),
                  options={"acceleration": "ludicrous", "enable_safety_checker": "yes", "nope": 1, "endpoint": "base"})
    problems = "\n".join(provider.validate(bad))
    for needle in ("steps 12", "num_images 5", "scale 4.5", "needs a URL", "acceleration='ludicrous'",
                   "enable_safety_checker must be true or false", "nope", "endpoint=base cannot take LoRAs"):
        assert needle in problems, needle


def test_hub_lora_url_is_the_registry_one_quoted(make_provider):
    spec = LoraSpec(scale=1.0, repo="owner/repo", file="my lora v2.safetensors", revision="refs/pr/3")
    (lora,) = make_provider("fal").body(request(loras=(spec,)))["loras"]
    assert lora["path"] == "https://huggingface.co/owner/repo/resolve/refs%2Fpr%2F3/my%20lora%20v2.safetensors"


def test_estimate_cites_the_price_page(make_provider):
    provider = make_provider("fal")
    est = provider.estimate(request(width=1024, height=1024, options={"enable_prompt_expansion": True}))
    assert est.cost.usd == pytest.approx(0.0085 * 1.048576 + 0.0025)
    assert "https://fal.ai/models/fal-ai/z-image/turbo/lora" in est.cost.basis
    assert provider.estimate(request(loras=())).cost.usd == pytest.approx(0.005 * 640 * 512 / 1e6)


async def test_submit_500_then_success_is_sent_again(fake_factory, make_provider, clock):
    fake = fake_factory("fal")
    fake.script("submit", Reply(500, {"detail": "Internal Server Error"}))
    async with make_provider("fal", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("submit")) == 2 and len(fake.tasks) == 1  # the 500 created nothing
    assert clock.sleeps == [0.25]
    assert result.images


async def test_a_failing_write_ahead_callback_drops_the_task(fake_factory, make_provider):
    fake = fake_factory("fal")
    fake.book.outcome = "never"

    async def on_submitted(task_id: str) -> None:
        raise OSError("disk full")

    async with make_provider("fal", fake) as provider:
        with pytest.raises(OSError, match="disk full"):
            await provider.generate(request(loras=()), on_submitted)
    assert len(fake.hits("cancel")) == 1 and fake.hits("status") == []


async def test_error_served_at_response_url_is_a_failed_task(fake_factory, make_provider, clock):
    fake = fake_factory("fal")
    error = Reply(500, {"detail": "Unhandled exception in the runner"}, {"X-Fal-Error-Type": "internal_server_error"})
    fake.script("response", *[error] * 3)
    async with make_provider("fal", fake, max_retries=2) as provider:
        with pytest.raises(TaskFailed, match="completed with an error: HTTP 500: Unhandled exception"):
            await provider.generate(request())
    assert len(fake.hits("response")) == 3  # fetching a result is safe to retry


async def test_queue_position_slows_the_next_poll_and_queue_time_is_measured(fake_factory, make_provider, clock):
    """fal's guidance: with N requests ahead, the next poll waits at least N x the first delay;
    queue_s is the wait until fal first said IN_PROGRESS; inference_s is fal's own figure."""
    from tests.fakes import Reply

    fake = fake_factory("fal")
    fake.book.reported_times = (0.0, 0.5)
    fake.script("status", Reply(202, {"status": "IN_QUEUE", "queue_position": 5}),
                Reply(202, {"status": "IN_QUEUE", "queue_position": 0}),
                Reply(202, {"status": "IN_PROGRESS"}))
    async with make_provider("fal", fake, poll_interval_s=0.1, poll_max_interval_s=4) as provider:
        result = await provider.generate(request())
    assert clock.sleeps == [pytest.approx(0.5), pytest.approx(0.1), pytest.approx(0.1)]
    assert result.timings.queue_s == pytest.approx(0.6)  # submitted at 0, IN_PROGRESS seen at 0.6
    assert result.timings.inference_s == pytest.approx(0.5)
