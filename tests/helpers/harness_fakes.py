"""Harness test helpers: a small catalogue, a suite, and in-process providers that record
what they were asked (the loopback HTTP fakes in tests/fakes serve the reliability tests)."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from lorascope.harness.errors import BadResponse, TaskFailed  # noqa: E402
from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, Timings  # noqa: E402
from lorascope.harness.providers.base import Provider, ProviderConfig  # noqa: E402

SHA_A = "a" * 64
SHA_B = "b" * 64

CATALOGUE = f"""
version: 1
loras:
  - id: paint
    name: Paint
    source: {{url: "https://example.test/paint.safetensors", sha256: "{SHA_A}"}}
    kind: style
    triggers: [p41nt]
    scale: {{recommended: 0.7, range: [0.5, 1.0]}}
    style_prompt: an oil painting
    tags: [style]
  - id: ink
    name: Ink
    source: {{url: "https://example.test/ink.safetensors", sha256: "{SHA_B}"}}
    kind: style
    triggers: [1nk]
    trigger_position: suffix
    scale: {{recommended: 0.8, range: [0.5, 1.0]}}
    tags: [style]
"""


def png_bytes(request: GenerationRequest | None = None, size: int = 16) -> bytes:
    """A real PNG whose pixels depend on the whole request (distinct requests, distinct files)."""
    import hashlib

    digest = hashlib.sha256((request.model_dump_json() if request else "").encode()).digest()
    img = Image.new("RGB", (size, size), (digest[0], digest[1], digest[2]))
    img.putpixel((0, 0), (digest[3], digest[4], digest[5]))
    img.putpixel((1, 0), (digest[6], digest[7], digest[8]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class FakeConfig(ProviderConfig):
    latency_s: float = 0.0


class FakeAsync(Provider):
    """An asynchronous provider in-process: `calls` logs generate/resume/cancel, per class."""

    name: ClassVar[str] = "fakeasync"
    config_model = FakeConfig
    asynchronous: ClassVar[bool] = True
    known_options: ClassVar[frozenset[str]] = frozenset({"quality", "mode"})
    calls: ClassVar[list[tuple[str, Any]]] = []
    #: prompt substring -> behaviour: "corrupt", "garbage", "fail", "raise"
    behaviours: ClassVar[dict[str, str]] = {}
    price: ClassVar[float] = 0.01
    max_side: ClassVar[int] = 2048

    def validate(self, request: GenerationRequest) -> list[str]:
        problems = []
        if request.width > self.max_side or request.height > self.max_side:
            problems.append(f"size {request.width}x{request.height} above {self.max_side}")
        unknown = set(request.options) - self.known_options
        if unknown:
            problems.append(f"unknown options {sorted(unknown)}")
        if any(lora.scale > 2.0 for lora in request.loras):
            problems.append("LoRA scale above 2")
        return problems

    def endpoint(self, request: GenerationRequest) -> str:
        return "fake/lora" if request.loras else "fake/base"

    def model_version(self) -> str:
        return "fake-1"

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(cost=Cost(usd=self.price, source="estimated", basis="test"), seconds=1.0)

    def _result(self, request: GenerationRequest, task_id: str | None) -> GenerationResult:
        behaviour = next((b for k, b in self.behaviours.items() if k in request.prompt), None)
        if behaviour == "fail":
            raise TaskFailed(self.name, "the provider says the task failed", request_id=task_id)
        if behaviour == "raise":
            raise KeyError("images")  # a provider module choking on garbage
        if behaviour == "garbage":
            raise BadResponse(self.name, "malformed JSON from the provider")
        data = b"\x89PNG not really" if behaviour == "corrupt" else png_bytes(request)
        return GenerationResult(
            provider=self.name,
            images=[GeneratedImage(data=data, format="png", width=16, height=16)],
            seed=request.seed,
            request_id=task_id,
            timings=Timings(total_s=self.config.latency_s or 0.001),
            cost=Cost(usd=self.price, source="billed"),
        )

    async def generate(self, request, on_submitted=None):
        task_id = f"t{len(self.calls)}"
        self.calls.append(("generate", request))
        if self.asynchronous and on_submitted is not None:
            await on_submitted(task_id)
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        return self._result(request, task_id if self.asynchronous else None)

    async def resume(self, task_id, request):
        self.calls.append(("resume", task_id))
        return self._result(request, task_id)

    async def cancel(self, task_id):
        self.calls.append(("cancel", task_id))


class FakeSync(FakeAsync):
    name: ClassVar[str] = "fakesync"
    asynchronous: ClassVar[bool] = False
    calls: ClassVar[list[tuple[str, Any]]] = []


FAKE_PROVIDERS = {"fakeasync": FakeAsync, "fakesync": FakeSync}


def lookup(name: str) -> type:
    if name in FAKE_PROVIDERS:
        return FAKE_PROVIDERS[name]
    raise KeyError(f"unknown provider {name!r}; known: fakeasync, fakesync")


BASIC = """
name: basic
providers:
  - fakeasync
loras: [paint, ink]
scales: [0.5, 1.0]
prompts:
  - id: cat
    text: a cat on a mat
  - id: dog
    text: a dog in fog
seeds: [1, 2]
size: 64x64
steps: 2
"""
