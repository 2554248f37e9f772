"""Fetching a suite's https input picture, once, so fidelity can be measured against it.

Why: a hosted provider takes an https input URL as it is and fetches the picture itself, so
generating never needs its bytes; fidelity to the input does. `lorascope score` fetches it
the first time it needs it (evals.fidelity keeps the bytes in the run, so a re-score or the
report never fetches again and works offline).

What a fetch allows, and why:
- https only, on every redirect hop too (at most MAX_REDIRECTS): a redirect to http:// would
  let anyone on the path swap the picture. Certificates are always verified: against the
  system's trust as httpx reads it (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else certifi's
  bundle), or an explicit `ssl.SSLContext` passed as `verify`.
- a timeout per connect/read (TIMEOUT_S) and one for the whole transfer (TOTAL_S), so a
  server that drips bytes cannot hold `score` forever.
- the body streamed and cut off at the local file's limit (harness.input_images
  MAX_INPUT_BYTES; a Content-Length over it is refused before any body is read), so memory
  stays bounded by the limit (`Accept-Encoding: identity`: no compressed body to inflate);
  then the same checks as a local file (`image_from_bytes`: pixel limit from the header,
  PNG/JPEG/WebP only).
- messages show the URL without its query string or credentials (signed URLs carry tokens).
"""

from __future__ import annotations

import ssl
import time

from lorascope.harness.models import InputImage
from lorascope.registry.resolve import shown_url

#: Redirect hops followed before giving up.
MAX_REDIRECTS = 5
#: Seconds per connect and per read.
TIMEOUT_S = 30.0
#: Seconds for the whole transfer, redirects included.
TOTAL_S = 120.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(ValueError):
    """The URL gave no usable picture; the message says why (URL shown without its query)."""


def fetch_input(
    url: str,
    *,
    verify: ssl.SSLContext | bool = True,
    timeout_s: float = TIMEOUT_S,
    total_s: float = TOTAL_S,
    max_bytes: int | None = None,
) -> InputImage:
    """The picture at https `url` (its bytes, sha256, format, size); FetchError says why not.
    `verify=False` is refused: a test hands in a context trusting its own CA instead."""
    import httpx

    from lorascope.harness import input_images

    if verify is False:
        raise FetchError("certificate verification cannot be turned off for input pictures")
    limit = input_images.MAX_INPUT_BYTES if max_bytes is None else max_bytes
    shown = shown_url(url)
    deadline = time.monotonic() + total_s
    current = url
    try:
        with httpx.Client(verify=verify, timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                          headers={"Accept": "image/png, image/jpeg, image/webp",
                                   "Accept-Encoding": "identity"}) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                if not current.startswith("https://"):
                    raise FetchError(f"{shown} redirects to {shown_url(current)}, which is not https; not followed")
                with client.stream("GET", current) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = str(response.url.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"GET {shown} answered HTTP {response.status_code}")
                    data = _read_capped(response, limit, deadline, total_s, shown)
                break
            else:
                raise FetchError(f"{shown} redirected more than {MAX_REDIRECTS} times; not followed")
    except httpx.TimeoutException:
        raise FetchError(f"GET {shown} timed out (limit {timeout_s:g} s per connect/read)") from None
    except httpx.HTTPError as exc:  # its message may hold the full URL (and a token in its query)
        reason = str(exc).replace(url, shown).replace(current, shown_url(current))
        raise FetchError(f"GET {shown} failed: {type(exc).__name__}: {reason}") from None
    try:
        return input_images.image_from_bytes(data, shown, shown)
    except ValueError as exc:
        raise FetchError(str(exc)) from None


def _read_capped(response, limit: int, deadline: float, total_s: float, shown: str) -> bytes:
    """The body, refused as soon as it passes `limit` bytes or the deadline (never buffered whole)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchError(f"{shown} is {int(declared):,} bytes (Content-Length); the limit is {limit:,}")
    body = bytearray()
    for chunk in response.iter_bytes(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise FetchError(f"{shown} sent more than {limit:,} bytes; the limit is {limit:,} (cut off)")
        if time.monotonic() > deadline:
            raise FetchError(f"GET {shown} took longer than {total_s:g} s in all; cut off")
    return bytes(body)
