"""Which image-conditioned modes a provider serves, and how it takes input images.

Providers declare `modes` (default: text-to-image only) and `input_forms` ("url": only
https URLs, like HighwayAPI's `image_url`; "bytes": only local files, like the local
pipeline; "any": both, like fal, which takes a data URI wherever it takes a URL). The grid
checks a suite against these before the first request; each provider's `validate` uses the
same function for requests built any other way.
"""

from __future__ import annotations

from typing import Any

from lorascope.harness.models import GenerationRequest, InputImage

TEXT_ONLY = frozenset({"txt2img"})


def modes_of(provider: Any) -> frozenset[str]:
    return getattr(provider, "modes", TEXT_ONLY)


def input_forms_of(provider: Any) -> str:
    return getattr(provider, "input_forms", "any")


def input_problem(provider: Any, image: InputImage) -> str | None:
    """Why `provider` cannot take this input in its form (bytes or URL), or None."""
    forms = input_forms_of(provider)
    name = getattr(provider, "name", "this provider")
    if forms == "url" and image.url is None:
        return f"{name} takes input images as https URLs only; {image.label} is a local file (host it, or use fal)"
    if forms == "bytes" and image.data is None:
        return f"{name} needs input images as local files; {image.label} is a URL (download it next to the suite)"
    return None


def mode_problems(provider: Any, request: GenerationRequest) -> list[str]:
    """The request's mode or input forms that `provider` does not serve (empty: fine)."""
    mode = request.mode
    if mode not in modes_of(provider):
        served = ", ".join(sorted(modes_of(provider)))
        return [f"mode {mode} is not served by {getattr(provider, 'name', 'this provider')} (it serves: {served})"]
    images = [i for i in (request.init_image, request.mask_image, request.control_image) if i is not None]
    return [p for p in (input_problem(provider, i) for i in images) if p]
