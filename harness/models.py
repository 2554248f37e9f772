"""The provider-neutral request and result: what every provider takes and gives back.

A request is what the user asked for (triggers already applied); a provider maps it onto its
own wire protocol. A result carries the image bytes exactly as the provider returned them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


Mode = Literal["txt2img", "img2img", "inpaint", "controlnet"]


@functools.lru_cache(maxsize=16)
def _data_uri(data: bytes, mime: str) -> str:
    """Memoised outside the model, so equality of inputs never depends on a cache (a bytes
    object caches its hash: the lookup for the same input is cheap)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
#: ControlNet preprocessors fal documents (`preprocess`); the local pipeline takes none.
Preprocess = Literal["none", "canny", "depth", "pose"]


class InputImage(BaseModel):
    """A picture a request is conditioned on: its bytes (with their sha256), or an https URL.

    The fingerprint hashes `identity` (the content hash; the URL only when the bytes are not
    known), so moving or renaming the file costs nothing and a changed file is a new request.
    The bytes are never serialised (run.db keeps the hash and the file it came from)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: bytes | None = Field(default=None, repr=False, exclude=True)
    url: str | None = None
    sha256: str | None = None
    mime: str | None = None  # image/png, image/jpeg, image/webp
    width: int | None = None
    height: int | None = None
    source: str | None = None  # the file or URL as the suite wrote it (for messages)

    @model_validator(mode="after")
    def _one_source(self) -> "InputImage":
        if (self.data is None) == (self.url is None):
            raise ValueError("an input image is either bytes or a URL, exactly one of them")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError(f"input image URL {self.url!r} is not https")
        if self.data is not None:
            digest = hashlib.sha256(self.data).hexdigest()
            if self.sha256 is None:
                object.__setattr__(self, "sha256", digest)
            elif self.sha256 != digest:
                raise ValueError(f"input image sha256 {self.sha256[:12]}… does not match its bytes ({digest[:12]}…)")
        return self

    @property
    def identity(self) -> str:
        return f"sha256:{self.sha256}" if self.sha256 else str(self.url)

    @property
    def label(self) -> str:
        return self.source or self.url or f"sha256:{(self.sha256 or '')[:12]}"

    def data_uri(self) -> str:
        """`data:<mime>;base64,...` (fal takes one wherever it takes a file URL). Built once
        per input: every cell of a grid shares the input, and encoding 5 MiB takes ~15 ms
        of the event loop's time."""
        if self.data is None:
            raise ValueError(f"{self.label} has no bytes to inline")
        return _data_uri(self.data, self.mime or "application/octet-stream")

    def reference(self) -> str:
        """What a URL field gets: the URL, else a data URI."""
        return self.url if self.url is not None else self.data_uri()


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
    # image-conditioned generation (all None: text-to-image, the fingerprint as before)
    init_image: InputImage | None = None
    mask_image: InputImage | None = None
    control_image: InputImage | None = None
    strength: float | None = Field(default=None, ge=0.0, le=1.0)
    control_scale: float | None = Field(default=None, ge=0.0, le=2.0)
    control_start: float | None = Field(default=None, ge=0.0, le=1.0)
    control_end: float | None = Field(default=None, ge=0.0, le=1.0)
    preprocess: Preprocess | None = None

    @model_validator(mode="after")
    def _inputs(self) -> "GenerationRequest":
        if self.mask_image is not None and self.init_image is None:
            raise ValueError("mask_image needs init_image (inpainting repaints part of an input)")
        if self.init_image is not None and self.control_image is not None:
            raise ValueError("init_image and control_image together (ControlNet inpaint) are not supported")
        if self.strength is not None and self.init_image is None:
            raise ValueError("strength needs init_image")
        control = (self.control_scale, self.control_start, self.control_end, self.preprocess)
        if any(v is not None for v in control) and self.control_image is None:
            raise ValueError("control_scale/control_start/control_end/preprocess need control_image")
        if self.control_start is not None and self.control_end is not None and self.control_start > self.control_end:
            raise ValueError("control_start is after control_end")
        return self

    @property
    def mode(self) -> Mode:
        """Which kind of generation the inputs make: no input is text-to-image."""
        if self.control_image is not None:
            return "controlnet"
        if self.mask_image is not None:
            return "inpaint"
        if self.init_image is not None:
            return "img2img"
        return "txt2img"

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
