"""Shared HTTP plumbing for the hosted providers: one pooled client per provider, explicit
timeouts, bounded retries, and the mapping of HTTP answers onto `lorascope.harness.errors`.

Which library carries the bytes, and why: requests go out over aiohttp (one `ClientSession`
per provider) and every answer is handed on as an `httpx2.Response`, so the policy below and
every provider module read httpx's API whatever carried the request. httpx's own pool
(httpcore 1.x) re-checks every open connection on every request (and, with anyio 4, retries a
failing `import sniffio` each time); at concurrency 32 that was 3-8 ms of CPU per cell, httpx2
(the maintained fork) ~2.3 ms, aiohttp ~1 ms (`benchmarks/RESULTS-transports.md`). aiohttp's
errors are sorted here into never sent / maybe sent / unreadable and named as httpx names
them. A caller that hands in an httpx2 transport (a test double, a proxy transport) gets the
httpx2 client instead, under the same policy.

Why the retry rules look the way they do:
- 429, 408 and 5xx answers and transport failures are transient: retry with exponential
  backoff and *full jitter* (AWS architecture blog, "Exponential Backoff And Jitter"), so a
  grid of concurrent requests does not retry in lock-step. A `Retry-After` header (seconds or
  an HTTP date, RFC 9110 §10.2.3) wins over our own backoff.
- Retries stop at `max_retries` attempts or when the next wait would cross `retry_budget_s`,
  whichever comes first; the last error is raised.
- A 4xx other than 408/429 says the request is wrong (or the key is): never retried.
- A paid submission is not idempotent. If it fails *after* the bytes may have reached the
  provider (read timeout, connection dropped mid-answer), resending could pay twice, so a
  non-idempotent call is only retried when the provider answered with a retryable status
  (the task was not accepted) or the connection never opened. A 502 or 504 is not such an
  answer: it comes from a gateway that lost the upstream's reply, and the upstream may have
  run (and billed) the request.
- No `ProviderError` carries an httpx2 or aiohttp exception in its `__context__`: they hold
  the request, whose headers hold the key.

The key is added per request, never as a client default, so image downloads from a CDN
never carry it. `sleep`, `clock` and `rng` are injectable so tests run retries instantly.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2

from lorascope.harness import secrets
from lorascope.harness.errors import (
    AuthError,
    BadResponse,
    ContentFiltered,
    NotSent,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RejectedRequest,
)
from lorascope.registry.resolve import shown_url

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: Transport errors where the request certainly never reached the server.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
_RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
#: RFC 9110 §9.2.2; a POST (a paid submission) is not among them.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Gateway answers: the upstream may have accepted the request before its reply was lost.
_AMBIGUOUS_STATUSES = frozenset({502, 504})

_CONTENT_POLICY_WORDS = ("content_policy", "content policy", "nsfw", "unsafe content", "safety")


@dataclass
class RetryPolicy:
    """How often and how long to retry one call."""

    max_retries: int = 5
    budget_s: float = 120.0
    base_s: float = 0.5
    cap_s: float = 30.0

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return rng() * min(self.cap_s, self.base_s * (2**attempt))


@dataclass
class CallLog:
    """What one logical call did (attempts and waits), for metadata and tests."""

    attempts: int = 0
    waits: list[float] = field(default_factory=list)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def provider_message(response: httpx2.Response) -> str:
    """The provider's own words from an error body, whichever field it uses."""
    text = response.text
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        body = None
    message: str | None = None
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):  # fal / pydantic-style 422: [{loc, msg, type}]
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg", item)))
                else:
                    parts.append(str(item))
            message = "; ".join(parts)
        elif detail:
            message = str(detail)
        for key in ("message", "reason", "error", "msg"):
            if message:
                break
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value)
            if value:
                message = str(value)
    if not message:
        message = text.strip()[:500] or response.reason_phrase or "no message"
    return secrets.redact_text(f"HTTP {response.status_code}: {message}")


def _error_type(response: httpx2.Response) -> str:
    kind = response.headers.get("x-fal-error-type", "")
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error_type"):
            kind = kind or str(body["error_type"])
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        pass
    return kind


def looks_like_content_policy(*texts: str | None) -> bool:
    joined = " ".join(t for t in texts if t).lower()
    return any(word in joined for word in _CONTENT_POLICY_WORDS)


def error_for(
    provider: str, env_var: str, response: httpx2.Response, *, now: float | None = None
) -> ProviderError:
    """Map a non-2xx answer onto the taxonomy, with the provider's own (redacted) message."""
    status = response.status_code
    message = provider_message(response)
    request_id = response.headers.get("x-fal-request-id") or response.headers.get("x-request-id")
    if status in (401, 403):
        return AuthError(provider, env_var, f"the provider refused the key: {message}", status=status)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
        return RateLimited(
            provider,
            message if retry_after is None else f"{message} (Retry-After {retry_after:g} s)",
            retry_after=retry_after,
            status=status,
            request_id=request_id,
        )
    if status == 408 or status >= 500:
        return ProviderUnavailable(provider, message, status=status, request_id=request_id)
    if looks_like_content_policy(_error_type(response), message):
        return ContentFiltered(provider, message, status=status, request_id=request_id)
    return RejectedRequest(provider, message, status=status, request_id=request_id)


class ProviderHttp:
    """One provider's HTTP client: auth per request, retries, error mapping."""

    def __init__(
        self,
        provider: str,
        *,
        env_var: str,
        auth_header: tuple[str, str] | None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        policy: RetryPolicy | None = None,
        max_connections: int = 20,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        wall_clock: Clock | None = None,
        rng: Callable[[], float] | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.env_var = env_var
        self._auth_header = auth_header
        if auth_header:
            secrets.register(auth_header[1].split(" ", 1)[-1])
        self.policy = policy or RetryPolicy()
        self.sleep: Sleep = sleep or asyncio.sleep
        self.clock: Clock = clock or time.monotonic
        self.wall_clock: Clock = wall_clock or time.time
        self.rng = rng or random.random
        self.timeout = httpx2.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=connect_timeout_s
        )
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None
        #: the most recent calls (bounded: a long run polls thousands of times)
        self.calls: deque[CallLog] = deque(maxlen=64)
        #: requests travel over aiohttp unless a test or a user hands in an httpx2 transport
        self._use_aiohttp = transport is None
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def client(self) -> httpx2.AsyncClient:
        """The httpx2 client, made on first use: only runs handed a transport (tests, the
        benchmark's comparison) send through it, and building one loads the system's CA
        certificates (~30-45 ms of start-up that an aiohttp run would pay for nothing)."""
        if self._client is None:
            self._client = httpx2.AsyncClient(
                timeout=self.timeout,
                limits=httpx2.Limits(max_connections=self._max_connections,
                                     max_keepalive_connections=self._max_connections),
                transport=self._transport,
                follow_redirects=False,
                headers={"User-Agent": "lorascope/0.1 (+httpx2)"},
            )
        return self._client

    def __repr__(self) -> str:  # never show the auth header
        return f"ProviderHttp({self.provider!r})"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the running loop (aiohttp sessions belong to one loop).
        No default auth header (the key is added per request); answers are decoded by
        httpx2 (`auto_decompress=False`), so a bad Content-Encoding is the same error either
        way."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.timeout.pool, sock_connect=self.timeout.connect,
                    sock_read=self.timeout.read,
                ),
                headers={"User-Agent": "lorascope/0.1 (+aiohttp)"},
                auto_decompress=False,
                # proxies from the environment, as httpx honours them; looked up per request by
                # aiohttp (~0.25 ms of CPU each here), so only switched on when one is set
                trust_env=_proxy_in_env(),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        follow_redirects: bool = False,
    ) -> httpx2.Response:
        """Send with retries; return a 2xx response or raise a `ProviderError`."""
        idempotent = method.upper() in _IDEMPOTENT_METHODS
        headers: dict[str, str] = {}
        if auth and self._auth_header:
            headers[self._auth_header[0]] = self._auth_header[1]
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        log = CallLog()
        self.calls.append(log)
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            log.attempts = attempt
            retry_after: float | None = None
            answer = await self._send(method, url, json_body, params, headers, follow_redirects, idempotent)
            if isinstance(answer, httpx2.Response):
                response = answer
                if response.is_success:
                    return response
                error = error_for(self.provider, self.env_var, response, now=self.wall_clock())
                if response.status_code not in _RETRY_STATUSES:
                    raise error
                if not idempotent and response.status_code in _AMBIGUOUS_STATUSES:
                    raise ProviderUnavailable(
                        self.provider,
                        f"{error.message} from {method} {_safe_url(url)}; the provider may have accepted it, "
                        "so it is not resent automatically",
                        status=response.status_code,
                        request_id=error.request_id,
                    )
                # RFC 9110: Retry-After may come with 429 and 503 (and any retryable answer)
                retry_after = parse_retry_after(response.headers.get("retry-after"), now=self.wall_clock())
            else:
                error = answer
            if attempt > self.policy.max_retries:
                raise error
            wait = retry_after if retry_after is not None else self.policy.backoff(attempt - 1, self.rng)
            if self.clock() - started + wait > self.policy.budget_s:
                raise error
            log.waits.append(wait)
            await self.sleep(wait)

    async def _send(
        self,
        method: str,
        url: str,
        json_body: Any,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        follow_redirects: bool,
        idempotent: bool,
    ) -> httpx2.Response | ProviderError:
        """One attempt: the response, or the retryable error a transport failure maps to.
        Errors are raised outside the `except` so they do not chain the httpx2 exception."""
        if self._use_aiohttp:
            return await self._send_aiohttp(method, url, json_body, params, headers, follow_redirects, idempotent)
        try:
            return await self.client.request(
                method, url, json=json_body, params=params, headers=headers, follow_redirects=follow_redirects
            )
        except (httpx2.UnsupportedProtocol, httpx2.LocalProtocolError) as exc:
            # a misconfigured root, or a header h11 refuses to write: nothing left the machine,
            # and retrying cannot help
            reason, outcome = _describe(exc), "unsendable"
        except UnicodeEncodeError as exc:  # a non-ASCII header value: refused before sending
            reason, outcome = f"a header value is not ASCII ({exc.reason})", "unsendable"
        except httpx2.TransportError as exc:
            reason, outcome = _describe(exc), ("not sent" if isinstance(exc, _NOT_SENT) else "maybe sent")
        except httpx2.RequestError as exc:  # an answer came but cannot be read (decoding, redirects)
            reason, outcome = _describe(exc), "unreadable"
        return self._failed(reason, outcome, method, url, idempotent)

    async def _send_aiohttp(
        self,
        method: str,
        url: str,
        json_body: Any,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        follow_redirects: bool,
        idempotent: bool,
    ) -> httpx2.Response | ProviderError:
        """One attempt over aiohttp (a third of httpx2's CPU per request at concurrency 32:
        benchmarks/RESULTS-transports.md), answered as an `httpx2.Response` so the policy
        above and every provider read it as before. aiohttp's errors are sorted by what they
        say about the request: never left (connect), maybe accepted (sent, then the connection
        failed or timed out), or unreadable."""
        refused = _header_problem(headers)
        if refused:
            return self._failed(refused, "unsendable", method, url, idempotent)
        try:
            async with self._aiohttp_session().request(
                method, url, json=json_body, params=params, headers=headers, allow_redirects=follow_redirects,
            ) as answer:
                body = await answer.read()
                status, answer_headers, final_url = answer.status, list(answer.headers.items()), str(answer.url)
        except (aiohttp.RedirectClientError, aiohttp.TooManyRedirects) as exc:  # the first request went out
            reason, outcome = _describe(exc), "unreadable"
        except aiohttp.InvalidURL as exc:  # aiohttp checks the URL before it opens a connection
            reason, outcome = _describe(exc), "unsendable"
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:  # no connection
            reason, outcome = _aiohttp_reason(exc), "not sent"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, UnicodeError) as exc:
            # anything else may have happened after the request was written: a paid POST is
            # then not resent (the safe side: never pay twice)
            reason, outcome = _aiohttp_reason(exc), "maybe sent"
        else:
            try:  # httpx2 decodes the body (Content-Encoding) as it would have
                return httpx2.Response(status, headers=answer_headers, content=body,
                                       request=httpx2.Request(method, final_url))
            except httpx2.DecodingError as exc:
                reason, outcome = _describe(exc), "unreadable"
        return self._failed(reason, outcome, method, url, idempotent)

    def _failed(self, reason: str, outcome: str, method: str, url: str, idempotent: bool) -> ProviderError:
        """Raise what cannot be retried; return the retryable error (never chained)."""
        where = f"{method} {_safe_url(url)}"
        if outcome == "unreadable":
            raise BadResponse(self.provider, f"{reason} ({where})")
        if outcome == "unsendable":
            raise NotSent(self.provider, f"{reason} ({where}); nothing was sent")
        if outcome == "maybe sent" and not idempotent:
            raise ProviderUnavailable(
                self.provider,
                f"{reason} while sending {where}; the provider may have accepted it, so it is not resent automatically",
            )
        return ProviderUnavailable(self.provider, f"{reason} ({where})")

    async def get_json(self, url: str, **kw: Any) -> tuple[Any, httpx2.Response]:
        response = await self.request("GET", url, **kw)
        return self.decode_json(response), response

    async def post_json(self, url: str, body: Any, **kw: Any) -> tuple[Any, httpx2.Response]:
        response = await self.request("POST", url, json_body=body, **kw)
        return self.decode_json(response), response

    def decode_json(self, response: httpx2.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
            pass  # raised below, outside the handler: the decode error's context holds the whole body
        snippet = secrets.redact_text(response.text[:200])
        raise BadResponse(
            self.provider,
            f"malformed JSON from {response.request.method} {_safe_url(str(response.request.url))} "
            f"(HTTP {response.status_code}): {snippet!r}",
            status=response.status_code,
        )


def _describe(exc: BaseException) -> str:
    return secrets.redact_text(f"{type(exc).__name__}: {exc}".rstrip(": "))


#: aiohttp's failures named as httpx names them, so messages (and what users grep their logs
#: for) do not depend on which library carried the request
_AIOHTTP_NAMES: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ConnectionTimeoutError, "ConnectTimeout"),
    (aiohttp.ClientConnectorError, "ConnectError"),
    (aiohttp.SocketTimeoutError, "ReadTimeout"),
    (asyncio.TimeoutError, "ReadTimeout"),
    (aiohttp.ServerDisconnectedError, "RemoteProtocolError"),
    (aiohttp.ClientPayloadError, "ReadError"),
    (aiohttp.ClientOSError, "ReadError"),
)


def _aiohttp_reason(exc: BaseException) -> str:
    name = next((label for cls, label in _AIOHTTP_NAMES if isinstance(exc, cls)), type(exc).__name__)
    return secrets.redact_text(f"{name}: {exc}".rstrip(": "))


def _proxy_in_env() -> bool:
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY",
                                                 "https_proxy", "http_proxy", "all_proxy"))


def _header_problem(headers: dict[str, str]) -> str | None:
    """What h11 (under httpx2) refuses to write and aiohttp might send anyway: a name or value
    that is not printable ASCII (a pasted key with a newline, a non-ASCII proxy token). The
    value is never quoted: it may be the key."""
    for name, value in headers.items():
        for label, text in (("name", name), ("value", value)):
            if not text.isascii():
                return f"a header {label} is not ASCII"
            if any(ord(ch) < 0x20 and ch != "\t" or ch == "\x7f" for ch in text):
                return f"header {name if label == 'value' else '?'}: the {label} holds a line break or control character"
    return None


def _safe_url(url: str) -> str:
    """URL without its query string (signed URLs carry tokens) or `user:password@`."""
    return secrets.redact_text(shown_url(url))
