"""One local Ray instance for the Ray executor tests (2 CPUs, no dashboard), started once per
module; a tiny project (two LoRA files that fit the tiny-random pipeline, a catalogue, a
grid of 20 cells) shared by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


#: 2 prompts x 2 seeds x (baseline + 2 LoRAs x 2 scales) = 20 cells, 3 LoRA sets.
GRID = """name: raygrid
providers:
  - diffusers: {PROVIDER}
loras: [alpha, beta]
scales: [0.5, 1.0]
prompts: [a red cube on a table, a lighthouse at dusk]
seeds: [1, 2]
size: 64x64
steps: 2
"""


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance the runner finds already initialised (and leaves running)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_project(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider

    root = tmp_path_factory.mktemp("rayproj")
    transformer = DiffusersProvider({"model": "tiny-random"}).load_pipeline().transformer
    for seed, name in ((3, "alpha"), (4, "beta")):
        write_lora(root / "loras" / f"{name}.safetensors", transformer, seed=seed)
    (root / "loras.yaml").write_text(
        "version: 1\nloras:\n"
        + "".join(
            f"  - id: {name}\n    name: {name.title()}\n    source: {{path: loras/{name}.safetensors}}\n"
            f"    kind: style\n    scale: {{recommended: 1.0, range: [0.0, 2.0]}}\n"
            for name in ("alpha", "beta")
        )
    )
    # one torch thread per worker (2 workers share 2 cores); the reference runs with one thread too:
    # on CPU the thread count changes the last bits of the pixels
    (root / "local.yaml").write_text(GRID.replace("{PROVIDER}", "{model: tiny-random, threads_per_worker: 1}"))
    (root / "ray.yaml").write_text(
        GRID.replace("{PROVIDER}", "{model: tiny-random, executor: ray, workers: 2, threads_per_worker: 1}"))
    return root


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own shared cache, so no run is answered from another's images."""
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "shared-cache"))
    monkeypatch.delenv("LORASCOPE_CATALOGUE", raising=False)
