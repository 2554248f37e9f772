"""fal's queue protocol for Z-Image Turbo (provider-docs 004, fal's queue documentation).

  POST {root}/fal-ai/z-image/turbo/lora   (or /fal-ai/z-image/turbo without LoRAs)
       Authorization: Key $FAL_KEY
       -> {request_id, status_url, response_url, cancel_url}
  GET  status_url?logs=0   -> 202 {status: IN_QUEUE, queue_position} | IN_PROGRESS
                           -> 200 {status: COMPLETED, metrics: {inference_time}, error?, error_type?}
  GET  response_url        -> {images: [{url, width, height, content_type}], timings, seed,
                               has_nsfw_concepts, prompt}
  PUT  cancel_url          -> 202 {status: CANCELLATION_REQUESTED} | 400 ALREADY_COMPLETED

Image-conditioned requests go to the mode's own endpoint (research/providers-and-modes.md,
fal's model pages): `.../turbo/image-to-image[/lora]` (`image_url`, `strength`),
`.../turbo/inpaint[/lora]` (`image_url`, `mask_image_url`, `strength`) and
`.../turbo/controlnet[/lora]` (`image_url` = the control image, `control_scale`,
`control_start`, `control_end`, `preprocess`). A local input goes as a data URI, which fal
takes wherever it takes a file URL. Fields are sent only when the request sets them.

fal's returned URLs live under the app id (`fal-ai/z-image/requests/{id}/...`, without the
`/turbo/lora` subpath). URLs are used as returned when they point at the configured root's
origin; otherwise their path is rebased onto the configured root. That keeps a proxy or a
loopback root working, and it means the key is only ever sent to the origin the user
configured. After a crash the same URLs are rebuilt from the request id.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from lorascope.harness.errors import BadResponse, ContentFiltered, ProviderUnavailable, RejectedRequest, TaskFailed
from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, LoraSpec, Timings
from lorascope.harness.providers._http import looks_like_content_policy
from lorascope.harness.providers._hosted import (
    TaskProvider,
    as_float,
    as_int,
    check_bool_options,
    check_enum_option,
    check_range,
    lora_url,
)
from lorascope.harness.providers._images import slim
from lorascope.harness.providers.base import OnSubmitted
from lorascope.harness.secrets import redact

APP_ID = "fal-ai/z-image"
LORA_ENDPOINT = "fal-ai/z-image/turbo/lora"
BASE_ENDPOINT = "fal-ai/z-image/turbo"
PRICE_URL = "https://fal.ai/models/fal-ai/z-image/turbo/lora"
USD_PER_MP_LORA = 0.0085
USD_PER_MP_BASE = 0.005
USD_PROMPT_EXPANSION = 0.0025
ACCELERATION = ("none", "regular", "high")
#: Endpoint (without `/lora`) per mode.
MODE_ENDPOINTS = {
    "txt2img": BASE_ENDPOINT,
    "img2img": f"{BASE_ENDPOINT}/image-to-image",
    "inpaint": f"{BASE_ENDPOINT}/inpaint",
    "controlnet": f"{BASE_ENDPOINT}/controlnet",
}
#: USD per megapixel (base, LoRA) from each endpoint's page; None where the page we read
#: gave no figure (the cost is then "unknown", never guessed).
MODE_PRICES: dict[str, tuple[float | None, float | None]] = {
    "txt2img": (USD_PER_MP_BASE, USD_PER_MP_LORA),
    "img2img": (0.005, 0.0085),
    "inpaint": (None, 0.0115),
    "controlnet": (0.0065, None),
}


class FalProvider(TaskProvider):
    name = "fal"
    asynchronous = True
    env_key_var = "FAL_KEY"
    env_url_var = "LORASCOPE_FAL_URL"
    default_root = "https://queue.fal.run"
    auth_scheme = "Key"
    typical_seconds = 3.0
    known_options = frozenset(
        {"acceleration", "enable_prompt_expansion", "enable_safety_checker", "sync_mode", "endpoint"}
    )
    steps_range: ClassVar[tuple[int, int]] = (1, 8)
    num_images_range: ClassVar[tuple[int, int]] = (1, 4)
    base_endpoint = BASE_ENDPOINT
    lora_reference_form = "a URL to the .safetensors file"
    modes = frozenset(MODE_ENDPOINTS)
    input_forms = "any"  # URLs as they are, local files as data URIs

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._urls: dict[str, dict[str, str]] = {}

    # -- request mapping --------------------------------------------------------------------

    def endpoint(self, request: GenerationRequest) -> str:
        base = MODE_ENDPOINTS[request.mode]
        return f"{base}/lora" if self.uses_lora_endpoint(request) else base

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        options = request.options
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "image_size": {"width": request.width, "height": request.height},
            "num_inference_steps": request.steps,
            "num_images": request.num_images,
            "output_format": request.output_format,
            # explicit: the image must follow the prompt as written, on every provider
            "enable_prompt_expansion": bool(options.get("enable_prompt_expansion", False)),
        }
        if request.seed is not None:
            body["seed"] = request.seed
        for name in ("acceleration", "enable_safety_checker", "sync_mode"):
            if name in options:
                body[name] = options[name]
        if self.uses_lora_endpoint(request):
            body["loras"] = self.lora_bodies(request)
        return body | conditioning_body(request)

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        check_range(problems, "steps", request.steps, *self.steps_range)
        check_range(problems, "num_images", request.num_images, *self.num_images_range)
        check_enum_option(problems, request.options, "acceleration", ACCELERATION)
        check_bool_options(problems, request.options, ("enable_prompt_expansion", "enable_safety_checker", "sync_mode"))

    def lora_reference(self, spec: LoraSpec) -> str | None:
        url = lora_url(spec)
        return url if url and url.startswith(("https://", "http://")) else None

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(
            cost=self.price(request, request.megapixels * request.num_images), seconds=self.typical_seconds
        )

    def price(self, request: GenerationRequest, megapixels: float) -> Cost:
        lora = self.uses_lora_endpoint(request)
        rate = MODE_PRICES[request.mode][1 if lora else 0]
        page = PRICE_URL if request.mode == "txt2img" else f"https://fal.ai/models/{self.endpoint(request)}"
        if rate is None:
            return Cost(usd=None, source="unknown", basis=f"{page}: no price found for this endpoint")
        usd = rate * megapixels
        basis = f"${rate}/MP x {megapixels:.4f} MP ({'LoRA' if lora else 'base'} endpoint), {page}"
        if request.options.get("enable_prompt_expansion"):
            usd += USD_PROMPT_EXPANSION
            basis += f" + ${USD_PROMPT_EXPANSION} prompt expansion"
        return Cost(usd=round(usd, 8), source="estimated", basis=basis)

    # -- URLs --------------------------------------------------------------------------------

    def rebase(self, url: str) -> str:
        """The returned URL if it is on the configured root's origin, else its path on the root."""
        target, root = httpx2.URL(url), httpx2.URL(self.root)
        if (target.scheme, target.host, target.port) == (root.scheme, root.host, root.port):
            return url
        return self.root + target.raw_path.decode("ascii")

    def urls_for(self, request_id: str) -> dict[str, str]:
        """Status/response/cancel URLs: as returned at submit, else rebuilt from the id."""
        known = self._urls.get(request_id)
        if known:
            return known
        base = f"{self.root}/{APP_ID}/requests/{request_id}"
        return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}

    # -- protocol ----------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest, on_submitted: OnSubmitted | None = None) -> GenerationResult:
        self.check(request)
        started = self._clock()
        submitted, _ = await self.http.post_json(f"{self.root}/{self.endpoint(request)}", self.body(request))
        if not isinstance(submitted, dict) or not submitted.get("request_id"):
            raise BadResponse(self.name, f"submit answered without a request_id: {slim(redact(submitted))!r}")
        request_id = str(submitted["request_id"])
        urls = self.urls_for(request_id)
        for key in ("status_url", "response_url", "cancel_url"):
            if isinstance(submitted.get(key), str) and submitted[key]:
                urls[key] = self.rebase(submitted[key])
        self._urls[request_id] = urls
        try:
            return await self.follow(request_id, request, started, on_submitted)
        finally:  # done, failed or cancelled: the URLs are not needed again (resume rebuilds them)
            self._urls.pop(request_id, None)


    async def cancel(self, task_id: str) -> None:
        try:
            await self.http.request("PUT", self.urls_for(task_id)["cancel_url"])
        except RejectedRequest:
            pass  # 400 ALREADY_COMPLETED / 404: nothing left to cancel

    async def _poll(self, request_id: str, started: float) -> tuple[dict[str, Any], float | None]:
        """Poll until COMPLETED; returns the final status and the queue wait: until the first
        IN_PROGRESS we saw, or (seen only COMPLETED) our wait minus fal's inference_time."""
        deadline = self._clock() + self.config.deadline_s
        schedule = self.poll_intervals()
        queue_s: float | None = None
        while True:
            status, _ = await self.http.get_json(self.urls_for(request_id)["status_url"], params={"logs": 0})
            if not isinstance(status, dict):
                raise BadResponse(self.name, f"status of {request_id} is not an object", request_id=request_id)
            state = status.get("status")
            if state == "IN_PROGRESS" and queue_s is None:
                queue_s = self._clock() - started  # left the queue since the last poll
            if state == "COMPLETED":
                if queue_s is None:  # never seen running: what the wait left after inference
                    inference = as_float((status.get("metrics") or {}).get("inference_time")) \
                        if isinstance(status.get("metrics"), dict) else None
                    queue_s = max(0.0, self._clock() - started - (inference or 0.0))
                error = status.get("error")
                if error:
                    kind = str(status.get("error_type") or "")
                    cls = ContentFiltered if looks_like_content_policy(kind, str(error)) else TaskFailed
                    detail = f" ({kind})" if kind else ""
                    raise cls(self.name, f"request {request_id} failed{detail}: {error}", request_id=request_id)
                return status, queue_s
            if state not in ("IN_QUEUE", "IN_PROGRESS"):
                raise BadResponse(self.name, f"request {request_id} has unknown status {state!r}", request_id=request_id)
            position = as_int(status.get("queue_position")) if state == "IN_QUEUE" else None
            if position:  # fal's guidance: N requests ahead of ours, no point polling at once
                schedule.at_least(position * self.config.poll_interval_s)
            await self.wait_or_timeout(schedule.next(), deadline, request_id)

    async def _finish(self, request_id: str, request: GenerationRequest, started: float) -> GenerationResult:
        status, queue_s = await self._poll(request_id, started)
        try:
            output, _ = await self.http.get_json(self.urls_for(request_id)["response_url"])
        except ProviderUnavailable as exc:
            if exc.status is None:
                raise  # transport trouble: the result may still be there on resume
            # fal serves a failed request's error at response_url (5xx after COMPLETED)
            raise TaskFailed(self.name, f"request {request_id} completed with an error: {exc.message}",
                             status=exc.status, request_id=request_id) from None
        if not isinstance(output, dict) or not isinstance(output.get("images"), list) or not output["images"]:
            raise BadResponse(self.name, f"response of {request_id} has no images", request_id=request_id)
        nsfw_flags = output.get("has_nsfw_concepts") or []
        images: list[GeneratedImage] = []
        download_s = 0.0
        for i, entry in enumerate(output["images"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise BadResponse(self.name, f"image {i} of {request_id} has no url", request_id=request_id)
            nsfw = bool(nsfw_flags[i]) if i < len(nsfw_flags) and nsfw_flags[i] is not None else None
            image, seconds = await self.download(entry["url"], nsfw=nsfw)
            images.append(image)
            download_s += seconds
        metrics = status.get("metrics") if isinstance(status.get("metrics"), dict) else {}
        timings = output.get("timings") if isinstance(output.get("timings"), dict) else {}
        inference_s = as_float(metrics.get("inference_time"))
        if inference_s is None:
            inference_s = as_float(timings.get("inference"))
        megapixels = sum(img.width * img.height for img in images) / 1_000_000
        return GenerationResult(
            provider=self.name,
            images=images,
            seed=as_int(output.get("seed")) if output.get("seed") is not None else request.seed,
            request_id=request_id,
            timings=Timings(
                total_s=self._clock() - started, queue_s=queue_s, inference_s=inference_s, download_s=download_s
            ),
            cost=self.price(request, megapixels),
            metadata={"endpoint": self.endpoint(request), "status": slim(redact(status)), "response": slim(redact(output))},
        )


def conditioning_body(request: GenerationRequest) -> dict[str, Any]:
    """The image-conditioning fields of a fal body (empty for text-to-image)."""
    body: dict[str, Any] = {}
    if request.init_image is not None:
        body["image_url"] = request.init_image.reference()
        if request.strength is not None:
            body["strength"] = request.strength
    if request.mask_image is not None:
        body["mask_image_url"] = request.mask_image.reference()
    if request.control_image is not None:
        body["image_url"] = request.control_image.reference()
        for field in ("control_scale", "control_start", "control_end", "preprocess"):
            if getattr(request, field) is not None:
                body[field] = getattr(request, field)
    return body
