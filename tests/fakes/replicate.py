"""Replicate's predictions API for `prunaai/z-image-turbo-lora`, as its pages document it.

Routes: GET /v1/models/prunaai/z-image-turbo-lora ("model"), POST /v1/predictions and
POST /v1/models/prunaai/z-image-turbo-lora/predictions ("submit"), GET /v1/predictions/{id}
("get"), POST /v1/predictions/{id}/cancel ("cancel"), GET /delivery/{id}/out-0.{ext} ("image").
Inputs are checked against the version's input schema (unknown fields, ranges, lora_scales
matching lora_weights) and refused with 422 like Replicate's "Input validation failed".
`latest_version` is what the model route reports; set it to simulate a new model version:
a prediction that ran any version but `VERSION` answers with a different picture (as a changed
model would). Timestamps and `metrics.predict_time` come from the task book's provider times
(`book.reported_times` fixes them for protocol tests). `outputs_gone = True` makes output files
answer 404, as after Replicate's one-hour retention.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

from tests.fakes.images import CONTENT_TYPES, make_image
from tests.fakes.server import FakeServer, Recorded, json_reply
from tests.fakes.tasks import TaskBook

MODEL = "prunaai/z-image-turbo-lora"
#: a version id seen on the model's versions page
VERSION = "f1f17ca4cbb1da4c85000c0778bb8c5617bdf4db01d8dca26626efb1cdfd4d93"
INPUTS = frozenset({"prompt", "width", "height", "num_inference_steps", "guidance_scale", "seed", "lora_weights",
                    "lora_scales", "output_format", "output_quality"})
_PREDICTION = re.compile(r"^/v1/predictions/([^/]+)$")
_CANCEL = re.compile(r"^/v1/predictions/([^/]+)/cancel$")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


class ReplicateFake(FakeServer):
    protocol = "replicate"
    auth_scheme = "Bearer"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.book = TaskBook(self.protocol)
        self.latest_version = VERSION
        self.versions = {VERSION}
        self.outputs_gone = False
        #: the version each prediction ran, by id
        self.ran: dict[str, str] = {}

    @property
    def tasks(self):
        return self.book.tasks

    def route_of(self, method: str, path: str) -> str:
        if method == "GET" and path == f"/v1/models/{MODEL}":
            return "model"
        if method == "POST" and path in ("/v1/predictions", f"/v1/models/{MODEL}/predictions"):
            return "submit"
        if method == "GET" and _PREDICTION.match(path):
            return "get"
        if method == "POST" and _CANCEL.match(path):
            return "cancel"
        if method == "GET" and path.startswith("/delivery/"):
            return "image"
        return "unknown"

    def auth_error(self, missing: bool) -> tuple[int, dict[str, str], bytes]:
        return json_reply(401, {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                                "status": 401})

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.route == "model":
            with self.lock:
                self.versions.add(self.latest_version)
                latest = self.latest_version
            return json_reply(200, {"url": f"https://replicate.com/{MODEL}", "owner": "prunaai",
                                    "name": "z-image-turbo-lora", "visibility": "public",
                                    "latest_version": {"id": latest, "created_at": _iso(time.time())}})
        if rec.route == "submit":
            return self.submit(rec)
        if rec.route == "get":
            return self.get(_PREDICTION.match(rec.path).group(1))
        if rec.route == "cancel":
            return self.cancel(_CANCEL.match(rec.path).group(1))
        return self.image(rec)

    # -- create ------------------------------------------------------------------------------

    def invalid(self, inputs: dict[str, Any]) -> list[dict[str, str]]:
        problems: list[dict[str, str]] = []

        def bad(field: str, description: str) -> None:
            problems.append({"type": "invalid", "field": f"input.{field}", "description": description})

        for name in sorted(set(inputs) - INPUTS):
            bad(name, "Additional property is not allowed")
        if not isinstance(inputs.get("prompt"), str) or not inputs["prompt"]:
            bad("prompt", "prompt is required")
        for name, lo, hi in (("width", 64, 1440), ("height", 64, 1440), ("num_inference_steps", 1, 50),
                             ("guidance_scale", 0, 20), ("output_quality", 0, 100)):
            if name in inputs and not (isinstance(inputs[name], (int, float)) and lo <= inputs[name] <= hi):
                bad(name, f"Must be between {lo} and {hi}")
        if inputs.get("output_format", "jpg") not in ("webp", "jpg", "png"):
            bad("output_format", "output_format must be one of the following: \"webp\", \"jpg\", \"png\"")
        weights, scales = inputs.get("lora_weights"), inputs.get("lora_scales")
        if weights is not None and not (isinstance(weights, list) and all(isinstance(w, str) for w in weights)):
            bad("lora_weights", "Invalid type. Expected: array of strings")
        if scales is not None and (not isinstance(weights, list) or len(scales) != len(weights)):
            bad("lora_scales", "Must match the number of lora_weights")
        return problems

    def submit(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        body = rec.json if isinstance(rec.json, dict) else {}
        inputs = body.get("input")
        if rec.path == "/v1/predictions":
            version = str(body.get("version", "")).rsplit(":", 1)[-1]
            with self.lock:
                known = version in self.versions
            if not known:
                return json_reply(422, {"title": "Invalid version or not permitted", "status": 422,
                                        "detail": "The specified version does not exist (or perhaps you don't have permission to use it?)"})
        else:
            with self.lock:
                version = self.latest_version
        if not isinstance(inputs, dict):
            return json_reply(422, {"title": "Input validation failed", "status": 422, "detail": "- input: is required"})
        problems = self.invalid(inputs)
        if problems:
            detail = "\n".join(f"- {p['field']}: {p['description']}" for p in problems)
            return json_reply(422, {"title": "Input validation failed", "status": 422, "detail": detail,
                                    "invalid_fields": problems})
        with self.lock:
            task = self.book.create(inputs, self.latency)
            self.ran[task.id] = version
        return json_reply(201, self.prediction(task, "starting"))

    # -- read --------------------------------------------------------------------------------

    def prediction(self, task, status: str) -> dict[str, Any]:
        base = f"{self.url}/v1/predictions/{task.id}"
        submit, execute, complete = task.provider_times_ms()
        out: dict[str, Any] = {
            "id": task.id, "model": MODEL, "version": self.ran.get(task.id, self.latest_version),
            "input": task.body, "logs": "", "output": None, "data_removed": False, "error": None,
            "status": status, "source": "api", "created_at": _iso(submit / 1000), "started_at": None,
            "completed_at": None, "metrics": {},
            "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"https://replicate.com/p/{task.id}"},
        }
        if status != "starting":
            out["started_at"] = _iso(execute / 1000)
        if status in ("succeeded", "failed", "canceled"):
            out["completed_at"] = _iso(complete / 1000)
            out["metrics"] = {"predict_time": (complete - execute) / 1000, "total_time": (complete - submit) / 1000}
        return out

    def get(self, prediction_id: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            task = self.book.tasks.get(prediction_id)
            if task is None:
                return json_reply(404, {"title": "Not found", "detail": "Not found.", "status": 404})
            state = task.state()
        status = {"queued": "starting", "running": "processing", "done": "succeeded", "failed": "failed",
                  "filtered": "failed", "cancelled": "canceled"}[state]
        body = self.prediction(task, status)
        if state == "done":
            ext = task.body.get("output_format", "jpg")
            body["output"] = f"{self.url}/delivery/{task.id}/out-0.{ext}"
        elif state == "failed":
            body["error"] = self.book.fail_reason
        elif state == "filtered":
            body["error"] = "NSFW content detected. Try running it again, or try a different prompt."
        return json_reply(200, body)

    def cancel(self, prediction_id: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            task = self.book.tasks.get(prediction_id)
            if task is None:
                return json_reply(404, {"title": "Not found", "detail": "Not found.", "status": 404})
            task.cancelled = True
        return json_reply(200, self.prediction(task, "canceled"))

    def image(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        match = re.match(r"^/delivery/([^/]+)/out-0\.(\w+)$", rec.path)
        with self.lock:
            task = self.book.tasks.get(match.group(1)) if match else None
            gone = self.outputs_gone
            variant = 0 if task is None or self.ran.get(task.id) == VERSION else 1
        if task is None or gone:
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        fmt = "jpeg" if match.group(2) == "jpg" else match.group(2)
        data = make_image(fmt, task.body.get("width", 1024), task.body.get("height", 1024), task.body.get("seed", 0),
                          variant)
        return 200, {"Content-Type": CONTENT_TYPES[fmt]}, data
