"""The runner with the real local provider (diffusers' ZImagePipeline, tiny random weights,
CPU): seeds of one cell batched through `generate_batch`, LoRA sets kept together."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from lorascope.harness.runner import run_suite_async
from lorascope.harness.suite import load_suite

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_transformer():
    from lorascope.harness.providers.local import DiffusersProvider

    return DiffusersProvider({"model": "tiny-random"}).load_pipeline().transformer


async def test_local_grid_batches_seeds_and_reruns_for_free(tmp_path, tiny_transformer, monkeypatch):
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider

    project = tmp_path / "proj"
    write_lora(project / "loras" / "style.safetensors", tiny_transformer, seed=3)
    (project / "loras.yaml").write_text(
        "version: 1\nloras:\n  - id: style\n    name: Style\n    source: {path: loras/style.safetensors}\n"
        "    kind: style\n    triggers: [st7le]\n    scale: {recommended: 1.0, range: [0.0, 2.0]}\n"
    )
    (project / "suite.yaml").write_text(
        "name: local\nproviders:\n  - diffusers: {model: tiny-random, batch_seeds: true}\n"
        "loras: [style]\nscales: [0, 1.0]\nprompts: [a red cube]\nseeds: [1, 2, 3]\nsize: 64x64\nsteps: 2\n"
    )
    suite = load_suite(project / "suite.yaml")
    calls: list[list[int]] = []
    real = DiffusersProvider.generate_batch

    async def counting(self, requests):
        calls.append([r.seed for r in requests])
        return await real(self, requests)

    monkeypatch.setattr(DiffusersProvider, "generate_batch", counting)
    summary = await run_suite_async(suite, tmp_path / "run", progress=False, handle_sigint=False)
    assert summary.exit_code == 0, summary
    # baseline, scale 0, scale 1: one batch of three seeds each, LoRA sets together
    assert calls == [[1, 2, 3], [1, 2, 3], [1, 2, 3]]
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(frame) == 9 and set(frame.status) == {"succeeded"}
    assert set(frame.cost_source) == {"free"}
    assert (frame.width == 64).all() and (frame.height == 64).all()
    styled = frame[(frame.lora == "style") & (frame.scale == 1.0)]
    assert all(p.startswith("st7le") for p in styled.final_prompt)
    base = frame[frame.lora == ""].set_index("seed").image_sha256
    assert (styled.set_index("seed").image_sha256 != base).all()  # the LoRA changes the pixels
    meta = sqlite3.connect(tmp_path / "run" / "run.db").execute("SELECT metadata_json FROM generations").fetchall()
    assert any(json.loads(m[0]).get("batch_size") == 3 for m in meta)

    calls.clear()
    again = await run_suite_async(suite, tmp_path / "run", progress=False, handle_sigint=False)
    assert calls == [] and again.providers["diffusers"].stored == 9
