"""Real image bytes for the fakes (Pillow), so clients decode what they download."""

from __future__ import annotations

import io

from PIL import Image

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def make_image(fmt: str = "png", width: int = 64, height: int = 64, seed: int = 0, variant: int = 0) -> bytes:
    """A small two-colour image whose colours depend on `seed`. `variant` moves the inverted
    quarter to another corner: the same request answered with a different picture (a
    provider that changed its model), for drift and regression tests."""
    fmt = "jpeg" if fmt == "jpg" else fmt
    colour = ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)
    img = Image.new("RGB", (width, height), colour)
    x, y = [(0, 0), (width // 2, height // 2), (width // 2, 0), (0, height // 2)][variant % 4]
    img.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), (x, y, x + width // 2, y + height // 2))
    buffer = io.BytesIO()
    img.save(buffer, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt])
    return buffer.getvalue()
