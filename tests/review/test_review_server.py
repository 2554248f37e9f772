"""The review server over HTTP (httpx against a real uvicorn process on loopback): votes are
committed before the answer and survive a SIGKILL, retries are stored once, and the safety
rules hold (foreign Origin, token off loopback, images by hash only, Host header)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3

import httpx
import pytest

from review_helpers import rows, start_server


@pytest.fixture
def server(review_run):
    srv = start_server(review_run)
    yield srv
    srv.stop()


def _vote(base: str, rater: str, choice: str, vote_id: str, *, exclude=(), headers=None, token=None):
    params = {"rater": rater, "exclude": list(exclude)}
    if token:
        params["token"] = token
    pair = httpx.get(f"{base}/api/next", params=params).json()["pair"]
    body = {"vote_id": vote_id, "rater": rater, "slot": pair["slot"], "left": pair["left"]["sha"],
            "right": pair["right"]["sha"], "choice": choice}
    r = httpx.post(f"{base}/api/vote", json=body, headers=headers or {}, params={"token": token} if token else {})
    return pair, body, r


def test_a_vote_is_in_run_db_when_acknowledged_and_survives_a_kill(review_run, server):
    pair, body, r = _vote(server.base, "ann", "left", "v-1")
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["stored"] is True and ack["key"] == pair["key"]
    assert {ack["left_label"], ack["right_label"]} <= {"no LoRA", "scale 0.5", "scale 1"}
    text = json.dumps(pair)  # the scales are not sent before the vote, not even inside a cell id
    assert "scale" not in text and "LoRA" not in text and "@" not in text and "baseline" not in text
    server.stop(signal.SIGKILL)
    (row,) = rows(review_run, "SELECT vote_id, rater, choice, left_sha256, right_sha256 FROM ratings")
    assert row == ("v-1", "ann", "left", body["left"], body["right"])
    again = start_server(review_run, port=server.port)
    try:
        seen = httpx.get(f"{again.base}/api/next", params={"rater": "ann"}).json()
        assert seen["pair"]["key"] != pair["key"]  # the judged pair is not shown again
        assert sum(p["votes"] for p in seen["progress"]) == 1
    finally:
        again.stop()


def test_a_retried_vote_is_stored_once(review_run, server):
    _, body, first = _vote(server.base, "ann", "right", "v-same")
    second = httpx.post(f"{server.base}/api/vote", json={**body, "choice": "left"})
    assert first.json()["stored"] is True and second.status_code == 200 and second.json()["stored"] is False
    assert rows(review_run, "SELECT vote_id, choice FROM ratings") == [("v-same", "right")]


def test_two_raters_are_kept_apart(review_run, server):
    for i in range(3):
        _vote(server.base, "ann", "left", f"ann-{i}")
    bob = httpx.get(f"{server.base}/api/next", params={"rater": "bob"}).json()
    assert sum(p["votes"] for p in bob["progress"]) == 0
    ann = httpx.get(f"{server.base}/api/next", params={"rater": "ann"}).json()
    assert sum(p["votes"] for p in ann["progress"]) == 3
    _vote(server.base, "bob", "tie", "bob-0")
    assert rows(review_run, "SELECT rater, COUNT(*) FROM ratings GROUP BY rater ORDER BY rater") == [("ann", 3), ("bob", 1)]


def test_a_foreign_origin_cannot_vote(review_run, server):
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://localhost:{server.port + 1}"}, {"Sec-Fetch-Site": "cross-site"}):
        _, _, r = _vote(server.base, "ann", "left", "v-evil", headers=headers)
        assert r.status_code == 403, headers
    _, body, _ = _vote(server.base, "ann", "left", "v-evil-2", headers={"Origin": "http://evil.example"})
    form = httpx.post(f"{server.base}/api/vote", content="vote_id=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert rows(review_run) == []
    _, _, ok = _vote(server.base, "ann", "left", "v-own", headers={"Origin": server.base})
    assert ok.status_code == 200 and len(rows(review_run)) == 1


def test_images_are_served_by_content_hash_only(review_run, server):
    pair = httpx.get(f"{server.base}/api/next", params={"rater": "ann"}).json()["pair"]
    good = httpx.get(server.base + pair["left"]["url"])
    assert good.status_code == 200 and good.headers["content-type"] == "image/png"
    assert good.content[:8] == b"\x89PNG\r\n\x1a\n"
    refused = []
    for path in ("/img/../run.db", "/img/..%2Frun.db", "/img/..%2F..%2Frun.db", "/img/%2e%2e/run.db",
                 "/static/../run.db", "/static/..%2Frun.db", "/img/" + "0" * 64, "/img/run.db", "/run.db",
                 "/images/" + pair["left"]["sha"][:2] + "/" + pair["left"]["sha"] + ".png"):
        status, body = _raw_get(server.port, path)
        refused.append((path, status))
        assert b"SQLite format" not in body and b"\x89PNG" not in body, path
    assert all(status == 404 for _, status in refused), refused


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """A request with the path exactly as given (clients would normalise `../` away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_foreign_host_header_is_refused(server):
    r = httpx.get(f"{server.base}/api/next", headers={"Host": f"evil.example:{server.port}"})
    assert r.status_code == 400


def test_off_loopback_every_request_needs_the_token(review_run):
    srv = start_server(review_run, host="0.0.0.0")
    try:
        assert srv.token and len(srv.token) >= 24 and "token=" in srv.url
        base = f"http://127.0.0.1:{srv.port}"
        for path in ("/", "/api/next", "/static/review.js"):
            assert httpx.get(base + path).status_code == 403, path
            assert httpx.get(base + path, params={"token": "wrong"}).status_code == 403, path
        page = httpx.get(base + "/", params={"token": srv.token})
        assert page.status_code == 200 and f"review.js?token={srv.token}" in page.text
        pair = httpx.get(base + "/api/next", params={"token": srv.token, "rater": "ann"}).json()["pair"]
        assert httpx.get(base + pair["left"]["url"].split("?")[0]).status_code == 403
        assert httpx.get(base + pair["left"]["url"]).status_code == 200  # the URL carries the token
        body = {"vote_id": "t1", "rater": "ann", "slot": pair["slot"], "left": pair["left"]["sha"],
                "right": pair["right"]["sha"], "choice": "left"}
        assert httpx.post(base + "/api/vote", json=body).status_code == 403
        assert rows(review_run) == []
        assert httpx.post(base + "/api/vote", json=body, params={"token": srv.token}).status_code == 200
        assert len(rows(review_run)) == 1
    finally:
        srv.stop()


def test_a_bad_vote_is_refused_with_the_field_named(review_run, server):
    pair = httpx.get(f"{server.base}/api/next", params={"rater": "ann"}).json()["pair"]
    base = {"vote_id": "b1", "rater": "ann", "slot": pair["slot"], "left": pair["left"]["sha"],
            "right": pair["right"]["sha"], "choice": "left"}
    for change, field in (({"choice": "both"}, "choice"), ({"slot": "nope"}, "slot"),
                          ({"right": pair["left"]["sha"]}, "left/right"), ({"vote_id": "../x"}, "vote_id"),
                          ({"rater": " "}, "rater")):
        r = httpx.post(f"{server.base}/api/vote", json={**base, **change})
        assert r.status_code == 400 and field in r.json()["error"], (change, r.text)
    assert rows(review_run) == []


def test_load_50_voters_20_votes_each(review_run, server):
    """50 concurrent voters x 20 votes: 1,000 acknowledged votes, 1,000 rows, integrity ok."""

    retries = []

    async def send(client: httpx.AsyncClient, method: str, url: str, **kw) -> httpx.Response:
        """As the page does: a request that meets a dropped connection is sent again (a vote with
        the same id, so it is stored once)."""
        for attempt in range(5):
            try:
                return await client.request(method, url, **kw)
            except httpx.TransportError as exc:
                retries.append(repr(exc))
                await asyncio.sleep(0.2)
        raise AssertionError(f"gave up after 5 tries: {retries[-5:]}")

    async def voter(client: httpx.AsyncClient, n: int) -> list[str]:
        acked = []
        for i in range(20):
            r = await send(client, "GET", "/api/next", params={"rater": f"voter-{n}"})
            pair = r.json()["pair"]
            assert pair is not None
            vid = f"load-{n}-{i}"
            r = await send(client, "POST", "/api/vote", json={
                "vote_id": vid, "rater": f"voter-{n}", "slot": pair["slot"], "left": pair["left"]["sha"],
                "right": pair["right"]["sha"], "choice": ("left", "right", "tie")[i % 3]})
            assert r.status_code == 200, r.text
            acked.append(vid)
        return acked

    async def main() -> list[str]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=60) as client:
            done = await asyncio.gather(*(voter(client, n) for n in range(50)))
        return [v for batch in done for v in batch]

    acked = asyncio.run(main())
    server.stop(signal.SIGKILL)
    assert len(acked) == 1000
    assert len(retries) <= 20, retries  # a dropped connection now and then, not a failing server
    stored = rows(review_run, "SELECT vote_id FROM ratings")
    assert sorted(v for (v,) in stored) == sorted(acked)
    conn = sqlite3.connect(review_run / "run.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_rater = conn.execute("SELECT COUNT(DISTINCT rater), MIN(n), MAX(n) FROM "
                                 "(SELECT rater, COUNT(*) n FROM ratings GROUP BY rater)").fetchone()
        dupes = conn.execute("SELECT COUNT(*) FROM (SELECT rater, left_sha256, right_sha256 FROM ratings "
                             "GROUP BY rater, MIN(left_sha256, right_sha256), MAX(left_sha256, right_sha256) "
                             "HAVING COUNT(*) > 1)").fetchone()[0]
    finally:
        conn.close()
    assert per_rater == (50, 20, 20)
    assert dupes == 0  # no voter was shown a pair twice


def test_votes_imported_while_the_server_runs_count_at_the_next_pair(review_run, server, tmp_path):
    """`lorascope ratings import` into a run whose review page is open: the server sees the new
    votes at the next request (SQLite's data_version), not only after a restart, so it neither
    shows the imported pairs again nor miscounts progress."""
    from lorascope.cli import app
    from typer.testing import CliRunner

    pair, _, r = _vote(server.base, "ann", "left", "v-here")
    assert r.status_code == 200
    # another rater's votes, cast on a copy of the run and exported there
    other = tmp_path / "other"
    import shutil

    shutil.copytree(review_run, other)
    from review_helpers import cast_votes

    cast_votes(other, "bob", 3)
    exported = tmp_path / "bob.jsonl"
    assert CliRunner().invoke(app, ["ratings", "export", str(other), "-o", str(exported)]).exit_code == 0
    before = httpx.get(f"{server.base}/api/next", params={"rater": "bob"}).json()
    assert sum(p["votes"] for p in before["progress"]) == 0
    done = CliRunner().invoke(app, ["ratings", "import", str(review_run), str(exported)])
    assert done.exit_code == 0, done.output
    after = httpx.get(f"{server.base}/api/next", params={"rater": "bob"}).json()
    assert sum(p["votes"] for p in after["progress"]) == 3  # bob's, without a restart
