"""The Ray worker class in this process (no Ray): torch's CUDA out-of-memory error, raised inside
the real pipeline call and re-raised by the local provider as its own error, comes back as
`oom` with kind `out_of_memory`; other failures do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


# ---- LoRA files: the worker loads only the planned bytes, from its path or its cache folder ----

@pytest.fixture
def lora_file(tmp_path):
    """A LoRA that fits the tiny pipeline, and its sha256."""
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider
    from lorascope.registry.digest import sha256_file

    transformer = DiffusersProvider({"model": "tiny-random"}).load_pipeline().transformer
    path = Path(write_lora(tmp_path / "driver" / "style.safetensors", transformer, seed=3))
    return Path(path), sha256_file(path)


def _shipping_worker(monkeypatch, cache: Path, mode: str = "auto") -> PipelineWorker:
    pytest.importorskip("diffusers")
    from lorascope.harness.providers.local import DiffusersProvider

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return PipelineWorker(DiffusersProvider, {"model": "tiny-random"}, ship_loras=mode, lora_cache=str(cache))


def _lora_request(path: str, sha: str) -> GenerationRequest:
    from lorascope.harness.models import LoraSpec

    return GenerationRequest(prompt="a red cube", width=64, height=64, steps=2, seed=1,
                             loras=(LoraSpec(id="style", scale=0.8, path=path, sha256=sha),))


def test_a_worker_without_the_file_asks_for_it_then_loads_the_shipped_copy(monkeypatch, tmp_path, lora_file):
    driver_path, sha = lora_file
    data = driver_path.read_bytes()
    elsewhere = str(tmp_path / "other-node" / "style.safetensors")  # the driver's path, not on this node
    cache = tmp_path / "worker-cache"
    worker = _shipping_worker(monkeypatch, cache)
    request = _lora_request(elsewhere, sha)

    asked = worker.generate_batch([request], {elsewhere: sha}, {})
    assert asked["need"] == [sha] and asked["results"] == [] and asked["error"] is None
    assert worker.batches == 0  # nothing ran

    reply = worker.generate_batch([request], {elsewhere: sha}, {sha: data})
    assert reply["error"] is None and len(reply["results"]) == 1
    cached = cache / sha[:2] / f"{sha}.safetensors"
    assert reply["results"][0].metadata["lora_files"] == [str(cached)] and cached.read_bytes() == data
    assert reply["state"]["loaded"] == [elsewhere]  # placement keeps speaking the driver's path
    assert reply["state"]["file_loads"] == {elsewhere: 1} and reply["state"]["shipped_in"] == 1

    in_process = asyncio.run(worker.provider.generate_batch([_lora_request(str(driver_path), sha)]))
    assert in_process[0].images[0].data == reply["results"][0].images[0].data  # the same picture

    again = worker.generate_batch([request], {elsewhere: sha}, {})  # kept: nothing shipped again
    assert again["error"] is None and "need" not in again and again["state"]["shipped_in"] == 1


def test_shipped_bytes_that_are_not_the_planned_ones_fail_the_batch_in_one_line(monkeypatch, tmp_path, lora_file):
    driver_path, sha = lora_file
    cache = tmp_path / "worker-cache"
    worker = _shipping_worker(monkeypatch, cache)
    elsewhere = str(tmp_path / "other-node" / "style.safetensors")
    wrong = driver_path.read_bytes()[:-4] + b"\x00\x00\x00\x01"

    reply = worker.generate_batch([_lora_request(elsewhere, sha)], {elsewhere: sha}, {sha: wrong})
    kind, message = reply["error"]
    assert kind == "lora_mismatch" and "\n" not in message and sha[:12] in message and "not loaded" in message
    assert reply["results"] == [] and worker.batches == 0 and worker.provider.lora_loads == 0
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_other_bytes_at_the_path_are_never_loaded(monkeypatch, tmp_path, lora_file):
    driver_path, sha = lora_file
    impostor = tmp_path / "node" / "style.safetensors"
    impostor.parent.mkdir()
    impostor.write_bytes(driver_path.read_bytes()[:-4] + b"\x00\x00\x00\x01")  # same name, other bytes

    auto = _shipping_worker(monkeypatch, tmp_path / "c1")
    assert auto.generate_batch([_lora_request(str(impostor), sha)], {str(impostor): sha}, {})["need"] == [sha]

    never = _shipping_worker(monkeypatch, tmp_path / "c2", mode="never")
    reply = never.generate_batch([_lora_request(str(impostor), sha)], {str(impostor): sha}, {})
    kind, message = reply["error"]
    assert kind == "lora_unavailable" and "other bytes" in message and "ship_loras is never" in message
    assert "\n" not in message and never.provider.lora_loads == 0


def test_a_lora_the_worker_checked_is_not_read_again_to_be_loaded(monkeypatch, tmp_path, lora_file):
    """The worker checks a LoRA's sha256 through the local provider's own hash memo, so loading
    the file it just checked reads it for its hash once, not twice."""
    import lorascope.registry.digest as digest

    path, sha = lora_file
    worker = _shipping_worker(monkeypatch, tmp_path / "worker-cache")
    hashed: list[str] = []
    real = digest.sha256_file
    monkeypatch.setattr(digest, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    reply = worker.generate_batch([_lora_request(str(path), sha)], {str(path): sha}, {})
    assert reply["error"] is None and len(reply["results"]) == 1
    assert reply["results"][0].metadata["lora_files"] == [str(path)]
    assert hashed == [str(path)]
