"""Novita's asynchronous task protocol for Z-Image Turbo.

Wire protocol (provider-docs 000/001, Novita's "Task Result API"):
  POST {root}/v3/async/z-image-turbo-lora   {prompt, size: "W*H", seed (-1 = random), loras: [{path, scale}]}
  POST {root}/v3/async/z-image-turbo        {prompt, size, seed, enable_base64_output}  (no LoRA asked for)
       Authorization: Bearer $NOVITA_API_KEY
       -> {task_id}
Each page lists its own fields: `enable_base64_output` and the 256..1536 side range are on the
base page only, so they are sent and checked there only.
  GET  {root}/v3/async/task-result?task_id=ID
       -> {task: {task_id, status: TASK_STATUS_QUEUED|PROCESSING|SUCCEED|FAILED, reason, ...},
           images: [{image_url, image_url_ttl, image_type}], extra: {seed, debug_info: {...}}}
Image URLs are signed and expire (`image_url_ttl`); a URL that no longer answers makes us
ask task-result once more for fresh URLs before giving up with a clear error.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from lorascope.harness.errors import BadResponse, ContentFiltered, TaskFailed
from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, Timings
from lorascope.harness.providers._http import looks_like_content_policy
from lorascope.harness.providers._hosted import (
    ExpiredImage,
    TaskProvider,
    as_float,
    as_int,
    check_bool_options,
    check_range,
)
from lorascope.harness.providers._images import decode_base64_image, slim, to_image
from lorascope.harness.providers.base import OnSubmitted
from lorascope.harness.secrets import redact

QUEUED, PROCESSING, SUCCEED, FAILED = (
    "TASK_STATUS_QUEUED",
    "TASK_STATUS_PROCESSING",
    "TASK_STATUS_SUCCEED",
    "TASK_STATUS_FAILED",
)
_EPOCH_MS = 10**11  # anything larger is a timestamp in ms, not a duration


class NovitaProvider(TaskProvider):
    name = "novita"
    asynchronous = True
    env_key_var = "NOVITA_API_KEY"
    env_url_var = "LORASCOPE_NOVITA_URL"
    default_root = "https://api.novita.ai"
    auth_scheme = "Bearer"
    typical_seconds = 6.0
    known_options = frozenset({"enable_base64_output", "endpoint"})

    lora_path: ClassVar[str] = "/v3/async/z-image-turbo-lora"
    base_path: ClassVar[str] = "/v3/async/z-image-turbo"
    result_path: ClassVar[str] = "/v3/async/task-result"
    #: Side range the base page documents ("Each dimension ranges from 256 to 1536 pixels");
    #: the LoRA page states none. None = not documented anywhere.
    size_range: ClassVar[tuple[int, int] | None] = (256, 1536)
    #: Whether the LoRA endpoint's page documents `enable_base64_output` (Novita's does not).
    base64_on_lora_endpoint: ClassVar[bool] = False
    seed_range: ClassVar[tuple[int, int]] = (-1, 2147483647)
    #: Z-Image Turbo's fixed step count; the API has no steps parameter.
    fixed_steps: ClassVar[int] = 8
    docs_url: ClassVar[str] = "https://novita.ai/docs/api-reference/model-apis-z-image-turbo-lora"
    base_endpoint = base_path

    # -- request mapping --------------------------------------------------------------------

    def path_for(self, request: GenerationRequest) -> str:
        return self.lora_path if self.uses_lora_endpoint(request) else self.base_path

    def endpoint(self, request: GenerationRequest) -> str:
        return self.path_for(request).lstrip("/")

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "size": f"{request.width}*{request.height}",
            "seed": -1 if request.seed is None else request.seed,
        }
        if self.uses_lora_endpoint(request):
            body["loras"] = self.lora_bodies(request)
        if request.options.get("enable_base64_output"):
            body["enable_base64_output"] = True
        return body

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        lora_endpoint = self.uses_lora_endpoint(request)
        if self.size_range and not lora_endpoint:
            lo, hi = self.size_range
            for label, side in (("width", request.width), ("height", request.height)):
                check_range(problems, label, side, lo, hi)
        if request.seed is not None:
            check_range(problems, "seed", request.seed, *self.seed_range)
        if request.steps != self.fixed_steps:
            problems.append(
                f"steps={request.steps}: {self.name}'s API has no steps parameter "
                f"(Z-Image Turbo runs {self.fixed_steps}); ask for steps={self.fixed_steps}"
            )
        if request.num_images != 1:
            problems.append(f"num_images={request.num_images}: {self.name} returns one image per task")
        check_bool_options(problems, request.options, ("enable_base64_output",))
        if request.options.get("enable_base64_output") and lora_endpoint and not self.base64_on_lora_endpoint:
            problems.append(
                f"option enable_base64_output: {self.name} documents it for {self.base_path} only, "
                f"not for {self.lora_path} (which takes prompt, size, seed and loras)"
            )

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(cost=self.price(), seconds=self.typical_seconds)

    def price(self) -> Cost:
        return Cost(
            usd=None,
            source="unknown",
            basis=f"{self.docs_url} gives no price and task-result reports no charge",
        )

    # -- protocol ----------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest, on_submitted: OnSubmitted | None = None) -> GenerationResult:
        self.check(request)
        started = self._clock()
        submitted, _ = await self.http.post_json(self.root + self.path_for(request), self.body(request))
        task_id = submitted.get("task_id") if isinstance(submitted, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise BadResponse(self.name, f"submit answered without a task_id: {slim(redact(submitted))!r}")
        return await self.follow(task_id, request, started, on_submitted)


    async def cancel(self, task_id: str) -> None:
        """Novita documents no cancel endpoint for async tasks: nothing to send."""
        return None

    async def task_result(self, task_id: str) -> dict[str, Any]:
        data, _ = await self.http.get_json(self.root + self.result_path, params={"task_id": task_id})
        if not isinstance(data, dict) or not isinstance(data.get("task"), dict):
            raise BadResponse(self.name, f"task-result for {task_id} has no 'task' object", request_id=task_id)
        return data

    async def _poll(self, task_id: str) -> dict[str, Any]:
        deadline = self._clock() + self.config.deadline_s
        schedule = self.poll_intervals()
        while True:
            data = await self.task_result(task_id)
            task = data["task"]
            status = task.get("status")
            if status == SUCCEED:
                return data
            if status == FAILED:
                reason = str(task.get("reason") or "no reason given")
                error = ContentFiltered if looks_like_content_policy(reason) else TaskFailed
                raise error(self.name, f"task {task_id} failed: {reason}", request_id=task_id)
            if status not in (QUEUED, PROCESSING):
                raise BadResponse(self.name, f"task {task_id} has unknown status {status!r}", request_id=task_id)
            await self.wait_or_timeout(schedule.next(), deadline, task_id)

    async def _finish(self, task_id: str, request: GenerationRequest, started: float) -> GenerationResult:
        data = await self._poll(task_id)
        try:
            images, download_s = await self._collect(task_id, data)
        except ExpiredImage:
            data = await self.task_result(task_id)  # fresh signed URLs, once
            try:
                images, download_s = await self._collect(task_id, data)
            except ExpiredImage as exc:
                ttl = [img.get("image_url_ttl") for img in data.get("images") or [] if isinstance(img, dict)]
                raise ExpiredImage(
                    self.name,
                    f"{exc.message}; a fresh task-result gave no working URL either (image_url_ttl={ttl}); "
                    "the image can no longer be fetched",
                    status=exc.status,
                    request_id=task_id,
                ) from None
        extra = data.get("extra") if isinstance(data.get("extra"), dict) else {}
        seed = as_int(extra.get("seed"))
        if seed is None and request.seed not in (None, -1):
            seed = request.seed
        queue_s, inference_s = _debug_timings(extra.get("debug_info"))
        return GenerationResult(
            provider=self.name,
            images=images,
            seed=seed,
            request_id=task_id,
            timings=Timings(
                total_s=self._clock() - started, queue_s=queue_s, inference_s=inference_s, download_s=download_s
            ),
            cost=self.price(),
            metadata={
                "endpoint": self.endpoint(request),
                "task_result": slim(redact(data)),
            },
        )

    async def _collect(self, task_id: str, data: dict[str, Any]) -> tuple[list[GeneratedImage], float]:
        entries = data.get("images")
        if not isinstance(entries, list) or not entries:
            raise BadResponse(self.name, f"task {task_id} succeeded without images", request_id=task_id)
        images: list[GeneratedImage] = []
        download_s = 0.0
        for entry in entries:
            if not isinstance(entry, dict):
                raise BadResponse(self.name, f"task {task_id}: image entry is not an object", request_id=task_id)
            image, seconds = await self._one_image(entry)
            images.append(image)
            download_s += seconds
        return images, download_s

    async def _one_image(self, entry: dict[str, Any]) -> tuple[GeneratedImage, float]:
        hint = entry.get("image_type")
        content_type = f"image/{hint}" if isinstance(hint, str) and hint else None
        inline = entry.get("image_base64") or entry.get("base64") or entry.get("b64_json")
        url = entry.get("image_url")
        if not inline and isinstance(url, str) and url and not re.match(r"^(https?|data):", url):
            inline = url  # base64 output delivered in image_url
        if inline:
            started = time.perf_counter()
            data, inline_type = decode_base64_image(self.name, str(inline))
            return to_image(self.name, data, inline_type or content_type), time.perf_counter() - started
        if not isinstance(url, str) or not url:
            raise BadResponse(self.name, "image entry has neither image_url nor base64 data")
        return await self.download(url)


def _debug_timings(debug: Any) -> tuple[float | None, float | None]:
    """(queue_s, inference_s) from Novita's debug_info, which carries either epoch-ms
    timestamps (submit/execute/complete) or an execution duration in ms."""
    if not isinstance(debug, dict):
        return None, None
    submit = as_float(debug.get("submit_time_ms"))
    execute = as_float(debug.get("execute_time_ms"))
    complete = as_float(debug.get("complete_time_ms"))
    if execute is None:
        return None, None
    if execute > _EPOCH_MS:
        queue_s = (execute - submit) / 1000 if submit and submit > _EPOCH_MS else None
        inference_s = (complete - execute) / 1000 if complete and complete > _EPOCH_MS else None
        return queue_s, inference_s
    return None, execute / 1000
