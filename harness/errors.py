"""The small taxonomy every provider failure is mapped onto, so the user (and the store)
sees a kind and the provider's own message, never a bare traceback. Messages never carry
API keys: providers build them from response bodies that `lorascope.harness.secrets.redact` cleaned.
"""

from __future__ import annotations

from typing import ClassVar


class ProviderError(Exception):
    kind: ClassVar[str] = "provider_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.status = status
        self.request_id = request_id


class RejectedRequest(ProviderError):
    """The provider says the request is wrong (4xx, validation). Retrying cannot help."""

    kind = "rejected"


class InvalidRequest(RejectedRequest):
    """Our own pre-flight validation found problems; nothing was sent."""

    kind = "invalid"

    def __init__(self, provider: str, problems: list[str]) -> None:
        super().__init__(provider, "; ".join(problems))
        self.problems = problems


class NotSent(ProviderError):
    """Refused on this machine before a byte left it (a header httpx will not write, a root
    without a scheme): not billed, not counted as sent, safe to send again once fixed."""

    kind = "not_sent"


class AuthError(ProviderError):
    kind = "auth"

    def __init__(self, provider: str, env_var: str, message: str = "", **kw) -> None:
        text = message or "missing or rejected API key"
        super().__init__(provider, f"{text} (set {env_var})", **kw)
        self.env_var = env_var


class RateLimited(ProviderError):
    kind = "rate_limited"
    retryable = True

    def __init__(self, provider: str, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(provider, message, **kw)
        self.retry_after = retry_after


class TaskFailed(ProviderError):
    kind = "task_failed"


class ContentFiltered(ProviderError):
    kind = "content_filtered"


class ProviderTimeout(ProviderError):
    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """5xx or a transport failure: worth a bounded retry."""

    kind = "provider_error"
    retryable = True


class BadResponse(ProviderError):
    """The provider answered with something its protocol does not allow (malformed JSON,
    missing fields, an image that does not decode)."""

    kind = "bad_response"
