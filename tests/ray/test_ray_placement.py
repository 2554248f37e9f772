"""Placement without Ray: LoRA sets kept warm, no batch lost or taken twice, a dead worker's
batch re-queued first; the cluster shape check names what does not fit."""

from __future__ import annotations

import pytest

from lorascope.harness.executor_ray import RayStartError, _shape
from lorascope.harness.ray_placement import Placement, lora_set
from lorascope.harness.ray_settings import RayChoice, ray_choice


def _grid() -> tuple[Placement[str], list[str]]:
    placement: Placement[str] = Placement()
    names = []
    for files in ((), ("a.safetensors",), ("b.safetensors",), ("a.safetensors", "b.safetensors")):
        for i in range(4):
            name = f"{'+'.join(files) or 'base'}#{i}"
            placement.add(lora_set(files), name)
            names.append(name)
    return placement, names


def _files(batch: str) -> set[str]:
    head = batch.split("#")[0]
    return set() if head == "base" else set(head.split("+"))


def test_two_workers_take_every_batch_once_and_load_each_file_once():
    placement, names = _grid()
    loaded: dict[str, set[str]] = {"w0": set(), "w1": set()}
    loads: dict[str, list[str]] = {"w0": [], "w1": []}
    taken: list[str] = []
    turn = 0
    while True:
        worker = ("w0", "w1")[turn % 2]
        turn += 1
        batch = placement.take(worker, loaded[worker])
        if batch is None:
            assert placement.take("w0" if worker == "w1" else "w1", set()) is None
            break
        taken.append(batch)
        new = _files(batch) - loaded[worker]
        loads[worker].extend(sorted(new))
        loaded[worker] |= new
    assert sorted(taken) == sorted(names)
    for worker, files in loads.items():
        assert len(files) == len(set(files)), (worker, files)  # each file at most once per worker
    # grouped: far fewer loads than batches carrying files (12)
    assert len(loads["w0"]) + len(loads["w1"]) <= 4


def test_a_free_worker_prefers_the_group_whose_files_it_has():
    placement, _ = _grid()
    assert placement.take("w0", {"b.safetensors"}) == "b.safetensors#0"  # not the first group: its files
    assert placement.take("w1", set()) == "base#0"  # nothing loaded: the baseline needs no file
    assert placement.take("w0", {"b.safetensors"}) == "b.safetensors#1"  # it keeps sweeping its group


def test_a_lost_batch_goes_back_to_the_front_and_its_group_is_free_again():
    placement, _ = _grid()
    first = placement.take("w0", set())
    placement.put_back(lora_set(()), first)
    placement.release("w0")
    assert placement.take("w1", set()) == first
    assert len(placement) == 15


def test_the_cluster_shape_names_what_does_not_fit():
    choice = RayChoice(address=None, workers=2, gpus_per_worker=1.0, cpus_per_worker=1.0)
    with pytest.raises(RayStartError, match=r"2 worker\(s\) x \(1 CPU, 1 GPU\).*8 CPU and 0 GPU"):
        _shape(choice, {"CPU": 8.0})
    auto = RayChoice(address=None, workers=None, gpus_per_worker=None, cpus_per_worker=1.0)
    assert _shape(auto, {"CPU": 16.0, "GPU": 4.0}) == (4, 1.0, 1.0)  # one per GPU
    assert _shape(auto, {"CPU": 2.0}) == (2, 0.0, 1.0)  # one per CPU slot


def test_the_flag_sends_only_providers_that_can_run_on_ray():
    from lorascope.harness.providers.base import HostedConfig
    from lorascope.harness.providers.local import DiffusersConfig

    assert ray_choice(DiffusersConfig(), None) is None
    assert ray_choice(DiffusersConfig(executor="ray", ray_address="auto"), None).address == "auto"
    assert ray_choice(DiffusersConfig(ray_address="auto"), "ray://head:10001").address == "ray://head:10001"
    assert ray_choice(DiffusersConfig(), "local").address is None  # start a local instance
    assert ray_choice(HostedConfig(), "local") is None  # hosted APIs stay on the asyncio loop
