"""WaveSpeedAI's v3 prediction API for `wavespeed-ai/z-image/turbo-lora`, as its pages document it.

Routes: POST /api/v3/wavespeed-ai/z-image/turbo-lora ("submit"), GET
/api/v3/predictions/{id}/result ("result"), GET /cdn/{id}/0.{ext} ("image"). Every answer is
the `{code, message, data}` envelope; bodies are checked against the model page's input schema
(known fields, size sides 256..1536, at most 3 LoRAs, output_format) and refused with 400.
`timings.inference` comes from the task book's provider times (`book.reported_times` fixes it
for protocol tests). `outputs_gone = True` makes output files answer 404 (an expired output URL).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from tests.fakes.images import CONTENT_TYPES, make_image
from tests.fakes.server import FakeServer, Recorded, json_reply
from tests.fakes.tasks import TaskBook

MODEL = "wavespeed-ai/z-image/turbo-lora"
FIELDS = frozenset({"prompt", "loras", "size", "seed", "output_format", "enable_sync_mode"})
_SIZE = re.compile(r"^(\d+)\*(\d+)$")
_RESULT = re.compile(r"^/api/v3/predictions/([^/]+)/result$")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


class WavespeedFake(FakeServer):
    protocol = "wavespeed"
    auth_scheme = "Bearer"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.book = TaskBook(self.protocol)
        self.outputs_gone = False

    @property
    def tasks(self):
        return self.book.tasks

    def route_of(self, method: str, path: str) -> str:
        if method == "POST" and path == f"/api/v3/{MODEL}":
            return "submit"
        if method == "GET" and _RESULT.match(path):
            return "result"
        if method == "GET" and path.startswith("/cdn/"):
            return "image"
        return "unknown"

    def auth_error(self, missing: bool) -> tuple[int, dict[str, str], bytes]:
        return json_reply(401, {"code": 401, "message": "Unauthorized: invalid authentication", "data": None})

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.route == "submit":
            return self.submit(rec)
        if rec.route == "result":
            return self.result(_RESULT.match(rec.path).group(1))
        return self.image(rec)

    def problems(self, body: dict[str, Any]) -> list[str]:
        problems = [f"unknown field {name!r}" for name in sorted(set(body) - FIELDS)]
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            problems.append("prompt is required")
        match = _SIZE.match(str(body.get("size", "1024*1024")))
        if not match or not all(256 <= int(v) <= 1536 for v in match.groups()):
            problems.append("size must be 'width*height' with sides in [256, 1536]")
        seed = body.get("seed", -1)
        if not isinstance(seed, int) or seed < -1:
            problems.append("seed must be an integer >= -1")
        if body.get("output_format", "jpeg") not in ("jpeg", "png", "webp"):
            problems.append("output_format must be one of jpeg, png, webp")
        loras = body.get("loras", [])
        if not isinstance(loras, list) or len(loras) > 3:
            problems.append("loras: at most 3")
        else:
            for lora in loras:
                if not isinstance(lora, dict) or not isinstance(lora.get("path"), str) or set(lora) - {"path", "scale"}:
                    problems.append("loras[]: {path, scale} expected")
        return problems

    def submit(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        body = rec.json if isinstance(rec.json, dict) else {}
        problems = self.problems(body)
        if problems:
            return json_reply(400, {"code": 400, "message": "; ".join(problems), "data": None})
        with self.lock:
            task = self.book.create(body, self.latency)
        return json_reply(200, {"code": 200, "message": "success", "data": self.data(task, "created")})

    def data(self, task, status: str) -> dict[str, Any]:
        return {
            "id": task.id, "model": MODEL, "outputs": [], "urls": {"get": f"{self.url}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [], "status": status, "created_at": _iso(task.created), "error": "",
            "executionTime": 0, "timings": {"inference": 0},
        }

    def result(self, prediction_id: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            task = self.book.tasks.get(prediction_id)
            if task is None:
                return json_reply(404, {"code": 404, "message": f"prediction {prediction_id} not found", "data": None})
            state = task.state()
        status = {"queued": "created", "running": "processing", "done": "completed", "failed": "failed",
                  "filtered": "failed", "cancelled": "failed"}[state]
        data = self.data(task, status)
        if state == "done":
            fmt = task.body.get("output_format", "jpeg")
            submit, execute, complete = task.provider_times_ms()
            data.update(outputs=[f"{self.url}/cdn/{task.id}/0.{fmt}"], has_nsfw_contents=[False],
                        executionTime=complete - submit, timings={"inference": complete - execute})
        elif state == "failed":
            data["error"] = self.book.fail_reason
        elif state == "filtered":
            data["error"] = "The generated content was flagged as NSFW content"
        return json_reply(200, {"code": 200, "message": "success", "data": data})

    def image(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        match = re.match(r"^/cdn/([^/]+)/0\.(\w+)$", rec.path)
        with self.lock:
            task = self.book.tasks.get(match.group(1)) if match else None
            gone = self.outputs_gone
        if task is None or gone:
            return 404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>"
        fmt = match.group(2)
        width, height = (int(v) for v in str(task.body.get("size", "1024*1024")).split("*"))
        return 200, {"Content-Type": CONTENT_TYPES[fmt]}, make_image(fmt, width, height, task.body.get("seed", 0))
