"""What every hosted provider shares: key and root from config or environment, the lazy
HTTP client, checks common to all of them, image downloads, deadlines and best-effort
cancellation. Each provider module then only speaks its own protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import httpx2

from lorascope.harness import secrets
from lorascope.harness.errors import AuthError, BadResponse, InvalidRequest, ProviderError, ProviderTimeout
from lorascope.harness.modes import TEXT_ONLY, mode_problems
from lorascope.harness.models import GeneratedImage, GenerationRequest, GenerationResult, LoraSpec
from lorascope.harness.providers._http import ProviderHttp, RetryPolicy, _safe_url
from lorascope.harness.providers._images import decode_base64_image, to_image
from lorascope.harness.providers.base import HostedConfig, Provider, env_or
from lorascope.registry.references import hub_file_url

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds one best-effort cancel may take before we give up on it.
CANCEL_TIMEOUT_S = 10.0


class HostedProvider(Provider):
    config_model = HostedConfig
    env_key_var: ClassVar[str]
    env_url_var: ClassVar[str]
    default_root: ClassVar[str]
    auth_scheme: ClassVar[str] = "Bearer"
    #: Planning figure for `estimate` (seconds per request, queue excluded); see docs/providers.md.
    typical_seconds: ClassVar[float] = 5.0
    #: The no-LoRA endpoint beside the LoRA one, if the provider documents one; the `endpoint`
    #: option (auto|lora|base) then picks, `auto` meaning base unless LoRAs are given.
    base_endpoint: ClassVar[str | None] = None
    #: LoRA scale range: Novita (000) and AI/ML API (003) state 0..4; fal (004) and HighwayAPI
    #: (002) state none, and the catalogue's own [0, 4] bound is applied to them too.
    scale_range: ClassVar[tuple[float, float]] = (0.0, 4.0)
    #: What `lora_reference` accepts, for the validation message.
    lora_reference_form: ClassVar[str] = "an https URL to the .safetensors file"
    #: Generation modes served (`lorascope.harness.modes`); input images as "any"|"url"|"bytes".
    modes: ClassVar[frozenset[str]] = TEXT_ONLY
    input_forms: ClassVar[str] = "any"

    config: HostedConfig

    def __init__(
        self,
        config: HostedConfig | dict[str, Any] | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        rng: Callable[[], float] | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(config)
        self._sleep = sleep or asyncio.sleep
        self._clock = clock or time.monotonic
        self._rng = rng
        self._transport = transport
        self._http: ProviderHttp | None = None
        key = self._key()
        if key:
            secrets.register(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={_safe_url(self.root)!r})"

    # -- configuration ---------------------------------------------------------------------

    @property
    def root(self) -> str:
        return (env_or(self.config.base_url, self.env_url_var, self.default_root) or "").rstrip("/")

    def _key(self) -> str | None:
        if self.config.api_key is not None and self.config.api_key.get_secret_value():
            return self.config.api_key.get_secret_value()
        return env_or(None, self.env_key_var)

    def _key_variable(self) -> str:
        """Where the key came from, for messages (the value itself is never shown)."""
        if self.config.api_key is not None and self.config.api_key.get_secret_value():
            return f"providers.{self.name}.api_key"
        return self.env_key_var

    def require_key(self) -> str:
        key = self._key()
        if not key:
            raise AuthError(self.name, self.env_key_var, "no API key configured")
        problem = secrets.key_problem(key, self._key_variable())
        if problem:
            raise AuthError(self.name, self.env_key_var, problem)
        return key

    @property
    def http(self) -> ProviderHttp:
        if self._http is None:
            key = self.require_key()
            cfg = self.config
            self._http = ProviderHttp(
                self.name,
                env_var=self.env_key_var,
                auth_header=("Authorization", f"{self.auth_scheme} {key}"),
                connect_timeout_s=cfg.connect_timeout_s,
                read_timeout_s=cfg.read_timeout_s,
                policy=RetryPolicy(max_retries=cfg.max_retries, budget_s=cfg.retry_budget_s),
                max_connections=max(cfg.concurrency * 2, 4),
                sleep=self._sleep,
                clock=self._clock,
                rng=self._rng,
                transport=self._transport,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- validation ------------------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> list[str]:
        problems: list[str] = []
        key = self._key()
        if not key:
            problems.append(f"no API key: set {self.env_key_var} (or the suite's providers.{self.name}.api_key)")
        elif problem := secrets.key_problem(key, self._key_variable()):
            problems.append(problem)
        if not self.root.startswith(("https://", "http://")):
            problems.append(
                f"API root {_safe_url(self.root)!r} is not an http(s) URL "
                f"(set {self.env_url_var} or the suite's providers.{self.name}.base_url)"
            )
        if not request.prompt.strip():
            problems.append("prompt is empty")
        unknown = sorted(set(request.options) - self.known_options)
        if unknown:
            known = ", ".join(sorted(self.known_options)) or "none"
            problems.append(f"unknown option(s) {', '.join(unknown)} for {self.name} (known: {known})")
        if request.width <= 0 or request.height <= 0:
            problems.append(f"size {request.width}x{request.height} must be positive")
        if "endpoint" in self.known_options:
            self._check_endpoint_option(request, problems)
        self._check_loras(request, problems)
        problems += mode_problems(self, request)  # image modes: only those the provider serves
        self._validate(request, problems)
        return problems

    def uses_lora_endpoint(self, request: GenerationRequest) -> bool:
        if self.base_endpoint is None:
            return True
        choice = request.options.get("endpoint", "auto")
        return choice == "lora" or (choice == "auto" and bool(request.loras))

    def lora_reference(self, spec: LoraSpec) -> str | None:
        """The `loras[].path` this provider is sent for `spec`, or None if it takes no form
        the spec has. Validation and the request body both use it, so they cannot disagree."""
        url = lora_url(spec)
        return url if url and url.startswith("https://") else None

    def lora_bodies(self, request: GenerationRequest) -> list[dict[str, Any]]:
        return [{"path": self.lora_reference(spec), "scale": spec.scale} for spec in request.loras]

    def _check_loras(self, request: GenerationRequest, problems: list[str]) -> None:
        for i, spec in enumerate(request.loras):
            label = f"lora {i + 1} ({spec.label})"
            check_range(problems, f"{label} scale", spec.scale, *self.scale_range)
            if self.lora_reference(spec) is None:
                got = lora_url(spec) or spec.path or spec.repo
                problems.append(f"{label}: {self.name} needs {self.lora_reference_form}, got {got!r}")

    def _check_endpoint_option(self, request: GenerationRequest, problems: list[str]) -> None:
        choices = ("auto", "lora", "base") if self.base_endpoint else ("auto", "lora")
        check_enum_option(problems, request.options, "endpoint", choices)
        if request.options.get("endpoint") == "base" and request.loras and self.base_endpoint:
            problems.append(f"option endpoint=base cannot take LoRAs ({self.base_endpoint} has no loras field)")

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        """Provider-specific checks; append to `problems`."""

    def check(self, request: GenerationRequest) -> None:
        """Raise before anything is sent: the missing key first (it names the variable),
        then every other problem at once."""
        self.require_key()
        problems = self.validate(request)
        if problems:
            raise InvalidRequest(self.name, problems)

    # -- shared steps ------------------------------------------------------------------------

    def poll_intervals(self) -> "PollSchedule":
        """A fresh adaptive schedule, started now (call it right after submitting)."""
        return PollSchedule(self.config.poll_interval_s, self.config.poll_max_interval_s, clock=self._clock)

    async def wait_or_timeout(self, delay: float, deadline: float, task_id: str) -> None:
        """Sleep for the next poll, or cancel the task and raise once the deadline passes."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            await self.cancel_quietly(task_id)
            raise ProviderTimeout(
                self.name,
                f"task {task_id} did not finish within deadline_s={self.config.deadline_s:g}; cancel requested",
                request_id=task_id,
            )
        await self._sleep(min(delay, remaining))

    async def cancel_quietly(self, task_id: str) -> None:
        """Best-effort cancel: never raises, bounded in time (used on deadline and Ctrl-C)."""
        try:
            await asyncio.wait_for(self.cancel(task_id), CANCEL_TIMEOUT_S)
        except (ProviderError, asyncio.TimeoutError, httpx2.HTTPError, NotImplementedError) as exc:
            log.warning("%s: cancel of %s failed: %s", self.name, task_id, secrets.redact_text(str(exc)))

    async def announce(self, task_id: str, on_submitted: Callable[[str], Awaitable[None]] | None) -> None:
        """Hand the task id to the write-ahead callback. If recording it fails, the task
        would be orphaned (and could be paid for twice), so ask the provider to drop it."""
        if on_submitted is None:
            return
        try:
            await on_submitted(task_id)
        except BaseException:
            await self.cancel_quietly(task_id)
            raise

    async def guard_cancel(self, task_id: str, work: Awaitable[T]) -> T:
        """Run `work`; if the caller is cancelled (Ctrl-C) ask the provider to cancel too."""
        try:
            return await work
        except asyncio.CancelledError:
            await self.cancel_quietly(task_id)
            raise

    async def download(self, url: str, nsfw: bool | None = None) -> tuple[GeneratedImage, float]:
        """Fetch one image (no auth header: storage hosts must never see the key)."""
        started = self._clock()
        if url.startswith("data:"):
            data, content_type = decode_base64_image(self.name, url)
        else:
            try:
                # storage hosts redirect; httpx would drop auth across origins anyway, and
                # there is none on this request
                response = await self.http.request("GET", url, auth=False, follow_redirects=True)
            except ProviderError as exc:
                if exc.status in (401, 403, 404, 410):
                    raise ExpiredImage(
                        self.name,
                        f"image URL {_safe_url(url)} answered HTTP {exc.status}: expired or no longer served",
                        status=exc.status,
                    ) from None
                raise
            data, content_type = response.content, response.headers.get("content-type")
        if not data:
            raise BadResponse(self.name, f"empty image from {_safe_url(url)}")
        return to_image(self.name, data, content_type, nsfw), self._clock() - started


class TaskProvider(HostedProvider):
    """A host that accepts a task and answers with an id to poll (fal's queue, Novita and
    HighwayAPI, Replicate, WaveSpeedAI): the id is recorded before the first poll, a resumed
    run polls the same id, and a stopped run asks the host to cancel. A subclass submits,
    then calls `follow`, and implements `_finish` (poll the id to its result)."""

    async def _finish(self, task_id: str, request: GenerationRequest, started: float) -> GenerationResult:
        raise NotImplementedError

    async def follow(self, task_id: str, request: GenerationRequest, started: float,
                     on_submitted: Callable[[str], Awaitable[None]] | None) -> GenerationResult:
        """An accepted task: its id to the write-ahead callback, then polled to the result."""
        await self.announce(task_id, on_submitted)
        return await self.guard_cancel(task_id, self._finish(task_id, request, started))

    async def resume(self, task_id: str, request: GenerationRequest) -> GenerationResult:
        """Poll a task an earlier run recorded, by its id: never a second submission."""
        self.require_key()
        return await self.guard_cancel(task_id, self._finish(task_id, request, self._clock()))


class PollSchedule:
    """Adaptive poll delays: the first poll `first` seconds after submission, then a fixed
    fraction (`POLL_FRACTION`, 1/8) of the time elapsed so far, between `first` and `cap`.

    Why: wall-clock latency is only known to within one poll interval. Fixed or doubling
    intervals quantise it (a 0.2 s and a 0.5 s answer both measured ~1.2 s with a 1 s first
    poll); delays proportional to the elapsed time keep the overshoot under 1/8 of the
    latency at every scale while the number of polls grows only logarithmically with it.
    `at_least(seconds)` takes the provider's own guidance (fal's queue position) as a floor
    for the next delay, still capped."""

    POLL_FRACTION = 0.125

    def __init__(self, first: float, cap: float, *, clock: Callable[[], float] | None = None) -> None:
        self._first = first
        self._cap = max(cap, first)
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._floor = 0.0

    def at_least(self, seconds: float) -> None:
        """The provider says the task will not finish for a while: wait at least this long."""
        self._floor = max(self._floor, seconds)

    def next(self) -> float:
        elapsed = max(0.0, self._clock() - self._start)
        delay = min(self._cap, max(self._first, self.POLL_FRACTION * elapsed, self._floor))
        self._floor = 0.0
        return delay


def as_float(value: Any) -> float | None:
    """Numbers that some providers send as strings."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else int(number)


def lora_url(spec: Any) -> str | None:
    """An https URL for a LoRA file: the spec's own, or the Hugging Face resolve URL of its
    pinned repo file (the form hosted providers download from)."""
    if spec.url:
        return spec.url
    if spec.repo and spec.file:
        return hub_file_url(spec.repo, spec.file, spec.revision)
    return None


def check_range(problems: list[str], label: str, value: float | None, lo: float, hi: float) -> None:
    if value is not None and not lo <= value <= hi:
        problems.append(f"{label} {shown_number(value)} is outside [{shown_number(lo)}, {shown_number(hi)}]")


def shown_number(value: float) -> str:
    """Whole numbers in full (a seed limit is 2147483647, not 2.14748e+09), others short."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_bool_options(problems: list[str], options: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in options and not isinstance(options[name], bool):
            problems.append(f"option {name} must be true or false, got {options[name]!r}")


def check_enum_option(problems: list[str], options: dict[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    if name in options and options[name] not in allowed:
        problems.append(f"option {name}={options[name]!r} is not one of {', '.join(allowed)}")


class ExpiredImage(BadResponse):
    """An image URL answered 401/403/404/410: signed URLs past their TTL look like this."""
