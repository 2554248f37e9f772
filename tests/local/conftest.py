"""Shared fixtures for the local diffusers provider tests: one tiny pipeline per session
(building it costs imports; running it ~0.1 s), LoRA files that fit it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorascope.harness.models import GenerationRequest


@pytest.fixture(scope="session")
def tiny_provider():
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random"})
    provider.load_pipeline()
    return provider


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory, tiny_provider) -> Path:
    from lorascope.harness.lora_writer import write_foreign_lora, write_lora, write_lora_formats

    directory = tmp_path_factory.mktemp("loras")
    transformer = tiny_provider.load_pipeline().transformer
    write_lora_formats(directory, transformer, stem="style", seed=1)
    write_lora(directory / "other.safetensors", transformer, seed=2)
    write_foreign_lora(directory / "sdxl_style.safetensors")
    return directory


@pytest.fixture
def base_request() -> GenerationRequest:
    return GenerationRequest(prompt="a lighthouse at dusk", width=64, height=64, seed=7, steps=2)
