"""Novita's (and HighwayAPI's) async task protocol, from provider-docs 000/001/002.

Routes: POST /v3/async/z-image-turbo-lora, POST /v3/async/z-image-turbo ("submit"),
GET /v3/async/task-result?task_id= ("result"), GET /cdn/<task>/<n>.<ext>?token= ("image").
Signed image URLs: every task-result answer mints fresh tokens; the first `expired_tokens`
tokens minted answer 403 like an expired S3 URL.
"""

from __future__ import annotations

import base64
import random
import re
from typing import Any

from tests.fakes.images import CONTENT_TYPES, make_image
from tests.fakes.server import FakeServer, Recorded, json_reply
from tests.fakes.tasks import TaskBook

QUEUED, PROCESSING, SUCCEED, FAILED = (
    "TASK_STATUS_QUEUED",
    "TASK_STATUS_PROCESSING",
    "TASK_STATUS_SUCCEED",
    "TASK_STATUS_FAILED",
)
_SIZE = re.compile(r"^(\d+)\*(\d+)$")


class NovitaFake(FakeServer):
    protocol = "novita"
    auth_scheme = "Bearer"
    endpoints = ("/v3/async/z-image-turbo-lora", "/v3/async/z-image-turbo")
    #: body fields each endpoint's page documents (000, 001); anything else is refused, so a
    #: provider that strays from the documented protocol fails its tests
    fields = {
        "/v3/async/z-image-turbo-lora": frozenset({"prompt", "size", "seed", "loras"}),
        "/v3/async/z-image-turbo": frozenset({"prompt", "size", "seed", "enable_base64_output"}),
    }
    default_format = "png"
    #: side range per endpoint: only the base page (001) states one
    size_ranges: dict[str, tuple[int, int]] = {"/v3/async/z-image-turbo": (256, 1536)}

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.book = TaskBook(self.protocol)
        self.expired_tokens = 0
        self._tokens_minted = 0
        #: where base64 output goes in an image entry
        self.base64_field = "image_url"
        #: image URLs point at /redirect/..., which answers 302 to the /cdn/ object
        self.redirect_images = False
        #: a different picture for the same request (0 = the usual one): a provider that changed
        self.variant = 0

    # -- conveniences for tests ------------------------------------------------------------

    @property
    def tasks(self):
        return self.book.tasks

    def route_of(self, method: str, path: str) -> str:
        if method == "POST" and path in self.endpoints:
            return "submit"
        if method == "GET" and path == "/v3/async/task-result":
            return "result"
        if method == "GET" and path.startswith("/cdn/"):
            return "image"
        if method == "GET" and path.startswith("/redirect/"):
            return "redirect"
        return "unknown"

    def needs_auth(self, route: str) -> bool:
        return route not in ("image", "redirect", "unknown")

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.route == "submit":
            return self.submit(rec)
        if rec.route == "result":
            return self.result(rec)
        if rec.route == "redirect":
            query = "&".join(f"{k}={v}" for k, v in rec.query.items())
            return 302, {"Location": f"{self.url}/cdn/{rec.path[len('/redirect/'):]}?{query}"}, b""
        return self.image(rec)

    def problems(self, body: dict[str, Any], path: str) -> list[str]:
        problems = [f"unknown field {name!r}" for name in sorted(set(body) - self.fields[path])]
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            problems.append("prompt is required")
        match = _SIZE.match(str(body.get("size", "1024*1024")))
        if not match:
            problems.append("size must be 'width*height'")
        elif path in self.size_ranges:
            lo, hi = self.size_ranges[path]
            if not all(lo <= int(v) <= hi for v in match.groups()):
                problems.append(f"size sides must be in [{lo}, {hi}]")
        seed = body.get("seed", -1)
        if not isinstance(seed, int) or not -1 <= seed <= 2147483647:
            problems.append("seed out of range")
        loras = body.get("loras", [])
        if len(loras) > 3:
            problems.append("at most 3 loras")
        for lora in loras:
            if not 0 <= lora.get("scale", 1) <= 4:
                problems.append("lora scale out of range")
        return problems

    def submit(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if not isinstance(rec.json, dict):
            return json_reply(400, {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "body is not JSON"})
        problems = self.problems(rec.json, rec.path)
        if problems:
            return json_reply(400, {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "; ".join(problems)})
        with self.lock:
            task = self.book.create(rec.json, self.latency)
        return json_reply(200, {"task_id": task.id})

    def image_format(self, task_body: dict[str, Any]) -> str:
        return self.default_format

    def result(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        task_id = rec.query.get("task_id", "")
        with self.lock:
            task = self.book.tasks.get(task_id)
            if task is None:
                return json_reply(404, {"code": 404, "reason": "TASK_NOT_FOUND", "message": f"task {task_id} not found"})
            state = task.state()
        info: dict[str, Any] = {"task_id": task.id, "task_type": "Z_IMAGE_TURBO", "reason": "", "eta": 0}
        body: dict[str, Any] = {"task": info, "images": [], "videos": [], "audios": [], "extra": {}}
        if state in ("queued", "running"):
            info.update(status=QUEUED if state == "queued" else PROCESSING, progress_percent=0 if state == "queued" else 50, eta=2)
        elif state in ("failed", "filtered", "cancelled"):
            reason = {"failed": self.book.fail_reason, "filtered": "NSFW content detected by the safety checker",
                      "cancelled": "task cancelled"}[state]
            info.update(status=FAILED, reason=reason, progress_percent=0)
        else:
            info.update(status=SUCCEED, progress_percent=100)
            body["images"] = [self.image_entry(task)]
            seed = task.body.get("seed", -1)
            submit, execute, complete = task.provider_times_ms()
            body["extra"] = {
                "seed": str(seed if seed != -1 else random.Random(task.id).randint(1, 2**31 - 1)),
                "debug_info": {
                    "request_info": "",
                    "submit_time_ms": str(submit),
                    "execute_time_ms": str(execute),
                    "complete_time_ms": str(complete),
                },
            }
        return json_reply(200, body)

    def image_entry(self, task) -> dict[str, Any]:
        fmt = self.image_format(task.body)
        if task.body.get("enable_base64_output"):
            data = base64.b64encode(self._image_bytes(task, fmt)).decode()
            entry = {"image_url": "", "image_url_ttl": 0, "image_type": fmt}
            entry[self.base64_field] = data
            return entry
        with self.lock:
            self._tokens_minted += 1
            token = self._tokens_minted
        return {
            "image_url": f"{self.url}/{'redirect' if self.redirect_images else 'cdn'}/{task.id}/0.{fmt}?token={token}",
            "image_url_ttl": 3600,
            "image_type": fmt,
        }

    def _image_bytes(self, task, fmt: str) -> bytes:
        width, height = (int(v) for v in str(task.body.get("size", "64*64")).split("*"))
        seed = task.body.get("seed", 0)
        return make_image(fmt, width, height, seed, self.variant)

    def image(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        match = re.match(r"^/cdn/([^/]+)/(\d+)\.(\w+)$", rec.path)
        token = int(rec.query.get("token", "0") or 0)
        if not match:
            return json_reply(404, {"message": "no such object"})
        if token <= self.expired_tokens:
            return 403, {"Content-Type": "application/xml"}, (
                b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            )
        with self.lock:
            task = self.book.tasks.get(match.group(1))
        if task is None:
            return json_reply(404, {"message": "no such object"})
        fmt = match.group(3)
        return 200, {"Content-Type": CONTENT_TYPES[fmt]}, self._image_bytes(task, fmt)


class HighwayFake(NovitaFake):
    """HighwayAPI: Novita's protocol, LoRA endpoint only, `output_format` (default webp)."""

    protocol = "highway"
    endpoints = ("/v3/async/z-image-turbo-lora",)
    fields = {
        "/v3/async/z-image-turbo-lora": frozenset({"prompt", "size", "seed", "loras", "mask", "strength", "image_url",
                                                   "output_format", "enable_base64_output"}),
    }
    default_format = "webp"
    size_ranges: dict[str, tuple[int, int]] = {}  # 002 states no side range

    def problems(self, body: dict[str, Any], path: str) -> list[str]:
        problems = super().problems(body, path)
        if body.get("output_format", "webp") not in ("jpeg", "png", "webp"):
            problems.append("output_format must be jpeg, png or webp")
        if ("mask" in body or "strength" in body) and "image_url" not in body:
            problems.append("mask/strength must be used with image_url")
        for name in ("image_url", "mask"):  # 002: "Reference image URL", "Mask image URL"
            if name in body and not (isinstance(body[name], str) and body[name].startswith(("https://", "http://"))):
                problems.append(f"{name} must be an image URL")
        return problems

    def image_format(self, task_body: dict[str, Any]) -> str:
        return task_body.get("output_format", "webp")
