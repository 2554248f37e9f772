"""AI/ML API's synchronous image endpoint (provider-docs 003).

Routes: POST /v1/images/generations ("generate"), GET /cdn/<id>/<n>.<ext> ("image").
`response_mode` = "url" (default) or "b64" (data[].b64_json). Billing headers
x-aimlapi-credits-used / x-aimlapi-usd-spent are sent unless `billing_headers` is False;
meta.usage carries `credits_used`.
"""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

from tests.fakes.images import CONTENT_TYPES, make_image
from tests.fakes.server import FakeServer, Recorded, json_reply

CREDITS = 17850
_ids = itertools.count(1)


#: the request schema of provider-docs 003; anything else is refused
BODY_FIELDS = frozenset({"model", "prompt", "image_size", "output_format", "enable_prompt_expansion",
                         "num_inference_steps", "seed", "num_images", "enable_safety_checker", "acceleration", "loras"})


class AimlapiFake(FakeServer):
    protocol = "aimlapi"
    auth_scheme = "Bearer"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.response_mode = "url"
        self.billing_headers = True
        self.generated: dict[str, dict[str, Any]] = {}

    def route_of(self, method: str, path: str) -> str:
        if method == "POST" and path == "/v1/images/generations":
            return "generate"
        if method == "GET" and path.startswith("/cdn/"):
            return "image"
        return "unknown"

    def _error(self, status: int, message: str, path: str = "/v1/images/generations"):
        return json_reply(status, {"message": message, "path": path, "requestId": "req-err",
                                   "statusCode": status, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ")})

    def auth_error(self, missing: bool):
        return self._error(401, "Unauthorized: invalid or missing API key")

    def answer(self, rec: Recorded):
        return self.generate(rec) if rec.route == "generate" else self.image(rec)

    def problems(self, body: dict[str, Any]) -> list[str]:
        problems = [f"property {name} should not exist" for name in sorted(set(body) - BODY_FIELDS)]
        if body.get("model") != "alibaba/z-image-turbo-lora":
            problems.append("model must be alibaba/z-image-turbo-lora")
        size = body.get("image_size", {"width": 1024, "height": 768})
        if isinstance(size, dict):
            for side in ("width", "height"):
                value = size.get(side, 1024)
                if not 512 <= value <= 2048 or value % 32:
                    problems.append(f"image_size.{side} must be 512..2048 and a multiple of 32")
        steps = body.get("num_inference_steps", 8)
        if not 1 <= steps <= 8:
            problems.append("num_inference_steps must be 1..8")
        if "seed" in body and body["seed"] < 1:
            problems.append("seed must be >= 1")
        if len(body.get("loras", [])) > 3:
            problems.append("loras: at most 3")
        return problems

    def generate(self, rec: Recorded):
        if not isinstance(rec.json, dict):
            return self._error(400, "Body must be JSON")
        problems = self.problems(rec.json)
        if problems:
            return self._error(400, "; ".join(problems))
        if self.latency:
            time.sleep(self.latency)
        gen_id = f"gen-{next(_ids):06d}"
        self.generated[gen_id] = rec.json
        size = rec.json.get("image_size", {"width": 1024, "height": 768})
        width, height = size["width"], size["height"]
        fmt = rec.json.get("output_format", "png")
        count = int(rec.json.get("num_images", 1))
        if self.response_mode == "b64":
            data = [{"b64_json": base64.b64encode(make_image(fmt, width, height, i)).decode(), "url": None}
                    for i in range(count)]
        else:
            data = [{"url": f"{self.url}/cdn/{gen_id}/{i}.{fmt}"} for i in range(count)]
        headers = {"x-request-id": gen_id}
        if self.billing_headers:
            headers.update({"x-aimlapi-credits-used": str(CREDITS * count),
                            "x-aimlapi-usd-spent": f"{CREDITS * count / 2_000_000:.6f}"})
        return json_reply(200, {"data": data, "meta": {"usage": {"credits_used": CREDITS * count}}}, headers)

    def image(self, rec: Recorded):
        parts = rec.path.split("/")
        body = self.generated.get(parts[2]) if len(parts) == 4 else None
        if body is None:
            return self._error(404, "not found", rec.path)
        size = body.get("image_size", {"width": 1024, "height": 768})
        fmt = parts[3].rsplit(".", 1)[1]
        index = int(parts[3].split(".")[0])
        return 200, {"Content-Type": CONTENT_TYPES[fmt]}, make_image(fmt, size["width"], size["height"], index)
