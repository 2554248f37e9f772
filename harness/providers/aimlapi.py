"""AI/ML API: one synchronous call per generation (provider-docs 003).

  POST {root}/v1/images/generations   Authorization: Bearer $AIMLAPI_KEY
       {model: "alibaba/z-image-turbo-lora", prompt, image_size: {width, height},
        num_inference_steps, seed, num_images, output_format, loras: [{path, scale}], ...}
       -> {data: [{url | b64_json}], meta: {usage: {credits_used | tokens_used}}}
       headers x-aimlapi-credits-used, x-aimlapi-usd-spent
Billing: `x-aimlapi-usd-spent` when present, else credits (header, then meta.usage) at
$1 = 2,000,000 credits. Errors carry `{message, path, requestId, statusCode, timestamp}`.
The call is not idempotent (it is billed), so it is never resent after an ambiguous failure.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

from lorascope.harness.errors import BadResponse, ProviderTimeout
from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, LoraSpec, Timings
from lorascope.harness.providers._hosted import (
    HostedProvider,
    as_float,
    check_bool_options,
    check_enum_option,
    check_range,
    lora_url,
)
from lorascope.harness.providers._images import decode_base64_image, slim, to_image
from lorascope.harness.providers.base import OnSubmitted
from lorascope.harness.secrets import redact, redact_headers

MODEL = "alibaba/z-image-turbo-lora"
DOCS_URL = "https://docs.aimlapi.com/api-references/image-models/alibaba-cloud/z-image-turbo-lora"
CREDITS_PER_USD = 2_000_000
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class AimlapiProvider(HostedProvider):
    name = "aimlapi"
    asynchronous = False
    env_key_var = "AIMLAPI_KEY"
    env_url_var = "LORASCOPE_AIMLAPI_URL"
    default_root = "https://api.aimlapi.com"
    auth_scheme = "Bearer"
    typical_seconds = 5.0
    known_options = frozenset({"acceleration", "enable_prompt_expansion", "enable_safety_checker"})
    path: ClassVar[str] = "/v1/images/generations"
    side_range: ClassVar[tuple[int, int]] = (512, 2048)
    side_multiple: ClassVar[int] = 32
    steps_range: ClassVar[tuple[int, int]] = (1, 8)
    num_images_range: ClassVar[tuple[int, int]] = (1, 4)
    max_prompt_chars: ClassVar[int] = 4000

    def endpoint(self, request: GenerationRequest) -> str:
        return f"v1/images/generations:{MODEL}"

    lora_reference_form = "a URL or a Hugging Face owner/repo id"

    def lora_reference(self, spec: LoraSpec) -> str | None:
        """A URL pins the exact file; a bare `owner/repo` lets the provider pick one."""
        return lora_url(spec) or (spec.repo if spec.repo and _REPO_ID.match(spec.repo) else None)

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        options = request.options
        body: dict[str, Any] = {
            "model": MODEL,
            "prompt": request.prompt,
            "image_size": {"width": request.width, "height": request.height},
            "num_inference_steps": request.steps,
            "num_images": request.num_images,
            "output_format": request.output_format,
            # the provider's default is true: that would rewrite the prompt we compare on
            "enable_prompt_expansion": bool(options.get("enable_prompt_expansion", False)),
        }
        if request.seed is not None:
            body["seed"] = request.seed
        for name in ("acceleration", "enable_safety_checker"):
            if name in options:
                body[name] = options[name]
        if request.loras:
            body["loras"] = self.lora_bodies(request)
        return body

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        lo, hi = self.side_range
        for label, side in (("width", request.width), ("height", request.height)):
            if not lo <= side <= hi or side % self.side_multiple:
                problems.append(f"{label} {side} must be in [{lo}, {hi}] and a multiple of {self.side_multiple}")
        check_range(problems, "steps", request.steps, *self.steps_range)
        check_range(problems, "num_images", request.num_images, *self.num_images_range)
        if request.seed is not None and request.seed < 1:
            problems.append(f"seed {request.seed} must be >= 1 on aimlapi")
        if len(request.prompt) > self.max_prompt_chars:
            problems.append(f"prompt has {len(request.prompt)} characters; the limit is {self.max_prompt_chars}")
        check_enum_option(problems, request.options, "acceleration", ("none", "regular", "high"))
        check_bool_options(problems, request.options, ("enable_prompt_expansion", "enable_safety_checker"))

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(
            cost=Cost(usd=None, source="unknown", basis=f"{DOCS_URL} gives no price; the answer reports the charge"),
            seconds=self.typical_seconds,
        )

    async def generate(self, request: GenerationRequest, on_submitted: OnSubmitted | None = None) -> GenerationResult:
        self.check(request)
        started = self._clock()
        try:
            return await asyncio.wait_for(self._generate(request, started), self.config.deadline_s)
        except asyncio.TimeoutError:
            raise ProviderTimeout(
                self.name, f"no answer within deadline_s={self.config.deadline_s:g} (synchronous call abandoned)"
            ) from None

    async def _generate(self, request: GenerationRequest, started: float) -> GenerationResult:
        data, response = await self.http.post_json(self.root + self.path, self.body(request))
        inference_s = self._clock() - started
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise BadResponse(self.name, f"answer has no images: {slim(redact(data))!r}")
        images: list[GeneratedImage] = []
        download_s = 0.0
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise BadResponse(self.name, f"image {i} is not an object")
            if entry.get("b64_json"):
                raw, content_type = decode_base64_image(self.name, str(entry["b64_json"]))
                images.append(to_image(self.name, raw, content_type))
            elif isinstance(entry.get("url"), str) and entry["url"]:
                image, seconds = await self.download(entry["url"])
                images.append(image)
                download_s += seconds
            else:
                raise BadResponse(self.name, f"image {i} has neither url nor b64_json")
        request_id = response.headers.get("x-request-id") or (data.get("id") if isinstance(data.get("id"), str) else None)
        return GenerationResult(
            provider=self.name,
            images=images,
            seed=request.seed,
            request_id=request_id,
            timings=Timings(total_s=self._clock() - started, inference_s=None, download_s=download_s or None),
            cost=billed_cost(response.headers, data),
            metadata={
                "endpoint": self.endpoint(request),
                "request_s": round(inference_s, 6),
                "response": slim(redact(data)),
                "billing_headers": redact_headers(
                    {k: v for k, v in response.headers.items() if k.lower().startswith("x-aimlapi-")}
                ),
            },
        )


def billed_cost(headers: Any, data: Any) -> Cost:
    """USD from the answer: the usd header, else credits (header, then meta.usage)."""
    usd = as_float(headers.get("x-aimlapi-usd-spent"))
    if usd is not None:
        return Cost(usd=usd, source="billed", basis="x-aimlapi-usd-spent header")
    credits = as_float(headers.get("x-aimlapi-credits-used"))
    basis = "x-aimlapi-credits-used header"
    if credits is None and isinstance(data, dict):
        usage = (data.get("meta") or {}).get("usage") if isinstance(data.get("meta"), dict) else None
        if isinstance(usage, dict):
            for field in ("credits_used", "tokens_used"):
                credits = as_float(usage.get(field))
                if credits is not None:
                    basis = f"meta.usage.{field}"
                    break
    if credits is not None:
        return Cost(
            usd=credits / CREDITS_PER_USD,
            source="billed",
            basis=f"{credits:g} credits ({basis}) at {CREDITS_PER_USD:,} credits per USD",
        )
    return Cost(usd=None, source="unknown", basis="the answer reported no usage")
