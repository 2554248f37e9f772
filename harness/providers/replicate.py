"""Replicate's predictions API for `prunaai/z-image-turbo-lora` (docs/providers.md cites the
page each field comes from).

  GET  {root}/v1/models/prunaai/z-image-turbo-lora      -> {latest_version: {id, ...}, ...}
  POST {root}/v1/predictions   Authorization: Bearer $REPLICATE_API_TOKEN
       {version: ID, input: {prompt, width, height, num_inference_steps, guidance_scale: 0,
        seed, output_format, lora_weights: [URL...], lora_scales: [float...]}}
       -> 201 {id, version, status: starting, urls: {get, cancel}, ...}
  GET  {root}/v1/predictions/{id}
       -> {status: starting|processing|succeeded|failed|canceled, output, error,
           metrics: {predict_time}, created_at, started_at, completed_at, version}
  POST {root}/v1/predictions/{id}/cancel

Replicate versions its models, and a new version is exactly the change a regression check
must catch: every prediction is created against one version id (the suite's pinned `version`,
else the model's latest, asked once per run), that id is `model_version()` and so part of
every fingerprint, and the version the prediction reports is recorded with its result.
`Prefer: wait` is not sent: it holds the create call open until the output exists, and the
prediction id must be written ahead the moment Replicate accepts it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import httpx2
from pydantic import Field

from lorascope.harness import secrets
from lorascope.harness.errors import BadResponse, ContentFiltered, ProviderUnavailable, RejectedRequest, TaskFailed
from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, Timings
from lorascope.harness.providers._http import error_for, looks_like_content_policy
from lorascope.harness.providers._hosted import ExpiredImage, TaskProvider, as_float, check_range
from lorascope.harness.providers._images import slim
from lorascope.harness.providers.base import HostedConfig, OnSubmitted
from lorascope.harness.secrets import redact

MODEL = "prunaai/z-image-turbo-lora"
MODEL_PAGE = "https://replicate.com/prunaai/z-image-turbo-lora"
#: Replicate names output formats by extension; our request says jpeg.
FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
RUNNING = ("starting", "processing")
#: `canceled` by a cancel call; `aborted` when a deadline passed before it started (changelog 2025-10-16)
STOPPED = ("canceled", "aborted")


class ReplicateConfig(HostedConfig):
    """Replicate's settings: `version` pins the model version (64 hex digits); unset, the
    model's latest version is looked up once per run and pinned for that run."""

    version: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ReplicateProvider(TaskProvider):
    name = "replicate"
    asynchronous = True
    config_model = ReplicateConfig
    env_key_var = "REPLICATE_API_TOKEN"
    env_url_var = "LORASCOPE_REPLICATE_URL"
    default_root = "https://api.replicate.com"
    auth_scheme = "Bearer"
    typical_seconds = 3.0
    known_options = frozenset({"output_quality"})
    #: the model's API page (input schema): width/height 64..1440, steps 1..50
    side_range: ClassVar[tuple[int, int]] = (64, 1440)
    steps_range: ClassVar[tuple[int, int]] = (1, 50)
    lora_reference_form = "an https URL to the .safetensors (or .tar/.zip) file"

    config: ReplicateConfig

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._latest: str | None = None

    # -- version -----------------------------------------------------------------------------

    @property
    def model_url(self) -> str:
        return f"{self.root}/v1/models/{MODEL}"

    def model_version(self) -> str:
        """The pinned version, else the model's latest (one GET, remembered for this run).
        Without a token there is nothing to ask and nothing will be sent: `validate` names the
        variable alongside every other problem."""
        if self.config.version:
            return self.config.version
        if not self._key():
            return ""
        if self._latest is None:
            self._latest = self._latest_version_sync()
        return self._latest

    def _latest_version_sync(self) -> str:
        """Planning is synchronous; this one GET carries the key only to the configured root."""
        key = self.require_key()
        try:
            timeout = httpx2.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
            with httpx2.Client(timeout=timeout) as client:
                response = client.get(self.model_url, headers={"Authorization": f"{self.auth_scheme} {key}"})
        except httpx2.HTTPError as exc:
            reason = secrets.redact_text(f"{type(exc).__name__}: {exc}")
            raise ProviderUnavailable(self.name, f"cannot ask for {MODEL}'s latest version ({reason}); "
                                      "pin one with the suite's providers.replicate.version") from None
        if not response.is_success:
            raise error_for(self.name, self.env_key_var, response)
        return self._version_from(response)

    async def _latest_version(self) -> str:
        if self.config.version:
            return self.config.version
        if self._latest is None:
            response = await self.http.request("GET", self.model_url)
            self._latest = self._version_from(response)
        return self._latest

    def _version_from(self, response: httpx2.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            data = None
        latest = data.get("latest_version") if isinstance(data, dict) else None
        version = latest.get("id") if isinstance(latest, dict) else None
        if not isinstance(version, str) or not version:
            raise BadResponse(self.name, f"{MODEL} has no latest_version.id: {slim(redact(data))!r}")
        return version

    # -- request mapping ---------------------------------------------------------------------

    def endpoint(self, request: GenerationRequest) -> str:
        return MODEL

    def body(self, request: GenerationRequest, version: str) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "prompt": request.prompt,
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.steps,
            "guidance_scale": 0,  # the page: "Should be 0 for Turbo models"
            "output_format": FORMATS[request.output_format],
        }
        if request.seed is not None:
            inputs["seed"] = request.seed
        if "output_quality" in request.options:
            inputs["output_quality"] = request.options["output_quality"]
        if request.loras:
            inputs["lora_weights"] = [self.lora_reference(spec) for spec in request.loras]
            inputs["lora_scales"] = [spec.scale for spec in request.loras]
        return {"version": version, "input": inputs}

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        for label, side in (("width", request.width), ("height", request.height)):
            check_range(problems, label, side, *self.side_range)
        check_range(problems, "steps", request.steps, *self.steps_range)
        if request.num_images != 1:
            problems.append(f"num_images={request.num_images}: {MODEL} makes one image per prediction")
        quality = request.options.get("output_quality")
        if "output_quality" in request.options:
            if isinstance(quality, bool) or not isinstance(quality, int):
                problems.append(f"option output_quality must be an integer 0..100, got {quality!r}")
            else:
                check_range(problems, "option output_quality", quality, 0, 100)

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(cost=self.price(), seconds=self.typical_seconds)

    def price(self) -> Cost:
        return Cost(usd=None, source="unknown",
                    basis=f"{MODEL_PAGE} publishes no price; a prediction reports metrics.predict_time, not a charge")

    # -- protocol ----------------------------------------------------------------------------

    def prediction_url(self, prediction_id: str) -> str:
        return f"{self.root}/v1/predictions/{prediction_id}"

    async def generate(self, request: GenerationRequest, on_submitted: OnSubmitted | None = None) -> GenerationResult:
        self.check(request)
        version = await self._latest_version()
        started = self._clock()
        created, _ = await self.http.post_json(f"{self.root}/v1/predictions", self.body(request, version))
        prediction_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(prediction_id, str) or not prediction_id:
            raise BadResponse(self.name, f"create answered without a prediction id: {slim(redact(created))!r}")
        return await self.follow(prediction_id, request, started, on_submitted)


    async def cancel(self, task_id: str) -> None:
        try:
            await self.http.request("POST", f"{self.prediction_url(task_id)}/cancel")
        except RejectedRequest:
            pass  # already finished or gone: nothing left to cancel

    async def _poll(self, prediction_id: str) -> dict[str, Any]:
        deadline = self._clock() + self.config.deadline_s
        schedule = self.poll_intervals()
        while True:
            data, _ = await self.http.get_json(self.prediction_url(prediction_id))
            if not isinstance(data, dict):
                raise BadResponse(self.name, f"prediction {prediction_id} is not an object", request_id=prediction_id)
            status = data.get("status")
            if status == "succeeded":
                return data
            if status == "failed":
                error = str(data.get("error") or "no error given")
                cls = ContentFiltered if looks_like_content_policy(error) else TaskFailed
                raise cls(self.name, f"prediction {prediction_id} failed: {error}", request_id=prediction_id)
            if status in STOPPED:
                raise TaskFailed(self.name, f"prediction {prediction_id} was {status}", request_id=prediction_id)
            if status not in RUNNING:
                raise BadResponse(self.name, f"prediction {prediction_id} has unknown status {status!r}",
                                  request_id=prediction_id)
            await self.wait_or_timeout(schedule.next(), deadline, prediction_id)

    async def _finish(self, prediction_id: str, request: GenerationRequest, started: float) -> GenerationResult:
        data = await self._poll(prediction_id)
        output = data.get("output")
        urls = [output] if isinstance(output, str) else output
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
            raise BadResponse(self.name, f"prediction {prediction_id} succeeded without output URLs: "
                              f"{slim(redact(output))!r}", request_id=prediction_id)
        images: list[GeneratedImage] = []
        download_s = 0.0
        for url in urls:
            try:
                image, seconds = await self.download(url)
            except ExpiredImage as exc:
                raise ExpiredImage(self.name, f"{exc.message}; Replicate removes an API prediction's output files "
                                   "after an hour, so this prediction's image is gone", status=exc.status,
                                   request_id=prediction_id) from None
            images.append(image)
            download_s += seconds
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        version = data.get("version") if isinstance(data.get("version"), str) else ""
        return GenerationResult(
            provider=self.name,
            images=images,
            seed=request.seed,
            request_id=prediction_id,
            timings=Timings(total_s=self._clock() - started, queue_s=_seconds_between(data.get("created_at"), data.get("started_at")),
                            inference_s=as_float(metrics.get("predict_time")), download_s=download_s),
            cost=self.price(),
            metadata={"endpoint": MODEL, "version": version, "prediction": slim(redact(_without_logs(data)))},
            software={"replicate_model": f"{MODEL}:{version}"} if version else {},
        )


def _without_logs(data: dict[str, Any]) -> dict[str, Any]:
    """The prediction without its logs (long, and nothing a comparison reads)."""
    return {k: v for k, v in data.items() if k != "logs"}


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds between two of Replicate's ISO-8601 timestamps, None if either is missing."""
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())
