"""HighwayAPI: Novita's async task protocol at https://api.highwayapi.ai (provider-docs 002).

Differences from Novita, all from HighwayAPI's own page:
- one documented endpoint, `/v3/async/z-image-turbo-lora` (`loras` may be empty), so every
  request goes there;
- `output_format` (jpeg|png|webp, default webp) is sent from the request's output_format;
- `enable_base64_output` is documented on the LoRA endpoint;
- img2img `image_url` + `strength` (0..1) and inpainting `mask` (needs `image_url`) are sent
  only when given as request options;
- the page states no size range, so sides are not range-checked (only positive).
"""

from __future__ import annotations

from typing import Any

from lorascope.harness.models import GenerationRequest
from lorascope.harness.providers._hosted import check_range
from lorascope.harness.providers.novita import NovitaProvider


class HighwayProvider(NovitaProvider):
    name = "highway"
    env_key_var = "HIGHWAY_API_KEY"
    env_url_var = "LORASCOPE_HIGHWAY_URL"
    default_root = "https://api.highwayapi.ai"
    typical_seconds = 6.0
    known_options = frozenset({"enable_base64_output", "endpoint", "image_url", "strength", "mask"})
    size_range = None
    base_endpoint = None
    base64_on_lora_endpoint = True
    docs_url = "https://api.highwayapi.ai (HighwayAPI docs: POST /v3/async/z-image-turbo-lora)"

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        body = super().body(request)
        body["output_format"] = request.output_format
        for name in ("image_url", "strength", "mask"):
            if name in request.options:
                body[name] = request.options[name]
        return body

    def _validate(self, request: GenerationRequest, problems: list[str]) -> None:
        super()._validate(request, problems)
        options = request.options
        image_url = options.get("image_url")
        if image_url is not None and not (isinstance(image_url, str) and image_url.startswith(("https://", "http://"))):
            problems.append(f"option image_url must be an http(s) URL, got {image_url!r}")
        if "strength" in options:
            strength = options["strength"]
            if isinstance(strength, bool) or not isinstance(strength, (int, float)):
                problems.append(f"option strength must be a number in [0, 1], got {strength!r}")
            else:
                check_range(problems, "option strength", strength, 0.0, 1.0)
            if image_url is None:
                problems.append("option strength needs option image_url (img2img)")
        if "mask" in options:
            mask = options["mask"]
            if not (isinstance(mask, str) and mask.startswith(("https://", "http://"))):
                problems.append(f"option mask must be an http(s) URL, got {mask!r}")
            if image_url is None:
                problems.append("option mask needs option image_url (inpainting)")
