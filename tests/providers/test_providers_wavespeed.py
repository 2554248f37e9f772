"""WaveSpeedAI's v3 prediction API against its loopback fake: wire format, the `{code,
message, data}` envelope, failures, deadlines, resume by prediction id, and a SIGKILLed
`lorascope run` resumed without a second submission (counted at the fake, in its own process)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lorascope.harness.errors import AuthError, BadResponse, ContentFiltered, InvalidRequest, ProviderTimeout, RejectedRequest, TaskFailed
from lorascope.harness.models import GenerationRequest, LoraSpec
from lorascope.harness.store import integrity_ok
from tests.fakes import TEST_KEY as KEY, Reply
from tests.fakes.images import make_image
from tests.harness.test_harness_reliability import (
    FAST_POLL, N_CELLS, Fake, body_key, count_status, db_rows, lorascope, start_run, wait_for,
)
from tests.helpers.harness_fakes import CATALOGUE

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


# -- a real `lorascope run`, SIGKILLed and resumed ---------------------------------------------


class WavespeedProcess(Fake):
    def submits(self) -> list[dict]:
        return [r for r in self.requests() if r["route"] == "submit" and r["json"] is not None]


def test_sigkilled_run_resumes_by_prediction_id_without_a_second_submission(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "loras.yaml").write_text(CATALOGUE)
    fake = WavespeedProcess("wavespeed", tmp_path, latency=0.6)
    try:
        suite = project / "rel.yaml"
        suite.write_text(
            f"name: rel\nproviders:\n  - wavespeed: {{concurrency: 4, {FAST_POLL}}}\n"
            "loras: [paint]\nscales: [0.5, 1.0]\n"
            "prompts:\n  - {id: cat, text: a cat on a mat}\n  - {id: dog, text: a dog in fog}\n"
            "seeds: [1, 2, 3]\nsize: 512x512\nsteps: 8\n"
        )
        run = tmp_path / "run"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LORASCOPE_", "WAVESPEED_"))}
        env.update(WAVESPEED_API_KEY=KEY, LORASCOPE_WAVESPEED_URL=fake.url, LORASCOPE_CACHE=str(tmp_path / "cache"),
                   PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = start_run([str(suite), "--out", str(run)], env, project)
        wait_for(lambda: len(fake.submits()) >= 6 and count_status(run, "submitted") >= 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert integrity_ok(run / "run.db")
        in_flight = db_rows(run, "SELECT task_id FROM generations WHERE status = 'submitted'")
        assert in_flight and all(task_id for (task_id,) in in_flight)

        second = lorascope([str(suite), "--out", str(run)], env, project)
        assert second.returncode == 0, second.stderr + second.stdout
        submits = Counter(body_key(r) for r in fake.submits())
        assert len(submits) == N_CELLS, "\n".join(submits)
        unconfirmed = db_rows(run, "SELECT COUNT(*) FROM generations WHERE error_kind = 'interrupted' AND task_id IS NULL")[0][0]
        assert sum(n - 1 for n in submits.values()) <= unconfirmed
        polled = {r["path"].split("/")[4] for r in fake.requests() if r["route"] == "result"}
        assert {task_id for (task_id,) in in_flight} <= polled  # each accepted prediction collected by its id
        resumed = db_rows(run, "SELECT COUNT(*) FROM generations WHERE origin = 'resumed' AND status = 'succeeded'")[0][0]
        assert resumed == len(in_flight)
        frame = pd.read_parquet(run / "results.parquet")
        assert len(frame) == N_CELLS and set(frame.status) == {"succeeded"}
    finally:
        fake.stop()
