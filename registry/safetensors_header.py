"""Read a safetensors header (8-byte little-endian length + JSON) without touching the tensors.

Also the pickle guard: pickle weight files execute code when loaded, so anything that does
not start like a safetensors file is refused before any library sees it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


class NotSafetensorsError(ValueError):
    """The bytes are not a safetensors file (pickle, zip, HTML error page, truncated...)."""


def _sniff(prefix: bytes) -> str:
    if prefix[:1] == b"\x80":
        return "a pickle file (refused: pickle executes code when loaded)"
    if prefix[:2] == b"PK":
        return "a zip archive, the format of torch.save pickles (refused: pickle executes code when loaded)"
    if prefix.lstrip()[:1] == b"<":
        return "HTML/XML, not weights"
    return "not a safetensors file"


def parse_header_bytes(head8: bytes, body: bytes) -> dict[str, Any]:
    try:
        header = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotSafetensorsError(f"{_sniff(head8 + body[:8])}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise NotSafetensorsError("safetensors header is not a JSON object")
    return header


def header_length(head8: bytes) -> int:
    if len(head8) < 8:
        raise NotSafetensorsError("file is too small to be a safetensors file")
    (length,) = struct.unpack("<Q", head8)
    if length < 2 or length > MAX_HEADER_BYTES:
        raise NotSafetensorsError(_sniff(head8))
    return length


def read_header_from(stream: BinaryIO) -> dict[str, Any]:
    head8 = stream.read(8)
    length = header_length(head8)
    body = stream.read(length)
    if len(body) != length:
        raise NotSafetensorsError("file ends inside the safetensors header (truncated)")
    if not body.lstrip()[:1] == b"{":
        raise NotSafetensorsError(_sniff(head8))
    return parse_header_bytes(head8, body)


def read_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a local safetensors file (reads only the header bytes)."""
    with open(path, "rb") as fh:
        return read_header_from(fh)
