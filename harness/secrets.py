"""Keep API keys out of everything lorascope writes or shows: logs, exceptions, the store,
reports. Providers register the keys they load; every text, mapping or header set that leaves
a provider passes through `redact` first.

Two layers, because either alone leaks: the registered key values themselves (whatever text
they turn up in, e.g. a provider echoing the header back in an error body), and the shapes a
credential takes on the wire (`Authorization: Bearer ...`, `Key ...`, `api_key=...`) for keys
we never saw (a proxy's own token).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from lorascope.registry.safe_yaml import strip_controls

MASK = "***"

#: Header names whose values are credentials, whatever they hold.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-fal-key", "cookie", "set-cookie"}
)
#: Mapping keys whose values are credentials (compared lower-case, '-' and '_' alike).
SECRET_FIELDS = frozenset(
    {"api_key", "apikey", "key", "token", "access_token", "secret", "password", "authorization",
     "fal_key", "novita_api_key", "highway_api_key", "aimlapi_key"}
)

_TOKEN = r"[A-Za-z0-9._~+/=:-]"
_CREDENTIAL_SHAPES = [
    # "Bearer abc...", "Basic abc..." (auth schemes): on one line, and credential-like (a digit
    # or base64 punctuation), so "basic\nproviders:" or "a basic illustration" is left alone
    re.compile(rf"(?i)\b(bearer|basic)([ \t]+)((?={_TOKEN}*[\d=+/]){_TOKEN}{{8,}})"),
    # fal's "Key <id>:<secret>": case-sensitive and key-shaped (a digit, 16+ characters), so a
    # prompt saying "key lighting" is left alone
    re.compile(rf"\b(Key)(\s+)((?={_TOKEN}*\d){_TOKEN}{{16,}})"),
    # api_key=..., "access_token": "...", secret: ...
    re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret)([\"']?\s*[=:]\s*[\"']?)([^\s\"'&,;}]{4,})"),
]

_lock = threading.Lock()
#: Registered keys, longest first (a key containing another is masked whole). Rebuilt on the
#: rare `register`, read lock-free on every redaction (a tuple is replaced, never mutated).
_known: tuple[str, ...] = ()


def _forms(secret: str) -> set[str]:
    """The ways a key turns up in text: as is, stripped, and as Python or bytes `repr` quotes it
    (httpx's "Illegal header value b'Bearer abc\\n'" shows the escaped form, not the raw one)."""
    forms = {secret, secret.strip(), strip_controls(secret).strip(), repr(secret)[1:-1],
             repr(secret.encode("utf-8", "replace"))[2:-1]}
    return {f for f in forms if len(f) >= 4}


def register(secret: str | None) -> None:
    """Remember a key so that any text containing it is masked from now on."""
    global _known
    if secret and len(secret.strip()) >= 4:
        with _lock:
            new = _forms(secret) - set(_known)
            if new:
                _known = tuple(sorted({*_known, *new}, key=len, reverse=True))


def key_problem(key: str | None, variable: str) -> str | None:
    """Why `key` cannot go into an HTTP header, naming `variable` and never the value; None if
    it can. A trailing newline (a key read from a file) or a pasted space is the usual cause:
    httpx would refuse the header and quote the key in its error."""
    if key is None:
        return None
    if not key.strip():
        return f"{variable} is set but empty or only whitespace: set it to the key itself"
    if any(not ("\x21" <= ch <= "\x7e") for ch in key):
        return (f"{variable} contains whitespace, control or non-ASCII characters (a trailing newline or a "
                "pasted space?): set it to the key alone; nothing was sent")
    return None


def describe_exception(exc: BaseException) -> str:
    """`Type: message` of any exception, library ones included, with secrets masked: the only
    form an exception's text may take on its way to a store, a report or the terminal."""
    return redact_text(f"{type(exc).__name__}: {exc}".rstrip(": "))


def redact_text(text: str) -> str:
    """Mask registered keys and credential-shaped substrings, and drop control characters
    (a provider's message could carry terminal escape sequences)."""
    if not text:
        return text
    text = strip_controls(text)
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    for shape in _CREDENTIAL_SHAPES:
        text = shape.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


def redact_headers(headers: Mapping[str, str] | Any) -> dict[str, str]:
    """Header mapping (dict or httpx.Headers) with credential values masked."""
    items = headers.items() if hasattr(headers, "items") else headers
    return {
        str(k): (MASK if str(k).lower() in SECRET_HEADERS else redact_text(str(v))) for k, v in items
    }


def redact(value: Any) -> Any:
    """Deep copy of `value` (str, mapping, list/tuple, scalars) with secrets masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and _normal(k) in SECRET_FIELDS and isinstance(v, str) and v:
                out[k] = MASK
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the final message (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Attach `RedactingFilter` to every handler of `logger` (root by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
