"""fal's queue protocol (provider-docs 004 and fal's queue docs).

Routes: POST /fal-ai/z-image/turbo[/lora], and .../turbo/{image-to-image,inpaint,controlnet}[/lora]
("submit"; each refuses fields its page does not document),
GET /fal-ai/z-image/requests/<id>/status ("status"), GET /fal-ai/z-image/requests/<id>
("response"), PUT /fal-ai/z-image/requests/<id>/cancel ("cancel"), GET /cdn/... ("image").
`returned_origin` sets the origin of the status/response/cancel URLs handed back at submit:
None = this server (a proxy that rewrites them), or e.g. "https://queue.fal.run" (what fal
itself returns; a client must rebase those onto its configured root).
"""

from __future__ import annotations

import base64
import random
import re
from typing import Any

from tests.fakes.images import CONTENT_TYPES, make_image
from tests.fakes.server import FakeServer, Recorded, json_reply
from tests.fakes.tasks import TaskBook

APP = "/fal-ai/z-image"
#: the Input Schema of provider-docs 004; anything else is refused like fal's pydantic models do
INPUT_FIELDS = frozenset({"prompt", "image_size", "num_inference_steps", "seed", "sync_mode", "num_images",
                          "enable_safety_checker", "output_format", "acceleration", "enable_prompt_expansion", "loras"})
#: Extra fields each image-conditioned endpoint documents (fal's model pages, summarised in
#: research/providers-and-modes.md), and the ones it requires.
MODE_FIELDS = {
    "image-to-image": frozenset({"image_url", "strength"}),
    "inpaint": frozenset({"image_url", "mask_image_url", "strength", "control_scale", "control_start", "control_end"}),
    "controlnet": frozenset({"image_url", "control_scale", "control_start", "control_end", "preprocess"}),
}
MODE_REQUIRED = {"image-to-image": ("image_url",), "inpaint": ("image_url", "mask_image_url"),
                 "controlnet": ("image_url",)}
SUBMIT_PATHS = {f"{APP}/turbo{mode}{lora}" for mode in ("", *(f"/{m}" for m in MODE_FIELDS))
                for lora in ("", "/lora")}
PRESETS = {
    "square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
}


class FalFake(FakeServer):
    protocol = "fal"
    auth_scheme = "Key"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.book = TaskBook("fal")
        self.returned_origin: str | None = None
        self.nsfw = False
        #: a different picture for the same request (0 = the usual one): a provider that changed
        self.variant = 0

    @property
    def tasks(self):
        return self.book.tasks

    def route_of(self, method: str, path: str) -> str:
        if method == "POST" and path in SUBMIT_PATHS:
            return "submit"
        if path.startswith(f"{APP}/requests/"):
            if method == "GET" and path.endswith("/status"):
                return "status"
            if method == "PUT" and path.endswith("/cancel"):
                return "cancel"
            if method == "GET":
                return "response"
        if method == "GET" and path.startswith("/cdn/"):
            return "image"
        return "unknown"

    def auth_error(self, missing: bool):
        return json_reply(401, {"detail": "No user found for Key ID and Secret"})

    def answer(self, rec: Recorded):
        return getattr(self, rec.route)(rec)

    def problems(self, body: dict[str, Any], lora: bool, mode: str = "") -> list[dict[str, Any]]:
        detail = []

        def bad(field: str, msg: str) -> None:
            detail.append({"loc": ["body", field], "msg": msg, "type": "value_error"})

        if not isinstance(body.get("prompt"), str):
            bad("prompt", "field required")
        steps = body.get("num_inference_steps", 8)
        if not isinstance(steps, int) or not 1 <= steps <= 8:
            bad("num_inference_steps", "ensure this value is between 1 and 8")
        if not 1 <= body.get("num_images", 1) <= 4:
            bad("num_images", "ensure this value is between 1 and 4")
        if body.get("output_format", "png") not in ("jpeg", "png", "webp"):
            bad("output_format", "unexpected value; permitted: 'jpeg', 'png', 'webp'")
        if body.get("acceleration", "regular") not in ("none", "regular", "high"):
            bad("acceleration", "unexpected value; permitted: 'none', 'regular', 'high'")
        size = body.get("image_size", "landscape_4_3")
        if isinstance(size, str) and size not in PRESETS:
            bad("image_size", "unexpected value")
        if len(body.get("loras", [])) > 3:
            bad("loras", "ensure this value has at most 3 items")
        for name in MODE_REQUIRED.get(mode, ()):
            if name not in body:
                bad(name, "field required")
        for name in ("image_url", "mask_image_url"):  # a URL, or a data URI (fal's file inputs)
            value = body.get(name)
            if name in body and not (isinstance(value, str) and value.startswith(("https://", "http://", "data:image/"))):
                bad(name, "not a valid URL or data URI")
        if "strength" in body and not (isinstance(body["strength"], (int, float)) and 0 <= body["strength"] <= 1):
            bad("strength", "ensure this value is between 0 and 1")
        if body.get("preprocess", "none") not in ("none", "canny", "depth", "pose"):
            bad("preprocess", "unexpected value; permitted: 'none', 'canny', 'depth', 'pose'")
        for name in sorted(set(body) - INPUT_FIELDS - MODE_FIELDS.get(mode, frozenset())):
            bad(name, "extra fields not permitted")
        if "loras" in body and not lora:
            bad("loras", "extra fields not permitted")
        return detail

    def _origin(self) -> str:
        return self.returned_origin or self.url

    def submit(self, rec: Recorded):
        if not isinstance(rec.json, dict):
            return json_reply(422, {"detail": [{"loc": ["body"], "msg": "invalid JSON", "type": "value_error"}]})
        parts = rec.path.removeprefix(f"{APP}/turbo").strip("/").split("/")
        mode = parts[0] if parts[0] in MODE_FIELDS else ""
        detail = self.problems(rec.json, lora=rec.path.endswith("/lora"), mode=mode)
        if detail:
            return json_reply(422, {"detail": detail}, {"X-Fal-Error-Type": "validation_error"})
        with self.lock:
            task = self.book.create(rec.json, self.latency)
        base = f"{self._origin()}{APP}/requests/{task.id}"
        return json_reply(200, {
            "request_id": task.id, "status_url": f"{base}/status", "response_url": base,
            "cancel_url": f"{base}/cancel", "queue_position": 0,
        })

    def _task(self, rec: Recorded):
        match = re.match(rf"^{APP}/requests/([^/]+)", rec.path)
        with self.lock:
            return self.book.tasks.get(match.group(1)) if match else None

    def status(self, rec: Recorded):
        task = self._task(rec)
        if task is None:
            return json_reply(404, {"detail": "Request not found"})
        with self.lock:
            state = task.state()
        if state == "queued":
            return json_reply(202, {"status": "IN_QUEUE", "queue_position": 1, "response_url": ""})
        if state == "running":
            return json_reply(202, {"status": "IN_PROGRESS", "logs": None})
        submit, execute, complete = task.provider_times_ms()
        inference = round(max(complete - execute, 1) / 1000, 3)  # fal reports seconds
        body: dict[str, Any] = {"status": "COMPLETED", "logs": None, "metrics": {"inference_time": inference}}
        if state == "failed":
            body.update(error=self.book.fail_reason, error_type="runner_error")
        elif state == "filtered":
            body.update(error="The content could not be processed because it contained material flagged by a content checker.",
                        error_type="content_policy_violation")
        elif state == "cancelled":
            body.update(error="Request was cancelled", error_type="request_cancelled")
        return json_reply(200, body)

    def size_of(self, body: dict[str, Any]) -> tuple[int, int]:
        size = body.get("image_size", "landscape_4_3")
        if isinstance(size, dict):
            return int(size.get("width", 512)), int(size.get("height", 512))
        return PRESETS[size]

    def response(self, rec: Recorded):
        task = self._task(rec)
        if task is None:
            return json_reply(404, {"detail": "Request not found"})
        with self.lock:
            done = task.peek_done()
        if not done:
            return json_reply(400, {"detail": "Request is still in progress"})
        width, height = self.size_of(task.body)
        fmt = task.body.get("output_format", "png")
        seed = task.body.get("seed", random.Random(task.id).randint(0, 2**31))
        count = task.body.get("num_images", 1)

        def url(i: int) -> str:
            if task.body.get("sync_mode"):  # 004: "the media will be returned as a data URI"
                data = base64.b64encode(make_image(fmt, width, height, i)).decode()
                return f"data:{CONTENT_TYPES[fmt]};base64,{data}"
            return f"{self.url}/cdn/{task.id}/{i}.{fmt}"

        return json_reply(200, {
            "images": [
                {"url": url(i), "width": width, "height": height, "content_type": CONTENT_TYPES[fmt]}
                for i in range(count)
            ],
            "timings": {"inference": round(max(task.provider_times_ms()[2] - task.provider_times_ms()[1], 1) / 1000, 3)},
            "seed": seed,
            "has_nsfw_concepts": [self.nsfw] * count,
            "prompt": task.body.get("prompt", ""),
        })

    def cancel(self, rec: Recorded):
        task = self._task(rec)
        if task is None:
            return json_reply(404, {"detail": "Request not found"})
        with self.lock:
            if task.peek_done():
                return json_reply(400, {"status": "ALREADY_COMPLETED"})
            task.cancelled = True
        return json_reply(202, {"status": "CANCELLATION_REQUESTED"})

    def image(self, rec: Recorded):
        match = re.match(r"^/cdn/([^/]+)/(\d+)\.(\w+)$", rec.path)
        with self.lock:
            task = self.book.tasks.get(match.group(1)) if match else None
        if task is None:
            return json_reply(404, {"detail": "not found"})
        width, height = self.size_of(task.body)
        fmt = match.group(3)
        return 200, {"Content-Type": CONTENT_TYPES[fmt]}, make_image(fmt, width, height, int(match.group(2)), self.variant)
