"""A suite's input images, read and checked before anything is sent.

Why its own module: every problem (a missing or unreadable file, a file that is not a PNG/
JPEG/WebP picture, a mask whose size differs from its image, an http URL) must be found in
one pass and named with the suite's file:line, and each file is read once however many cells
use it. URLs are not fetched here: the provider fetches them when it generates (their size is
its to check); `lorascope score` fetches them once for fidelity (evals.input_fetch), through
the same byte checks (`image_from_bytes`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorascope.harness.models import InputImage

if TYPE_CHECKING:
    from lorascope.harness.suite import Suite

#: Largest input file read (bytes); a provider would refuse a bigger upload anyway.
MAX_INPUT_BYTES = 32 * 1024 * 1024
#: Largest input picture (pixels), checked from the header before any decoding.
MAX_INPUT_PIXELS = 64 * 1024 * 1024
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageInputs:
    """What one `images:` entry gives a request: the picture, its mask, its control image."""

    id: str
    init: InputImage | None = None
    mask: InputImage | None = None
    control: InputImage | None = None

    @property
    def all(self) -> list[InputImage]:
        return [i for i in (self.init, self.mask, self.control) if i is not None]


def read_image_file(path: Path, source: str) -> InputImage:
    """Bytes, format and size of a local picture; ValueError says why it cannot be used."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValueError(f"{path} not found") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if size > MAX_INPUT_BYTES:
        raise ValueError(f"{path} is {size:,} bytes; the limit is {MAX_INPUT_BYTES:,}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return image_from_bytes(data, str(path), source)


def image_from_bytes(data: bytes, label: str, source: str) -> InputImage:
    """The checks every input picture gets, wherever its bytes came from (a local file here,
    an https URL fetched for fidelity in evals.input_fetch): at most MAX_INPUT_BYTES, at most
    MAX_INPUT_PIXELS (from the header, before decoding), a readable PNG/JPEG/WebP. `label`
    names it in the ValueError."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_INPUT_BYTES:
        raise ValueError(f"{label} is {len(data):,} bytes; the limit is {MAX_INPUT_BYTES:,}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            if width * height > MAX_INPUT_PIXELS:
                raise ValueError(f"{label} is {width}x{height}; the limit is {MAX_INPUT_PIXELS:,} pixels")
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{label} is not a readable image ({type(exc).__name__})") from None
    if fmt not in MIME:
        raise ValueError(f"{label} is a {fmt} image; use PNG, JPEG or WebP")
    return InputImage(data=data, mime=MIME[fmt], width=width, height=height, source=source)


def load_inputs(suite: "Suite") -> tuple[list[ImageInputs], list[str]]:
    """Every `images:` entry read (files relative to the suite), and every problem found."""
    base = suite.path.resolve().parent if suite.path is not None else Path.cwd()
    cache: dict[str, InputImage | str] = {}
    problems: list[str] = []
    out: list[ImageInputs] = []

    def one(value: str, index: int, key: str) -> InputImage | None:
        where = f"{suite.where('images', index, key)}: images[{index}].{key}"
        if value not in cache:
            try:
                if value.startswith("https://"):
                    cache[value] = InputImage(url=value, source=value)
                elif "://" in value:
                    cache[value] = f"{value!r} is not an https URL or a local file"
                else:
                    cache[value] = read_image_file(base / value, value)
            except ValueError as exc:
                cache[value] = str(exc)
        found = cache[value]
        if isinstance(found, str):
            problems.append(f"{where}: {found}")
            return None
        return found

    for index, spec in enumerate(suite.images):
        picture = one(spec.image, index, "image")
        mask = one(spec.mask, index, "mask") if spec.mask else None
        control = one(spec.control, index, "control") if spec.control else None
        if picture and mask and picture.width and mask.width and (picture.width, picture.height) != (mask.width, mask.height):
            problems.append(f"{suite.where('images', index, 'mask')}: images[{index}].mask: {mask.width}x{mask.height} "
                            f"differs from its image's {picture.width}x{picture.height}")
        if suite.mode == "controlnet":
            out.append(ImageInputs(spec.id, control=control or picture))
        else:
            out.append(ImageInputs(spec.id, init=picture, mask=mask))
    return out, problems
