"""Turning provider image payloads into `GeneratedImage`s without touching the pixels.

The bytes are kept exactly as the provider sent them (a re-encode would change what the
baseline compares). Format comes from the magic bytes (a CDN's content-type is often
generic), falling back to the content-type; width and height come from the image header via
Pillow, which reads only the header until pixels are asked for.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from lorascope.harness.errors import BadResponse
from lorascope.harness.models import GeneratedImage, ImageFormat

_CONTENT_TYPES: dict[str, ImageFormat] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/webp": "webp",
}

#: Longest string kept verbatim in stored metadata; longer base64 payloads are summarised.
MAX_METADATA_STRING = 2048


def sniff_format(data: bytes, content_type: str | None = None) -> ImageFormat | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if content_type:
        return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    return None


def to_image(provider: str, data: bytes, content_type: str | None = None, nsfw: bool | None = None) -> GeneratedImage:
    """Wrap returned bytes; raise `BadResponse` if they are not a PNG/JPEG/WebP image."""
    from PIL import Image, UnidentifiedImageError  # Pillow is light, but only needed here

    fmt = sniff_format(data, content_type)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            pil_format = (img.format or "").lower()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadResponse(
            provider, f"returned image does not decode ({len(data)} bytes, content-type {content_type!r}): {exc}"
        ) from None
    fmt = fmt or _CONTENT_TYPES.get(f"image/{pil_format}")
    if fmt is None:
        raise BadResponse(provider, f"returned image is {pil_format or 'unknown'}, not png/jpeg/webp")
    return GeneratedImage(data=data, format=fmt, width=width, height=height, nsfw=nsfw)


def decode_base64_image(provider: str, payload: str) -> tuple[bytes, str | None]:
    """Bytes and content-type of a base64 payload or a `data:` URI."""
    content_type = None
    if payload.startswith("data:"):
        header, _, payload = payload.partition(",")
        content_type = header[5:].split(";", 1)[0] or None
    try:
        return base64.b64decode(payload, validate=False), content_type
    except (binascii.Error, ValueError) as exc:
        raise BadResponse(provider, f"base64 image payload does not decode: {exc}") from None


def slim(value: Any) -> Any:
    """Metadata copy without huge blobs (base64 images, data URIs)."""
    if isinstance(value, str):
        if len(value) > MAX_METADATA_STRING:
            return f"<{len(value)} characters omitted>"
        return value
    if isinstance(value, dict):
        return {k: slim(v) for k, v in value.items()}
    if isinstance(value, list):
        return [slim(v) for v in value]
    return value
