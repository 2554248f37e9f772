"""WaveSpeedAI's v3 prediction API for `wavespeed-ai/z-image/turbo-lora` (docs/providers.md
cites the page each field comes from).

  POST {root}/api/v3/wavespeed-ai/z-image/turbo-lora   Authorization: Bearer $WAVESPEED_API_KEY
       {prompt, size: "W*H", seed (-1 = random), output_format, loras: [{path, scale}]}
       -> {code: 200, message, data: {id, status: created, urls: {get}, ...}}
  GET  {root}/api/v3/predictions/{id}/result
       -> {code, message, data: {id, status: created|processing|completed|failed, outputs: [URL],
           has_nsfw_contents: [bool], error, timings: {inference: ms}}}

`enable_sync_mode` is not offered: it answers only once the image exists, and the prediction
id must be written ahead the moment WaveSpeedAI accepts it. The pages document no cancel
call, so a deadline or Ctrl-C stops polling and leaves the prediction to finish.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from lorascope.harness.errors import BadResponse, ContentFiltered, TaskFailed
from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, Timings
from lorascope.harness.providers._http import error_for, looks_like_content_policy
from lorascope.harness.providers._hosted import TaskProvider, as_float, check_range
from lorascope.harness.providers._images import slim
from lorascope.harness.providers.base import OnSubmitted
from lorascope.harness.secrets import redact

MODEL = "wavespeed-ai/z-image/turbo-lora"
MODEL_PAGE = "https://wavespeed.ai/models/wavespeed-ai/z-image/turbo-lora"
RUNNING = ("created", "processing")


class WavespeedProvider(TaskProvider):
    name = "wavespeed"
    asynchronous = True
    env_key_var = "WAVESPEED_API_KEY"
    env_url_var = "LORASCOPE_WAVESPEED_URL"
    default_root = "https://api.wavespeed.ai"
    auth_scheme = "Bearer"
    typical_seconds = 3.0
    known_options = frozenset()
    #: the model page's input schema: size sides 256..1536, -1 = random seed, at most 3 LoRAs
    side_range: ClassVar[tuple[int, int]] = (256, 1536)
    max_loras: ClassVar[int] = 3
    #: the API takes no steps: Z-Image Turbo's fixed schedule
    fixed_steps: ClassVar[int] = 8

    # -- request mapping ---------------------------------------------------------------------

    @property
    def submit_url(self) -> str:
        return f"{self.root}/api/v3/{MODEL}"

    def result_url(self, prediction_id: str) -> str:
        return f"{self.root}/api/v3/predictions/{prediction_id}/result"

    def endpoint(self, request: GenerationRequest) -> str:
        return MODEL

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "size": f"{request.width}*{request.height}",
            "seed": -1 if request.seed is None else request.seed,
            "output_format": request.output_format,
        }
        if request.loras:
            body["loras"] = self.lora_bodies(request)
        return body

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        for label, side in (("width", request.width), ("height", request.height)):
            check_range(problems, label, side, *self.side_range)
        if len(request.loras) > self.max_loras:
            problems.append(f"{len(request.loras)} LoRAs: {self.name} takes at most {self.max_loras}")
        if request.seed is not None and request.seed < 0:
            problems.append(f"seed {request.seed} must be >= 0 (leave it unset for a random seed)")
        if request.steps != self.fixed_steps:
            problems.append(f"steps={request.steps}: {self.name}'s API has no steps parameter "
                            f"(Z-Image Turbo runs {self.fixed_steps}); ask for steps={self.fixed_steps}")
        if request.num_images != 1:
            problems.append(f"num_images={request.num_images}: {self.name} returns one image per prediction")

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(cost=self.price(), seconds=self.typical_seconds)

    def price(self) -> Cost:
        return Cost(usd=None, source="unknown",
                    basis=f"{MODEL_PAGE} (llms.txt) states no price and the result reports no charge")

    # -- protocol ----------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest, on_submitted: OnSubmitted | None = None) -> GenerationResult:
        self.check(request)
        started = self._clock()
        answer, response = await self.http.post_json(self.submit_url, self.body(request))
        data = self._data(answer, response, "submit")
        prediction_id = data.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise BadResponse(self.name, f"submit answered without data.id: {slim(redact(answer))!r}")
        return await self.follow(prediction_id, request, started, on_submitted)


    async def cancel(self, task_id: str) -> None:
        """WaveSpeedAI documents no cancel call for predictions: nothing to send."""
        return None

    def _data(self, answer: Any, response: httpx2.Response, what: str) -> dict[str, Any]:
        """`data` of the `{code, message, data}` envelope; an envelope whose `code` is an
        error is mapped like the HTTP status it names."""
        if not isinstance(answer, dict):
            raise BadResponse(self.name, f"{what} answer is not an object: {slim(redact(answer))!r}")
        code = answer.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code >= 400:
            # only the headers the mapping reads: the original's encoding headers describe another body
            kept = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "x-request-id")}
            raise error_for(self.name, self.env_key_var,
                            httpx2.Response(code, json=answer, headers=kept, request=response.request))
        data = answer.get("data")
        if not isinstance(data, dict):
            raise BadResponse(self.name, f"{what} answer has no data object: {slim(redact(answer))!r}")
        return data

    async def _poll(self, prediction_id: str) -> dict[str, Any]:
        deadline = self._clock() + self.config.deadline_s
        schedule = self.poll_intervals()
        while True:
            answer, response = await self.http.get_json(self.result_url(prediction_id))
            data = self._data(answer, response, f"result of {prediction_id}")
            status = data.get("status")
            if status == "completed":
                return data
            if status == "failed":
                error = str(data.get("error") or "no error given")
                cls = ContentFiltered if looks_like_content_policy(error) else TaskFailed
                raise cls(self.name, f"prediction {prediction_id} failed: {error}", request_id=prediction_id)
            if status not in RUNNING:
                raise BadResponse(self.name, f"prediction {prediction_id} has unknown status {status!r}",
                                  request_id=prediction_id)
            await self.wait_or_timeout(schedule.next(), deadline, prediction_id)

    async def _finish(self, prediction_id: str, request: GenerationRequest, started: float) -> GenerationResult:
        data = await self._poll(prediction_id)
        outputs = data.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(u, str) and u for u in outputs):
            raise BadResponse(self.name, f"prediction {prediction_id} completed without outputs", request_id=prediction_id)
        flags = data.get("has_nsfw_contents") if isinstance(data.get("has_nsfw_contents"), list) else []
        images: list[GeneratedImage] = []
        download_s = 0.0
        for i, url in enumerate(outputs):
            nsfw = bool(flags[i]) if i < len(flags) and flags[i] is not None else None
            image, seconds = await self.download(url, nsfw=nsfw)
            images.append(image)
            download_s += seconds
        timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
        inference_ms = as_float(timings.get("inference"))
        return GenerationResult(
            provider=self.name,
            images=images,
            seed=request.seed,
            request_id=prediction_id,
            timings=Timings(total_s=self._clock() - started, inference_s=None if inference_ms is None else inference_ms / 1000,
                            download_s=download_s),
            cost=self.price(),
            metadata={"endpoint": MODEL, "result": slim(redact(data))},
        )
