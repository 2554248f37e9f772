"""The fingerprint of a generation: sha256 of its canonical request.

Two requests with the same fingerprint would make the same paid call, so the store and the
shared cache key on it. Canonical means: sorted keys, no whitespace, floats as Python's
shortest repr, LoRAs by identity (content hash, else pinned revision, else URL) and scale
in the order they are applied. Provider config (keys, URLs, timeouts, concurrency) and
transport-only options are not part of it: they change how we ask, not what we get.

Image-conditioned requests add their inputs (by content hash, else URL) and settings
(strength, ControlNet scale/start/end/preprocess); a key is only present when set, so a
text-to-image request's canonical form, and every stored fingerprint, stay as they were.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lorascope.harness.models import GenerationRequest

#: Bump when the canonical form changes, so old cache entries stop matching.
FINGERPRINT_VERSION = 1
#: Options that only change how the image travels back (a data URI or base64 in the answer
#: instead of a URL: fal `sync_mode`, Novita/HighwayAPI `enable_base64_output`), never the
#: image itself; toggling one must not pay for the grid again.
TRANSPORT_OPTIONS = frozenset({"sync_mode", "enable_base64_output"})


def canonical_request(provider: str, endpoint: str, model_version: str, request: GenerationRequest) -> dict[str, Any]:
    return {
        "v": FINGERPRINT_VERSION,
        "provider": provider,
        "endpoint": endpoint,
        "model_version": model_version,
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "seed": request.seed,
        "loras": [[lora.identity, float(lora.scale)] for lora in request.loras],
        "format": request.output_format,
        "options": {k: v for k, v in request.options.items() if k not in TRANSPORT_OPTIONS},
        "num_images": request.num_images,
    } | _conditioning(request)


def _conditioning(request: GenerationRequest) -> dict[str, Any]:
    """The image-conditioning part of the canonical request (empty for text-to-image)."""
    out: dict[str, Any] = {}
    for key, image in (("init_image", request.init_image), ("mask_image", request.mask_image),
                       ("control_image", request.control_image)):
        if image is not None:
            out[key] = image.identity
    for key in ("strength", "control_scale", "control_start", "control_end"):
        value = getattr(request, key)
        if value is not None:
            out[key] = float(value)
    if request.preprocess is not None:
        out["preprocess"] = request.preprocess
    return out


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def fingerprint(provider: str, endpoint: str, model_version: str, request: GenerationRequest) -> str:
    """Hex sha256 of the canonical request."""
    payload = canonical_json(canonical_request(provider, endpoint, model_version, request))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
