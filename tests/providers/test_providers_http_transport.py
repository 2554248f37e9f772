"""How the client sorts a connection that fails *after* the request was written (the case an
aiohttp-backed client most easily gets wrong: httpx-aiohttp maps it to "connect timeout",
which would make a paid POST look unsent and be paid for twice)."""

from __future__ import annotations

import socket
import threading

import pytest

from lorascope.harness.errors import ProviderUnavailable
from lorascope.harness.providers._http import ProviderHttp, RetryPolicy


class HangUp:
    """A loopback server that reads each request's head and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hang_up():
    server = HangUp()
    yield server
    server.close()


async def _noop_sleep(seconds: float) -> None:
    return None


@pytest.mark.parametrize("method, sends", [("POST", 1), ("GET", 3)])  # GET: 1 + max_retries at least
async def test_a_connection_dropped_after_sending_is_never_resent_for_a_post(hang_up, method, sends):
    client = ProviderHttp("fake", env_var="FAKE_KEY", auth_header=("Authorization", "Bearer sk-test-0123456789"),
                          policy=RetryPolicy(max_retries=2), sleep=_noop_sleep, rng=lambda: 0.0)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await client.request(method, f"http://127.0.0.1:{hang_up.port}/v1/x", json_body={"a": 1})
    finally:
        await client.aclose()
    # a paid POST exactly once; a read is retried (aiohttp itself may repeat a dropped
    # idempotent request once per attempt, so a GET is counted as "at least")
    assert len(hang_up.requests) == sends if method == "POST" else len(hang_up.requests) >= sends
    assert all(line.startswith(method.encode()) for line in hang_up.requests)
    if method == "POST":
        assert "may have accepted it" in info.value.message and "not resent" in info.value.message
    assert "sk-test-0123456789" not in str(info.value) and info.value.__context__ is None
