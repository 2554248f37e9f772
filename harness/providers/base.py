"""The `Provider` interface every backend implements, hosted or local.

Write-ahead contract (DESIGN.md): the harness records an intent, then calls `generate` with
an `on_submitted` callback; an asynchronous provider calls it with its task id the moment the
provider accepts the task, before polling. After a crash the harness calls `resume(task_id)`
instead of submitting again. Synchronous providers never call `on_submitted`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Awaitable, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from lorascope.harness.models import Estimate, GenerationRequest, GenerationResult

OnSubmitted = Callable[[str], Awaitable[None]]


class ProviderConfig(BaseModel):
    """Settings shared by every provider; a suite's `providers:` entry fills these."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=4, ge=1)
    rpm: float | None = Field(default=None, gt=0, description="requests per minute limit")
    deadline_s: float = Field(default=600.0, gt=0, description="give up on one generation after this")


class HostedConfig(ProviderConfig):
    """A hosted API: root URL and key come from the environment unless given."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    max_retries: int = Field(default=5, ge=0)
    retry_budget_s: float = Field(default=120.0, ge=0)
    poll_interval_s: float = Field(default=0.1, gt=0, description="first poll this long after submitting")
    poll_max_interval_s: float = Field(default=8.0, gt=0, description="longest wait between polls")


class Provider(ABC):
    name: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]] = ProviderConfig
    #: True when an accepted task can be polled again by id after a crash.
    asynchronous: ClassVar[bool] = False
    #: Request option names this provider understands (anything else is a validation problem).
    known_options: ClassVar[frozenset[str]] = frozenset()
    #: True when LoRAs must be local files (`LoraSpec.path`): the harness resolves/downloads
    #: catalogue entries before sending (the local diffusers pipeline).
    needs_local_files: ClassVar[bool] = False
    #: True when the same request on the same machine and software gives the same bytes, so a
    #: comparison can demand exact equality (the local pipeline); hosted APIs make no promise.
    deterministic: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig | dict[str, Any] | None = None) -> None:
        if config is None or isinstance(config, dict):
            config = self.config_model(**(config or {}))
        self.config = config

    @abstractmethod
    def validate(self, request: GenerationRequest) -> list[str]:
        """Every problem with this request for this provider; empty means it may be sent."""

    @abstractmethod
    def endpoint(self, request: GenerationRequest) -> str:
        """Which endpoint/model serves this request (part of the fingerprint)."""

    def model_version(self) -> str:
        """What model/software version answers (part of the fingerprint)."""
        return ""

    @abstractmethod
    def estimate(self, request: GenerationRequest) -> Estimate:
        """Cost and time expected before sending (dry runs and `--max-cost`)."""

    @abstractmethod
    async def generate(
        self, request: GenerationRequest, on_submitted: OnSubmitted | None = None
    ) -> GenerationResult:
        """Run one request to completion. Raises `lorascope.harness.errors.ProviderError` subclasses."""

    async def resume(self, task_id: str, request: GenerationRequest) -> GenerationResult:
        """Pick up a task the provider already accepted (async providers only)."""
        raise NotImplementedError(f"{self.name} cannot resume a task by id")

    async def cancel(self, task_id: str) -> None:
        """Ask the provider to stop a task; best effort."""

    async def aclose(self) -> None:
        """Release clients, pipelines, connections."""

    async def __aenter__(self) -> "Provider":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def env_or(value: str | None, env_var: str, default: str | None = None) -> str | None:
    """A configured value, else the environment variable, else the default."""
    return value if value else os.environ.get(env_var) or default
