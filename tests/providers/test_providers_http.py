"""The shared HTTP layer: Retry-After parsing, backoff bounds, error mapping, what is and
is not retried, transport failures."""

from __future__ import annotations

import email.utils
import socket
import time
import traceback

import httpx
import pytest

from lorascope.harness.errors import AuthError, BadResponse, ContentFiltered, ProviderUnavailable, RateLimited, RejectedRequest
from lorascope.harness.providers._http import ProviderHttp, RetryPolicy, error_for, parse_retry_after
from tests.fakes import TEST_KEY as KEY, Reply


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(42, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_full_jitter_backoff_is_bounded():
    policy = RetryPolicy(base_s=0.5, cap_s=4.0)
    assert policy.backoff(0, lambda: 1.0) == 0.5
    assert policy.backoff(3, lambda: 1.0) == 4.0
    assert policy.backoff(10, lambda: 1.0) == 4.0  # capped
    assert policy.backoff(5, lambda: 0.0) == 0.0


def _response(status: int, body=None, headers=None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("POST", "https://x.test/v1"))


def test_error_mapping():
    assert isinstance(error_for("p", "P_KEY", _response(401, {"message": "bad key"})), AuthError)
    limited = error_for("p", "P_KEY", _response(429, {"message": "slow down"}, {"Retry-After": "9"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 9
    assert isinstance(error_for("p", "P_KEY", _response(503, {"detail": "busy"})), ProviderUnavailable)
    rejected = error_for("p", "P_KEY", _response(422, {"detail": [{"loc": ["body", "seed"], "msg": "too big"}]}))
    assert type(rejected) is RejectedRequest and "seed: too big" in rejected.message
    filtered = error_for("p", "P_KEY", _response(422, {"detail": "flagged", "error_type": "content_policy_violation"}))
    assert isinstance(filtered, ContentFiltered)


def test_error_messages_are_redacted():
    error = error_for("p", "P_KEY", _response(401, {"message": f"invalid key Bearer {KEY} for account"}))
    assert KEY not in str(error) and "P_KEY" in str(error)


@pytest.fixture
def http(clock):
    made = []

    def make(**policy):
        client = ProviderHttp("fake", env_var="FAKE_KEY", auth_header=("Authorization", f"Bearer {KEY}"),
                              policy=RetryPolicy(**policy), sleep=clock.sleep, clock=clock, rng=lambda: 1.0)
        made.append(client)
        return client

    return make


async def test_503_with_http_date_retry_after_is_honoured(fake_factory, http, clock):
    fake = fake_factory("novita")
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    fake.script("result", Reply(503, {"message": "maintenance"}, {"Retry-After": date}))
    client = http()
    with pytest.raises(RejectedRequest):  # after the retry, the fake says: unknown task (404)
        await client.request("GET", f"{fake.url}/v3/async/task-result", params={"task_id": "nope"})
    assert len(clock.sleeps) == 1 and 3.5 <= clock.sleeps[0] <= 5.5
    assert len(fake.hits("result")) == 2
    await client.aclose()


async def test_budget_stops_retries_before_max_retries(fake_factory, http, clock):
    fake = fake_factory("novita")
    fake.script("result", *[Reply(500, {"message": "boom"})] * 10)
    client = http(max_retries=10, budget_s=3.0, base_s=1.0, cap_s=8.0)
    with pytest.raises(ProviderUnavailable):
        await client.request("GET", f"{fake.url}/v3/async/task-result")
    # waits 1 + 2 = 3 s fit the budget; the next (4 s) would not
    assert clock.sleeps == [1.0, 2.0]
    assert len(fake.hits("result")) == 3
    await client.aclose()


async def test_connection_refused_is_retried_even_for_post(http, clock):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens here
    client = http(max_retries=2)
    with pytest.raises(ProviderUnavailable, match="ConnectError"):
        await client.request("POST", f"http://127.0.0.1:{port}/v1/images/generations", json_body={"a": 1})
    assert client.calls[-1].attempts == 3 and len(clock.sleeps) == 2
    await client.aclose()


async def test_get_read_timeout_is_retried(fake_factory, clock):
    fake = fake_factory("novita")
    fake.script("result", Reply(200, {"task": {}}, delay_s=0.6))
    client = ProviderHttp("fake", env_var="FAKE_KEY", auth_header=("Authorization", f"Bearer {KEY}"), read_timeout_s=0.2,
                          policy=RetryPolicy(max_retries=1), sleep=clock.sleep, clock=clock)
    with pytest.raises(RejectedRequest):  # retried; the second answer is the fake's own 404
        await client.request("GET", f"{fake.url}/v3/async/task-result", params={"task_id": "x"})
    assert len(fake.hits("result")) == 2
    await client.aclose()


async def test_auth_header_only_when_asked(fake_factory, http):
    fake = fake_factory("novita")
    client = http()
    with pytest.raises(RejectedRequest):
        await client.request("GET", f"{fake.url}/cdn/none/0.png?token=5", auth=False)
    with pytest.raises(RejectedRequest):
        await client.request("GET", f"{fake.url}/v3/async/task-result", params={"task_id": "x"})
    cdn, api = fake.requests
    assert "authorization" not in cdn.headers and api.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(client)
    await client.aclose()


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_transport_errors_do_not_chain_the_httpx_request_that_holds_the_key(http, method):
    # httpx exceptions carry the Request, and its headers carry the key: a ProviderError must
    # not keep one in __context__ (a logger or error reporter walking the chain would find it)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = http(max_retries=0)
    with pytest.raises(ProviderUnavailable) as info:
        await client.request(method, f"http://user:pw-secret@127.0.0.1:{port}/v1/x?token=t-secret-1", json_body={})
    (only,) = _chain(info.value)
    assert not isinstance(only, httpx.HTTPError)
    text = "".join(traceback.format_exception_only(info.value)) + repr(vars(info.value))
    for leaked in (KEY, "pw-secret", "t-secret-1"):
        assert leaked not in text
    await client.aclose()


async def test_malformed_json_error_does_not_chain_the_body(fake_factory, http):
    fake = fake_factory("novita")
    fake.script("result", Reply(200, f'{{"echo": "Bearer {KEY}", '))
    client = http()
    response = await client.request("GET", f"{fake.url}/v3/async/task-result")
    with pytest.raises(BadResponse, match="malformed JSON") as info:
        client.decode_json(response)
    assert _chain(info.value) == [info.value]  # the JSONDecodeError held the whole body
    assert KEY not in str(info.value)
    await client.aclose()


async def test_gateway_errors_are_retried_for_reads(fake_factory, http, clock):
    fake = fake_factory("novita")
    fake.script("result", Reply(502, {"message": "bad gateway"}), Reply(504, {"message": "gateway timeout"}))
    client = http()
    with pytest.raises(RejectedRequest):  # after two retries, the fake's own 404 for an unknown task
        await client.request("GET", f"{fake.url}/v3/async/task-result", params={"task_id": "x"})
    assert len(fake.hits("result")) == 3 and len(clock.sleeps) == 2
    await client.aclose()
