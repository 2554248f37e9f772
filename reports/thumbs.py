"""Thumbnails for reports: made once per image into `RUN/thumbs/`, reused on every re-render.

A 2,000-image report must stay usable, so the page shows small JPEGs and loads the full
image only when asked. Thumbnails are named by the source image's content hash, so a
re-render does no image work for what it already made, and two runs sharing an image
share its thumbnail name. Written atomically (temp file + rename): a crash never leaves a
half-written JPEG that a later render would trust.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, UnidentifiedImageError

from lorascope.registry.digest import sha256_file

THUMB_DIR = "thumbs"
THUMB_MAX_SIDE = 256  # px; shown at 128 CSS px, sharp on 2x screens
THUMB_QUALITY = 82


@dataclass(frozen=True)
class Thumb:
    path: Path  # absolute path of the thumbnail file
    width: int
    height: int


@dataclass(frozen=True)
class ThumbFailure:
    reason: str


def thumb_path(thumb_dir: Path, sha256: str) -> Path:
    return thumb_dir / f"{sha256[:32]}-{THUMB_MAX_SIDE}.jpg"


def make_thumb(image: Path, thumb_dir: Path, sha256: str | None = None) -> Thumb | ThumbFailure:
    """The thumbnail of `image` in `thumb_dir`, made if it does not exist yet."""
    if not image.is_file():
        return ThumbFailure(f"image file missing: {image.name}")
    if sha256:
        # the stored hash names the thumbnail: a damaged file must not be shown as the picture
        # it used to be (its old thumbnail would be reused)
        from lorascope.harness.store import image_problem

        problem = image_problem(image, sha256)
        if problem:
            return ThumbFailure(f"image file {problem}: {image.name} (`lorascope run` restores it)")
    try:
        sha = sha256 or sha256_file(image)
        dest = thumb_path(thumb_dir, sha)
        if dest.is_file():
            try:
                with Image.open(dest) as existing:
                    return Thumb(dest, *existing.size)
            except (OSError, UnidentifiedImageError):
                pass  # unreadable leftover: make it again
        with Image.open(image) as src:
            src.load()
            img = src.convert("RGB")
        img.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
        thumb_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=thumb_dir, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as fh:
                img.save(fh, format="JPEG", quality=THUMB_QUALITY)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Thumb(dest, *img.size)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return ThumbFailure(f"image unreadable ({type(exc).__name__}): {image.name}")


def make_thumbs(
    images: list[tuple[Path, str | None]],
    thumb_dir: Path,
    workers: int | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[Thumb | ThumbFailure]:
    """Thumbnails for many images, in order; Pillow releases the GIL while decoding and
    resizing, so threads use every core. `on_done` is called once per image (progress)."""
    if not images:
        return []
    workers = workers or min(8, (os.cpu_count() or 2))

    def one(item: tuple[Path, str | None]) -> Thumb | ThumbFailure:
        result = make_thumb(item[0], thumb_dir, item[1])
        if on_done is not None:
            on_done()
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, images))


def missing_count(images: list[tuple[Path, str | None]], thumb_dir: Path) -> int:
    """How many of `images` have no thumbnail yet (by content hash when known)."""
    return sum(1 for path, sha in images if not sha or not thumb_path(thumb_dir, sha).is_file())
