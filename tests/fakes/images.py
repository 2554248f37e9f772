"""Real image bytes for the fakes (Pillow), so clients decode what they download."""

from __future__ import annotations

import io

from PIL import Image

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def make_image(fmt: str = "png", width: int = 64, height: int = 64, seed: int = 0, variant: int = 0) -> bytes:
    """A small two-colour image whose colours depend on `seed`. A non-zero `variant` is the
    same request answered with a different picture (a provider that changed its model): a
    checkerboard whose cell size depends on the variant, which no similarity measure
    mistakes for the original, for regression tests."""
    fmt = "jpeg" if fmt == "jpg" else fmt
    colour = ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)
    inverse = (255 - colour[0], 255 - colour[1], 255 - colour[2])
    img = Image.new("RGB", (width, height), colour)
    img.paste(inverse, (0, 0, width // 2, height // 2))
    if variant:
        cell = max(2, 4 * variant)
        for y in range(0, height, cell):
            for x in range((y // cell) % 2 * cell, width, 2 * cell):
                img.paste(colour if (x < width // 2 and y < height // 2) else inverse, (x, y, x + cell, y + cell))
    buffer = io.BytesIO()
    img.save(buffer, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt])
    return buffer.getvalue()
