"""Recording into the run folder: a result's images checked and written (and offered to the
shared cache), a cached generation linked in, the software versions, and `results.parquet`
refreshed at the end (pyarrow is imported only for that, and only when the run changed)."""

from __future__ import annotations

import io
import platform
import sqlite3
import sys
import threading
from pathlib import Path

from lorascope.harness.errors import BadResponse
from lorascope.harness.models import GenerationResult
from lorascope.harness.plan import Unit
from lorascope.harness.store import RunStore, SharedCache, StoredImage, image_problem, link_or_copy
from lorascope.harness.summary import RunSummary


class StorageFailure(RuntimeError):
    """The run folder could not take an image (disk full, permissions)."""


def check_and_write(store: RunStore, result: GenerationResult, fingerprint: str,
                     cache: SharedCache | None) -> list[StoredImage]:
    """Decode each image (a provider may send bytes that are not an image), write it, and
    offer the generation to the shared cache (seeded requests only). Runs in a worker thread."""
    from PIL import Image, UnidentifiedImageError

    if len(result.images) < 1:
        raise BadResponse(result.provider, "the provider returned no image")
    checked: list[tuple[bytes, str, int, int, bool | None]] = []
    for index, image in enumerate(result.images):
        try:
            with Image.open(io.BytesIO(image.data)) as im:
                fmt = (im.format or "").lower()
                width, height = im.size
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BadResponse(result.provider, f"image {index} does not decode ({len(image.data)} bytes): {exc}") from None
        fmt = {"jpg": "jpeg"}.get(fmt, fmt)
        if fmt not in ("png", "jpeg", "webp"):
            raise BadResponse(result.provider, f"image {index} is {fmt or 'of an unknown format'}, not png/jpeg/webp")
        checked.append((image.data, fmt, width, height, image.nsfw))
    stored = []
    for data, fmt, width, height, nsfw in checked:
        try:
            sha, rel = store.write_image(data, fmt)
        except OSError as exc:
            raise StorageFailure(f"cannot write an image into {store.run_dir}: {exc.strerror or exc}") from None
        stored.append(StoredImage(sha, rel, fmt, width, height, nsfw))
    if cache is not None:
        cache.put(fingerprint, result.provider, result, stored, store.run_dir)
    return stored


def reuse(store: RunStore, cache: SharedCache, unit: Unit, epoch: int, attempts: dict[str, int]) -> bool:
    found = cache.get(unit.fingerprint)
    if found is None:
        return False
    result, images = found
    try:
        for im in images:
            target = store.run_dir / im.path
            if target.exists() and image_problem(target, im.sha256):
                target.unlink()  # damaged: restored from the cache's verified copy below
            link_or_copy(cache.root / im.path, target)
    except OSError:
        return False
    attempt = attempts.get(unit.fingerprint, 0) + 1
    attempts[unit.fingerprint] = attempt
    store.record_reuse(unit.fingerprint, unit.provider, epoch, attempt, result, images)
    return True


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("lorascope", "httpx", "pydantic"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return info


def prewarm_results() -> threading.Thread | None:
    """Import pyarrow in a background thread while the run waits on the network.

    Why: writing results.parquet needs it (pyarrow alone, not pandas: results.py), and the
    import costs ~0.1 s of CPU; done at the end it adds that to every run's wall time, done
    here it overlaps the providers' latency. Called only once something is to be sent (a
    re-run that changes nothing imports nothing), shortly after the first requests left."""
    if "pyarrow.parquet" in sys.modules:
        return None

    def load() -> None:
        try:
            import pyarrow.json  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:  # refresh_results reports it
            pass

    thread = threading.Thread(target=load, name="lorascope-prewarm-results", daemon=True)
    thread.start()
    return thread


def refresh_results(store: RunStore, out_dir: Path, summary: RunSummary) -> None:
    """Rebuild results.parquet unless it already shows this exact state (re-runs of a
    finished run then skip importing pandas and pyarrow)."""
    from lorascope.harness.results import RESULTS_NAME

    token = store.state_token()
    if (out_dir / RESULTS_NAME).is_file() and store.get_meta("results_token") == token:
        return
    try:
        from lorascope.harness.results import export_results

        export_results(out_dir)
        store.set_meta({"results_token": token})
    except (OSError, sqlite3.Error, ImportError) as exc:
        summary.notes.append(f"results.parquet not written: {exc}")
