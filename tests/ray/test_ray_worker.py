"""The Ray worker class in this process (no Ray): torch's CUDA out-of-memory error, raised inside
the real pipeline call and re-raised by the local provider as its own error, comes back as
`oom` with kind `out_of_memory`; other failures do not."""

from __future__ import annotations

import pytest

from lorascope.harness.models import GenerationRequest
from lorascope.harness.ray_worker import OUT_OF_MEMORY, PipelineWorker


@pytest.fixture
def worker(monkeypatch):
    pytest.importorskip("diffusers")
    from lorascope.harness.providers.local import DiffusersProvider

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the worker sets it; restored after the test
    w = PipelineWorker(DiffusersProvider, {"model": "tiny-random", "batch_seeds": True}, threads=None, oom_above=1)
    assert w.warm()["error"] is None
    return w


def _requests(*seeds: int) -> list[GenerationRequest]:
    return [GenerationRequest(prompt="a red cube", width=64, height=64, steps=2, seed=s) for s in seeds]


def test_out_of_memory_in_the_pipeline_call_is_reported_apart_and_the_worker_goes_on(worker):
    reply = worker.generate_batch(_requests(1, 2))  # two images in one call: over the hook's limit
    assert reply["oom"] is True and reply["results"] == []
    kind, message = reply["error"]
    assert kind == OUT_OF_MEMORY and "out of GPU memory" in message and "CUDA out of memory" in message
    assert reply["state"]["ooms"] == 1

    alone = worker.generate_batch(_requests(1))  # the same worker, one image: fine
    assert alone["error"] is None and not alone["oom"] and len(alone["results"]) == 1
    assert alone["results"][0].images


def test_other_failures_are_not_out_of_memory(worker):
    reply = worker.generate_batch(_requests(1)[:1] + [_requests(2)[0].model_copy(update={"steps": 3})])
    assert reply["oom"] is False and reply["error"] is not None  # not batchable: a plain provider error
    assert reply["error"][0] != OUT_OF_MEMORY and worker.ooms == 0
