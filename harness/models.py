"""The provider-neutral request and result: what every provider takes and gives back.

A request is what the user asked for (triggers already applied); a provider maps it onto its
own wire protocol. A result carries the image bytes exactly as the provider returned them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ImageFormat = Literal["png", "jpeg", "webp"]


class LoraSpec(BaseModel):
    """One LoRA in a request: every reference form the registry could give, and its scale.

    Hosted providers send `url` (an https URL to the safetensors file) or `repo`
    (`owner/repo`, where a provider takes a repo id); the local provider loads `path`.
    `identity` is what the fingerprint hashes: the file's content hash when known, else the
    pinned hub revision, else the URL.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None
    scale: float
    url: str | None = None
    repo: str | None = None
    file: str | None = None
    revision: str | None = None
    path: str | None = None
    sha256: str | None = None

    @property
    def identity(self) -> str:
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.repo and self.file:
            return f"hf:{self.repo}@{self.revision or 'main'}/{self.file}"
        return self.url or self.path or self.id or "?"

    @property
    def label(self) -> str:
        return self.id or self.file or self.path or self.url or "lora"


class GenerationRequest(BaseModel):
    """One generation as the user means it; `options` holds provider-specific knobs
    (fal `acceleration`, `enable_prompt_expansion`, `enable_safety_checker`, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    width: int = 1024
    height: int = 1024
    seed: int | None = None
    steps: int = 8
    loras: tuple[LoraSpec, ...] = Field(default=(), max_length=3)
    num_images: int = 1
    output_format: ImageFormat = "png"
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


class GeneratedImage(BaseModel):
    data: bytes = Field(repr=False)
    format: ImageFormat
    width: int
    height: int
    nsfw: bool | None = None


class Timings(BaseModel):
    """Seconds. `inference_s` is what the provider reports (or the local pipeline call)."""

    total_s: float
    queue_s: float | None = None
    inference_s: float | None = None
    download_s: float | None = None
    load_s: float | None = None


class Cost(BaseModel):
    """USD, with where the number came from: `billed` (reported by the provider),
    `estimated` (a price table; `basis` cites it), `free` (local), `unknown`."""

    usd: float | None
    source: Literal["billed", "estimated", "free", "unknown"]
    basis: str = ""


class Estimate(BaseModel):
    cost: Cost
    seconds: float


class GenerationResult(BaseModel):
    provider: str
    images: list[GeneratedImage]
    seed: int | None = None
    request_id: str | None = None
    timings: Timings
    cost: Cost
    metadata: dict[str, Any] = Field(default_factory=dict)
    software: dict[str, str] = Field(default_factory=dict)
