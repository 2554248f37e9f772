"""Replicate's predictions API against its loopback fake: wire format, the model version in
the fingerprint, failures, deadlines and cancel, resume by prediction id. A SIGKILLed `lorascope run`
resumed without a second prediction is tested with the other task-based hosts in
tests/harness/test_harness_reliability.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lorascope.harness.errors import AuthError, BadResponse, ContentFiltered, InvalidRequest, ProviderTimeout, RejectedRequest, TaskFailed
from lorascope.harness.fingerprint import fingerprint
from lorascope.harness.models import GenerationRequest, LoraSpec
from tests.fakes import TEST_KEY as KEY, Reply
from tests.fakes.images import make_image
from tests.fakes.replicate import VERSION
from tests.harness.test_harness_reliability import FAST_POLL, lorascope
from tests.helpers.harness_fakes import CATALOGUE

LORA = LoraSpec(id="coloring-book", scale=0.7, url="https://example.org/weights/coloring.safetensors")
INK = LoraSpec(id="ink", scale=1.25, url="https://example.org/weights/ink.safetensors")
NEWER = "0" * 63 + "1"


def request(**kw) -> GenerationRequest:
    base = dict(prompt="c0l0ringb00k, a fox in a forest", width=512, height=768, seed=42, loras=(LORA, INK))
    base.update(kw)
    return GenerationRequest(**base)


async def test_prediction_goes_over_the_wire_as_documented(fake_factory, make_provider):
    fake = fake_factory("replicate")
    fake.book.reported_times = (0.25, 1.234)  # (queue s, inference s) the provider reports
    seen_before_poll = []

    async def on_submitted(prediction_id: str) -> None:
        seen_before_poll.append((prediction_id, len(fake.hits("get"))))

    async with make_provider("replicate", fake) as provider:
        result = await provider.generate(request(), on_submitted)

    (model,) = fake.hits("model")  # the latest version, asked once
    assert model.path == "/v1/models/prunaai/z-image-turbo-lora"
    assert model.headers["authorization"] == f"Bearer {KEY}"
    (submit,) = fake.hits("submit")
    assert submit.method == "POST" and submit.path == "/v1/predictions"
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    assert submit.headers["content-type"] == "application/json"
    assert "prefer" not in submit.headers  # the id must come back at once, to be written ahead
    assert submit.json == {
        "version": VERSION,
        "input": {
            "prompt": "c0l0ringb00k, a fox in a forest",
            "width": 512,
            "height": 768,
            "num_inference_steps": 8,
            "guidance_scale": 0,
            "output_format": "png",
            "seed": 42,
            "lora_weights": ["https://example.org/weights/coloring.safetensors",
                             "https://example.org/weights/ink.safetensors"],
            "lora_scales": [0.7, 1.25],
        },
    }
    assert seen_before_poll == [(result.request_id, 0)]  # written ahead before the first poll
    (poll,) = fake.hits("get")
    assert poll.path == f"/v1/predictions/{result.request_id}"
    assert poll.headers["authorization"] == f"Bearer {KEY}"
    (download,) = fake.hits("image")
    assert "authorization" not in download.headers  # the delivery host never sees the token

    (image,) = result.images
    assert image.data == make_image("png", 512, 768, 42)
    assert result.seed == 42
    assert result.timings.inference_s == pytest.approx(1.234)  # metrics.predict_time
    assert result.timings.queue_s == pytest.approx(0.25)  # started_at - created_at
    assert result.cost.source == "unknown" and result.cost.usd is None
    assert result.metadata["version"] == VERSION
    assert result.software == {"replicate_model": f"prunaai/z-image-turbo-lora:{VERSION}"}
    assert KEY not in repr(result.metadata)


async def test_jpeg_is_asked_for_as_jpg_and_no_lora_sends_no_lora_fields(fake_factory, make_provider):
    fake = fake_factory("replicate")
    async with make_provider("replicate", fake) as provider:
        result = await provider.generate(request(loras=(), seed=None, output_format="jpeg"))
    inputs = fake.hits("submit")[0].json["input"]
    assert inputs["output_format"] == "jpg"
    assert not {"seed", "lora_weights", "lora_scales"} & set(inputs)
    assert result.images[0].format == "jpeg"


async def test_pinned_version_is_sent_without_asking_for_the_latest(fake_factory, make_provider):
    fake = fake_factory("replicate")
    fake.versions.add(NEWER)
    async with make_provider("replicate", fake, version=NEWER) as provider:
        assert provider.model_version() == NEWER
        result = await provider.generate(request())
    assert fake.hits("model") == []
    assert fake.hits("submit")[0].json["version"] == NEWER
    assert result.metadata["version"] == NEWER


def test_a_new_model_version_changes_every_fingerprint(fake_factory, make_provider):
    """A regression check re-runs a suite: when Replicate publishes a new version, the same
    cell must be a new generation (not the stored or cached one), and the run records it."""
    fake = fake_factory("replicate")
    first = make_provider("replicate", fake)
    assert first.model_version() == VERSION
    assert first.model_version() == VERSION
    assert len(fake.hits("model")) == 1  # asked once per run
    fake.latest_version = NEWER
    later = make_provider("replicate", fake)
    assert later.model_version() == NEWER
    req = request()
    assert fingerprint("replicate", later.endpoint(req), NEWER, req) != fingerprint("replicate", first.endpoint(req), VERSION, req)


def test_bad_version_setting_is_refused_by_the_config():
    from lorascope.harness.providers.replicate import ReplicateConfig

    with pytest.raises(ValueError, match="version"):
        ReplicateConfig(version="latest")


async def test_create_is_retried_after_429_with_retry_after(fake_factory, make_provider, clock):
    fake = fake_factory("replicate")
    fake.script("submit", Reply(429, {"title": "Request was throttled", "status": 429,
                                      "detail": "Request was throttled. Expected available in 3 seconds."},
                                {"Retry-After": "3"}))
    async with make_provider("replicate", fake) as provider:
        result = await provider.generate(request())
    assert len(fake.hits("submit")) == 2
    assert clock.sleeps[0] == 3.0
    assert result.images


async def test_failed_prediction_reports_its_error(fake_factory, make_provider):
    fake = fake_factory("replicate")
    fake.book.outcome = "fail"
    fake.book.fail_reason = "Failed to download LoRA weights: 404"
    async with make_provider("replicate", fake) as provider:
        with pytest.raises(TaskFailed) as info:
            await provider.generate(request())
    assert info.value.kind == "task_failed"
    assert "Failed to download LoRA weights: 404" in str(info.value)
    assert info.value.request_id in fake.tasks
    assert fake.hits("image") == []


async def test_nsfw_failure_is_content_filtered(fake_factory, make_provider):
    fake = fake_factory("replicate")
    fake.book.outcome = "filtered"
    async with make_provider("replicate", fake) as provider:
        with pytest.raises(ContentFiltered, match="NSFW"):
            await provider.generate(request())


async def test_deadline_cancels_the_prediction(fake_factory, make_provider, clock):
    fake = fake_factory("replicate")
    fake.book.outcome = "never"
    async with make_provider("replicate", fake, deadline_s=30, poll_interval_s=2, poll_max_interval_s=4) as provider:
        with pytest.raises(ProviderTimeout, match="deadline_s=30"):
            await provider.generate(request())
    (cancel,) = fake.hits("cancel")
    (submit,) = fake.hits("submit")
    prediction_id = cancel.path.split("/")[3]
    assert cancel.method == "POST" and cancel.path == f"/v1/predictions/{prediction_id}/cancel"
    assert cancel.headers["authorization"] == f"Bearer {KEY}"
    assert fake.tasks[prediction_id].cancelled
    assert sum(clock.sleeps) == pytest.approx(30)


async def test_ctrl_c_cancels_the_prediction(fake_factory, make_provider):
    fake = fake_factory("replicate")
    fake.book.outcome = "never"
    provider = make_provider("replicate", fake, deadline_s=10_000)
    submitted = asyncio.Event()

    async def on_submitted(prediction_id: str) -> None:
        submitted.set()

    task = asyncio.create_task(provider.generate(request(), on_submitted))
    await submitted.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.aclose()
    assert len(fake.hits("cancel")) == 1


async def test_resume_polls_the_same_prediction_without_creating_one(fake_factory, make_provider):
    fake = fake_factory("replicate")
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}/v1/predictions", headers={"Authorization": f"Bearer {KEY}"},
                                   json={"version": VERSION, "input": {"prompt": "a fox", "width": 512, "height": 512,
                                                                       "seed": 7, "output_format": "png"}})
    assert answer.status_code == 201
    prediction_id = answer.json()["id"]
    async with make_provider("replicate", fake) as provider:
        result = await provider.resume(prediction_id, request(width=512, height=512, seed=7))
    assert len(fake.hits("submit")) == 1  # only ours above
    assert result.request_id == prediction_id and result.images[0].data == make_image("png", 512, 512, 7)


async def test_unknown_version_is_rejected_with_replicates_words_and_not_retried(fake_factory, make_provider):
    fake = fake_factory("replicate")
    async with make_provider("replicate", fake, version=NEWER) as provider:
        with pytest.raises(RejectedRequest, match="does not exist"):
            await provider.generate(request())
    assert len(fake.hits("submit")) == 1


async def test_output_gone_after_retention_is_a_clear_error(fake_factory, make_provider):
    fake = fake_factory("replicate")
    fake.outputs_gone = True
    async with make_provider("replicate", fake) as provider:
        with pytest.raises(BadResponse) as info:
            await provider.generate(request())
    assert info.value.kind == "bad_response"
    assert "HTTP 404" in str(info.value) and "after an hour" in str(info.value)


async def test_wrong_token_names_the_variable_and_never_shows_it(fake_factory, make_provider):
    fake = fake_factory("replicate", key="r8_the-right-token-000")
    provider = make_provider("replicate", fake)
    with pytest.raises(AuthError) as planning:
        provider.model_version()  # the planning-time lookup maps errors the same way
    async with provider:
        with pytest.raises(AuthError) as info:
            await provider.generate(request())
    for error in (planning.value, info.value):
        assert "REPLICATE_API_TOKEN" in str(error) and "valid authentication token" in str(error)
        assert KEY not in str(error) and KEY not in repr(error)
    assert fake.hits("submit") == []


async def test_missing_token_is_a_validation_problem_and_nothing_is_asked(fake_factory, make_provider, monkeypatch):
    fake = fake_factory("replicate")
    provider = make_provider("replicate", fake, api_key=None)
    assert provider.model_version() == ""  # planning goes on, so every problem is listed at once
    assert any("REPLICATE_API_TOKEN" in p for p in provider.validate(request()))
    with pytest.raises(AuthError, match="REPLICATE_API_TOKEN"):
        await provider.generate(request())
    assert fake.requests == []
    monkeypatch.setenv("REPLICATE_API_TOKEN", KEY)
    assert provider.validate(request()) == [] and provider.model_version() == VERSION


async def test_invalid_request_lists_every_problem_and_sends_nothing(fake_factory, make_provider):
    fake = fake_factory("replicate")
    bad = request(width=2000, height=32, steps=60, num_images=2,
                  loras=(LoraSpec(scale=5.0, url="https://example.org/a.safetensors"), LoraSpec(scale=1.0, repo="a/b")),
                  options={"bogus": 1, "output_quality": 101})
    async with make_provider("replicate", fake, version=VERSION) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(bad)
    joined = "\n".join(info.value.problems)
    for needle in ("width 2000", "height 32", "steps 60", "num_images=2", "scale 5", "https URL",
                   "bogus", "output_quality 101"):
        assert needle in joined, needle
    assert fake.requests == []


def test_a_new_model_version_is_generated_anew_and_compare_catches_it(tmp_path):
    """`lorascope run` reuses the shared cache by fingerprint. The version is in the
    fingerprint, so after Replicate publishes a new version the same suite buys new
    predictions (counted at the fake) instead of serving the old pictures, and `lorascope
    compare` sees the new version's different pictures as a regression."""
    from tests.fakes.replicate import ReplicateFake

    project = tmp_path / "proj"
    project.mkdir()
    (project / "loras.yaml").write_text(CATALOGUE)
    suite = project / "ver.yaml"
    suite.write_text(f"name: ver\nproviders:\n  - replicate: {{{FAST_POLL}}}\nloras: [paint]\nscales: [1.0]\n"
                     "prompts:\n  - {id: cat, text: a cat on a mat}\nseeds: [1]\nsize: 256x256\nsteps: 8\n")
    with ReplicateFake(key=KEY) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LORASCOPE_", "REPLICATE_"))}
        env.update(REPLICATE_API_TOKEN=KEY, LORASCOPE_REPLICATE_URL=fake.url, LORASCOPE_CACHE=str(tmp_path / "cache"),
                   PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        base, today = tmp_path / "base", tmp_path / "today"
        first = lorascope([str(suite), "--out", str(base)], env, project)
        assert first.returncode == 0, first.stderr + first.stdout
        assert [hit.json["version"] for hit in fake.hits("submit")] == [VERSION, VERSION]

        fake.latest_version = NEWER  # Replicate publishes a new version of the model
        second = lorascope([str(suite), "--out", str(today)], env, project)
        assert second.returncode == 0, second.stderr + second.stdout
        assert [hit.json["version"] for hit in fake.hits("submit")] == [VERSION, VERSION, NEWER, NEWER]
        assert set(pd.read_parquet(base / "results.parquet").model_version) == {VERSION}
        assert set(pd.read_parquet(today / "results.parquet").model_version) == {NEWER}

        compare = subprocess.run([str(Path(sys.executable).parent / "lorascope"), "compare", str(base),
                                  str(today), "--clip", "tiny-random", "--no-progress"],
                                 env=env, cwd=project, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 1, compare.stdout + compare.stderr
    assert "regressed" in compare.stdout and "SSIM" in compare.stdout  # the pictures changed
    # and it says why in words, before the cells, and in compare.json's notes
    said = " ".join(compare.stdout.split())
    assert f"replicate: the model version changed ({VERSION[:12]}…{VERSION[-6:]} → {NEWER[:12]}…{NEWER[-6:]})" in said
    assert said.index("model version changed") < said.index("SSIM")
    assert said.count("model version changed") == 1  # said once, first
    saved = json.loads((today / "compare.json").read_text())
    assert any("model version changed" in note for note in saved["notes"])
    assert saved["providers"]["replicate"]["run_model_versions"] == [NEWER]
