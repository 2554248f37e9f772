"""The loopback HTTP server every provider fake builds on: a real `ThreadingHTTPServer` on
127.0.0.1, a request recorder (in memory and, optionally, an fsync'd JSONL file that
survives the client's death), scripted replies per route, and auth checking.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MALFORMED = b'{"task_id": "oops", '  # truncated JSON, for "malformed JSON" tests


@dataclass
class Reply:
    """A scripted answer. `body`: dict/list -> JSON, bytes/str -> sent as is."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    def encode(self) -> tuple[int, dict[str, str], bytes]:
        headers = dict(self.headers)
        if isinstance(self.body, (dict, list)):
            data = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(self.body, str):
            data = self.body.encode()
            headers.setdefault("Content-Type", "application/json")
        else:
            data = self.body or b""
        return self.status, headers, data


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return Reply(status, body, headers or {}).encode()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: bytes
    route: str
    t: float

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": self.json,
            "route": self.route,
            "t": self.t,
        }


class FakeServer:
    """Base fake. Subclasses set `protocol`, `auth_scheme`, and implement `route_of` and
    `answer`. Thread-safe: handlers run on server threads, tests read from the main one."""

    protocol = "base"
    auth_scheme = "Bearer"

    def __init__(
        self,
        *,
        key: str = "test-key",
        latency: float = 0.0,
        record: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.key = key
        self.latency = latency
        self.record_path = os.fspath(record) if record else None
        self.requests: list[Recorded] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.lock = threading.RLock()
        self.connection_errors: list[str] = []
        self._httpd = _QuietServer((host, port), _handler_for(self), self)
        self._thread: threading.Thread | None = None
        self._log_file = open(self.record_path, "a", encoding="utf-8") if self.record_path else None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{self.protocol}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and inspection -------------------------------------------------------------

    def script(self, route: str, *replies: Reply) -> None:
        """The next hits on `route` get these replies, in order; then normal behaviour."""
        with self.lock:
            self._scripts[route].extend(replies)

    def hits(self, route: str | None = None, method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [
                r for r in self.requests
                if (route is None or r.route == route) and (method is None or r.method == method)
            ]

    # -- protocol hooks ----------------------------------------------------------------------

    def route_of(self, method: str, path: str) -> str:
        raise NotImplementedError

    def needs_auth(self, route: str) -> bool:
        return route not in ("image", "unknown")

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def auth_error(self, missing: bool) -> tuple[int, dict[str, str], bytes]:
        if missing:
            return json_reply(401, {"message": "missing Authorization header"})
        return json_reply(403, {"message": "invalid API key"})

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        route = self.route_of(method, parts.path)
        rec = Recorded(method, parts.path, query, headers, parsed, body, route, time.time())
        with self.lock:
            self.requests.append(rec)
            if self._log_file:
                self._log_file.write(json.dumps(rec.to_json()) + "\n")
                self._log_file.flush()
                os.fsync(self._log_file.fileno())
            scripted = self._scripts[route].popleft() if self._scripts[route] else None
        if scripted is not None:
            if scripted.delay_s:
                time.sleep(scripted.delay_s)
            return scripted.encode()
        if self.needs_auth(route):
            given = headers.get("authorization")
            if given != f"{self.auth_scheme} {self.key}":
                return self.auth_error(missing=given is None)
        if route == "unknown":
            return json_reply(404, {"message": f"no route {method} {parts.path}"})
        if body and parsed is None:
            # a client killed mid-send leaves a truncated body: a real API rejects it unbilled
            return json_reply(400, {"message": "malformed JSON body"})
        return self.answer(rec)


class _QuietServer(ThreadingHTTPServer):
    """A real provider queues many connections and does not print a traceback when a client
    hangs up mid-reply (a cancelled poll, a killed process): neither does the fake. The
    default listen backlog of 5 resets connections under a concurrency-32 benchmark."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeServer) -> None:
        super().__init__(address, handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        self.fake.connection_errors.append(f"{client_address}: {exc!r}")


def _handler_for(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, out_headers, data = fake.handle(self.command, self.path, headers, body)
            except Exception as exc:  # a fake bug must show up as a 500, not a hang
                status, out_headers, data = json_reply(500, {"message": f"fake crashed: {exc!r}"})
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
