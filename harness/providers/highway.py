"""HighwayAPI: Novita's async task protocol at https://api.highwayapi.ai (provider-docs 002).

Differences from Novita, all from HighwayAPI's own page:
- one documented endpoint, `/v3/async/z-image-turbo-lora` (`loras` may be empty), so every
  request goes there;
- `output_format` (jpeg|png|webp, default webp) is sent from the request's output_format;
- `enable_base64_output` is documented on the LoRA endpoint;
- img2img `image_url` + `strength` (0..1) and inpainting `mask` ("white areas are
  repainted", needs `image_url`) come from the request's init/mask images and strength; the
  page says "URL" for both and documents no data URIs, so local files are refused at
  validation (host them, or use fal). No ControlNet is documented;
- the page states no size range, so sides are not range-checked (only positive).
"""

from __future__ import annotations

from typing import Any

from lorascope.harness.models import GenerationRequest
from lorascope.harness.providers.novita import NovitaProvider


class HighwayProvider(NovitaProvider):
    name = "highway"
    env_key_var = "HIGHWAY_API_KEY"
    env_url_var = "LORASCOPE_HIGHWAY_URL"
    default_root = "https://api.highwayapi.ai"
    typical_seconds = 6.0
    known_options = frozenset({"enable_base64_output", "endpoint"})
    modes = frozenset({"txt2img", "img2img", "inpaint"})
    input_forms = "url"
    size_range = None
    base_endpoint = None
    base64_on_lora_endpoint = True
    docs_url = "https://api.highwayapi.ai (HighwayAPI docs: POST /v3/async/z-image-turbo-lora)"

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        body = super().body(request)
        body["output_format"] = request.output_format
        if request.init_image is not None and request.init_image.url is not None:
            body["image_url"] = request.init_image.url
            if request.strength is not None:
                body["strength"] = request.strength
        if request.mask_image is not None and request.mask_image.url is not None:
            body["mask"] = request.mask_image.url
        return body
