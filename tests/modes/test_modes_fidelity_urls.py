"""Fidelity for https input pictures (evals.input_fetch, evals.fidelity): fetched once at the
first score from a real loopback HTTPS server (a throwaway CA from trustme, trusted through
SSL_CERT_FILE as the user's system would be, or an explicit SSLContext; verification is never
off), kept in the run, and refused with one clear line when the URL gives no usable picture.

The run is made on fal's loopback fake, which takes the URL as it is (the local provider
refuses URLs). The fake answers every cell with the same picture, so an input given both as
a local file and as a URL must get exactly the same fidelity numbers."""

from __future__ import annotations

import io
import json
import sqlite3
import ssl
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lorascope.evals.input_fetch import FetchError, fetch_input
from lorascope.harness.runner import run_suite_async
from lorascope.harness.suite import load_suite
from tests.helpers.harness_fakes import CATALOGUE

trustme = pytest.importorskip("trustme")

SECRET = "sig=TOPSECRET123"
HUGE = 64 * 1024 * 1024  # what the over-limit routes offer
CHUNK = 64 * 1024


def _photo(shift: int = 0) -> bytes:
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, (((x + shift) // 16 + y // 16) % 2) * 255], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG")
    return buffer.getvalue()


class PictureServer:
    """HTTPS on 127.0.0.1 with a certificate from its own CA. Counts requests per path and
    the body bytes it managed to hand to the socket (an over-limit body is cut off by the
    client, so the server never gets to send it all)."""

    def __init__(self, ca) -> None:
        self.photo = _photo()
        self.hits: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.done = {"/huge": threading.Event(), "/declared-huge": threading.Event()}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a body without Content-Length ends when the connection closes

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                route = {
                    "/photo.png": lambda: self._reply(200, server.photo, "image/png"),
                    "/missing.png": lambda: self._reply(404, b"not found", "text/plain"),
                    "/page.html": lambda: self._reply(200, b"<html><body>a login page</body></html>", "text/html"),
                    "/to-http": lambda: self._redirect(f"http://127.0.0.1:{server.port}/photo.png"),
                    "/to-https": lambda: self._redirect(f"/photo.png?{SECRET}"),
                    "/loop": lambda: self._redirect("/loop"),
                    "/huge": lambda: self._stream(path, declared=False),
                    "/declared-huge": lambda: self._stream(path, declared=True),
                    "/slow": lambda: (time.sleep(3), self._reply(200, server.photo, "image/png")),
                }.get(path, lambda: self._reply(404, b"", "text/plain"))
                route()

            def _reply(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _stream(self, path: str, declared: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                if declared:
                    self.send_header("Content-Length", str(HUGE))
                self.end_headers()
                block = server.photo[:8] + bytes(CHUNK - 8)  # a PNG signature, then zeros
                server.sent[path] = 0
                try:
                    while server.sent[path] < HUGE:
                        self.wfile.write(block)
                        server.sent[path] += len(block)
                except OSError:  # the client hung up: it stopped reading
                    pass
                finally:
                    server.done[path].set()

            def log_message(self, format: str, *args) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # a client hanging up is expected
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ca():
    return trustme.CA()


@pytest.fixture
def server(ca):
    s = PictureServer(ca)
    yield s
    s.stop()


@pytest.fixture
def client_context(ca):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def trusted(ca, tmp_path, monkeypatch):
    """The CA trusted the way a user's system would be told: SSL_CERT_FILE."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return pem


async def _fal_run(tmp_path: Path, monkeypatch, images: str) -> Path:
    """An img2img run of `paint` at one scale and strength over `images` on fal's fake."""
    from tests.fakes import TEST_KEY, FalFake

    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    project = tmp_path / "proj"
    (project / "in").mkdir(parents=True)
    (project / "loras.yaml").write_text(CATALOGUE)
    (project / "in" / "photo.png").write_bytes(_photo())
    (project / "suite.yaml").write_text(
        "name: url-fid\nmode: img2img\nproviders: [fal]\nloras: [paint]\nscales: [0.8]\nstrengths: [0.5]\n"
        f"images:\n{images}prompts: [a harbour]\nseeds: [1]\nsize: 64x64\n")
    with FalFake(key=TEST_KEY) as fake:
        monkeypatch.setenv("FAL_KEY", TEST_KEY)
        monkeypatch.setenv("LORASCOPE_FAL_URL", fake.url)
        summary = await run_suite_async(load_suite(project / "suite.yaml"), tmp_path / "run", progress=False,
                                        handle_sigint=False)
        submits = fake.hits("submit")
    assert summary.exit_code == 0, summary
    return tmp_path / "run", submits


def _fidelity(frame: pd.DataFrame, image: str) -> pd.DataFrame:
    rows = frame[frame.init_image == image].sort_values(["lora", "strength"])
    return rows[["lora", "strength", "input_cosine", "input_ssim"]].reset_index(drop=True)


async def test_url_input_gets_the_local_files_fidelity_fetched_once_and_kept_offline(
        tmp_path, monkeypatch, server, trusted):
    from lorascope.evals.scoring import score_run

    images = ("  - {id: local, image: in/photo.png}\n"
              f"  - {{id: remote, image: '{server.url}/photo.png?{SECRET}'}}\n"
              f"  - {{id: gone, image: '{server.url}/missing.png?{SECRET}'}}\n"
              f"  - {{id: again, image: '{server.url}/photo.png?{SECRET}'}}\n")  # one URL, two entries
    run, submits = await _fal_run(tmp_path, monkeypatch, images)
    # the provider got the URL as it is (it fetches the picture itself); we fetched nothing yet
    assert f"{server.url}/photo.png?{SECRET}" in {s.json["image_url"] for s in submits}
    assert server.hits == {}

    first = score_run(run, "tiny-random", progress=False)
    frame = pd.read_parquet(run / "results.parquet")
    remote, local = _fidelity(frame, "remote"), _fidelity(frame, "local")
    assert len(remote) == 2 and remote[["input_cosine", "input_ssim"]].notna().all().all()
    pd.testing.assert_frame_equal(remote, local)  # the same picture, the same numbers
    pd.testing.assert_frame_equal(_fidelity(frame, "again"), local)
    assert _fidelity(frame, "gone")[["input_cosine", "input_ssim"]].isna().all().all()
    # one line for the failed fetch: the suite's file:line, the entry, the URL without its token
    suite_path = tmp_path / "proj" / "suite.yaml"
    gone = f"  - {{id: gone, image: '{server.url}/missing.png?{SECRET}'}}"
    line = suite_path.read_text().splitlines().index(gone) + 1
    assert first.problems == [f"{suite_path}:{line}: images[2].image: GET {server.url}/missing.png answered HTTP 404 "
                              "(no fidelity for its images)"]
    assert server.hits == {"/photo.png": 1, "/missing.png": 1}

    with sqlite3.connect(run / "run.db") as db:
        kept = dict(zip(("sha", "path", "url", "fetched_at", "conflict"), db.execute(
            "SELECT input_sha256, input_path, url, fetched_at, conflict FROM run_inputs WHERE input_id = 'remote'"
        ).fetchone()))
    assert (run / kept["path"]).read_bytes() == server.photo and kept["conflict"] is None
    assert kept["url"] == f"{server.url}/photo.png?{SECRET}"  # as the suite wrote it, like the stored suite
    assert datetime.fromisoformat(kept["fetched_at"]).tzinfo is not None

    second = score_run(run, "tiny-random", progress=False)  # the kept copy: no second fetch
    assert server.hits["/photo.png"] == 1 and server.hits["/missing.png"] == 2  # a failed one is tried again
    assert len(second.problems) == 1
    server.stop()  # offline: the report and a re-score need nothing from the URL
    offline = score_run(run, "tiny-random", progress=False)
    assert [p for p in offline.problems if "images[1]" in p] == []
    assert all(SECRET not in p for p in first.problems + second.problems + offline.problems)
    pd.testing.assert_frame_equal(_fidelity(pd.read_parquet(run / "results.parquet"), "remote"), remote)


async def test_a_refetch_that_gets_other_bytes_gives_no_fidelity_and_keeps_saying_why(
        tmp_path, monkeypatch, server, trusted):
    from lorascope.evals.fidelity import collect_inputs
    from lorascope.evals.scoring import score_run

    run, _ = await _fal_run(tmp_path, monkeypatch, f"  - {{id: remote, image: '{server.url}/photo.png'}}\n")
    assert score_run(run, "tiny-random", progress=False).problems == []
    assert pd.read_parquet(run / "results.parquet")[["input_cosine", "input_ssim"]].notna().all().all()

    found, problems = collect_inputs(run, refetch=True)  # the same bytes: nothing to say
    assert "remote" in found and problems == [] and server.hits["/photo.png"] == 2

    server.photo = _photo(shift=8)  # the URL now serves another picture
    found, problems = collect_inputs(run, refetch=True)
    assert found == {} and len(problems) == 1
    assert f"{server.url}/photo.png served different bytes at" in problems[0]
    assert "the provider may have used either, so its images get no fidelity" in problems[0]
    summary = score_run(run, "tiny-random", progress=False)  # without refetch: still refused, still said
    assert summary.problems == problems and server.hits["/photo.png"] == 3
    assert pd.read_parquet(run / "results.parquet")[["input_cosine", "input_ssim"]].isna().all().all()



async def test_score_refetch_asks_the_url_again_from_the_command_line(tmp_path, monkeypatch, server, trusted):
    """`lorascope score --refetch`: the kept copy is checked against what the URL serves now;
    the same bytes change nothing, other bytes take the fidelity away and say why."""
    from typer.testing import CliRunner

    from lorascope.cli import app

    run, _ = await _fal_run(tmp_path, monkeypatch, f"  - {{id: remote, image: '{server.url}/photo.png'}}\n")

    def score(*extra: str) -> str:
        said = CliRunner().invoke(app, ["score", str(run), "--clip", "tiny-random", "--no-progress", *extra])
        assert said.exit_code == 0, said.output
        return " ".join(said.output.split())

    assert "served different bytes" not in score() and server.hits["/photo.png"] == 1
    assert "served different bytes" not in score() and server.hits["/photo.png"] == 1  # kept: not asked again
    assert "served different bytes" not in score("--refetch") and server.hits["/photo.png"] == 2
    assert pd.read_parquet(run / "results.parquet")[["input_cosine", "input_ssim"]].notna().all().all()
    server.photo = _photo(shift=8)
    assert "served different bytes" in score("--refetch") and server.hits["/photo.png"] == 3
    assert pd.read_parquet(run / "results.parquet")[["input_cosine", "input_ssim"]].isna().all().all()


# ---- the fetch itself -------------------------------------------------------------------


def test_fetch_follows_an_https_redirect_and_checks_the_bytes_like_a_local_file(server, client_context):
    image = fetch_input(f"{server.url}/to-https?{SECRET}", verify=client_context)
    assert image.data == server.photo and image.mime == "image/png" and (image.width, image.height) == (64, 64)
    assert image.source == f"{server.url}/to-https" and server.hits == {"/to-https": 1, "/photo.png": 1}


@pytest.mark.parametrize(("path", "message"), [
    ("/missing.png", "GET {url}/missing.png answered HTTP 404"),
    ("/page.html", "{url}/page.html is not a readable image (UnidentifiedImageError)"),
    ("/to-http", "{url}/to-http redirects to http://127.0.0.1:{port}/photo.png, which is not https; not followed"),
    ("/loop", "{url}/loop redirected more than 5 times; not followed"),
])
def test_fetch_refuses_what_is_not_a_usable_https_picture(server, client_context, path, message):
    with pytest.raises(FetchError) as caught:
        fetch_input(f"{server.url}{path}?{SECRET}", verify=client_context)
    assert str(caught.value) == message.format(url=server.url, port=server.port)
    assert SECRET not in str(caught.value) and "/photo.png" not in server.hits  # the http hop is never taken


@pytest.mark.parametrize("path", ["/huge", "/declared-huge"])
def test_an_over_limit_body_is_cut_off_not_downloaded(server, client_context, monkeypatch, path):
    from lorascope.harness import input_images

    monkeypatch.setattr(input_images, "MAX_INPUT_BYTES", 1024 * 1024)  # the local file's limit, read at call time
    with pytest.raises(FetchError) as caught:
        fetch_input(f"{server.url}{path}", verify=client_context)
    if path == "/huge":
        assert str(caught.value) == (f"{server.url}/huge sent more than 1,048,576 bytes; "
                                     "the limit is 1,048,576 (cut off)")
    else:
        assert str(caught.value) == (f"{server.url}/declared-huge is 67,108,864 bytes (Content-Length); "
                                     "the limit is 1,048,576")
    assert server.done[path].wait(10)  # its writes fail once the client has hung up
    # it got no further than the limit plus what the sockets buffer: a fraction of the 64 MiB
    print(f"{path}: the server sent {server.sent[path]:,} of {HUGE:,} bytes")
    assert server.sent[path] < HUGE // 4, server.sent


def test_the_pixel_limit_of_a_local_file_applies(server, client_context, monkeypatch):
    from lorascope.harness import input_images

    monkeypatch.setattr(input_images, "MAX_INPUT_PIXELS", 32 * 32)
    with pytest.raises(FetchError, match=r"/photo.png is 64x64; the limit is 1,024 pixels"):
        fetch_input(f"{server.url}/photo.png", verify=client_context)


def test_a_slow_server_times_out(server, client_context):
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"GET https://127.0.0.1:\d+/slow timed out \(limit 0.5 s per connect/read\)"):
        fetch_input(f"{server.url}/slow", verify=client_context, timeout_s=0.5)
    assert time.monotonic() - started < 2.5


def test_certificates_are_verified(server, monkeypatch, tmp_path):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_input(f"{server.url}/photo.png?{SECRET}")  # the loopback CA is not trusted by default
    with pytest.raises(FetchError, match="cannot be turned off"):
        fetch_input(f"{server.url}/photo.png", verify=False)
    assert server.hits == {}  # refused at the handshake: no request was made


def test_the_ca_can_come_from_ssl_cert_file(server, trusted):
    assert fetch_input(f"{server.url}/photo.png").data == server.photo
    assert json.dumps(server.hits) == '{"/photo.png": 1}'


def test_a_run_scored_before_url_inputs_gains_the_columns_and_keeps_its_rows():
    from lorascope.evals.fidelity import _ensure_schema

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE run_inputs (input_id TEXT PRIMARY KEY, input_sha256 TEXT NOT NULL, "
                 "input_path TEXT NOT NULL)")
    conn.execute("INSERT INTO run_inputs VALUES ('photo', 'abc', 'images/ab/abc.png')")
    _ensure_schema(conn)
    _ensure_schema(conn)  # twice is harmless
    assert [r[1] for r in conn.execute("PRAGMA table_info(run_inputs)")] == [
        "input_id", "input_sha256", "input_path", "url", "fetched_at", "conflict"]
    assert conn.execute("SELECT * FROM run_inputs").fetchall() == [
        ("photo", "abc", "images/ab/abc.png", None, None, None)]


async def test_a_url_serving_other_bytes_than_the_requests_recorded_gets_no_fidelity(
        tmp_path, monkeypatch, server, trusted):
    """Where the run's requests recorded the input's sha256 (the picture the cells were made
    from) and the URL now serves something else, fidelity against it would be wrong."""
    import hashlib

    from lorascope.evals.scoring import score_run

    run, _ = await _fal_run(tmp_path, monkeypatch, f"  - {{id: remote, image: '{server.url}/photo.png'}}\n")
    recorded = hashlib.sha256(_photo(shift=8)).hexdigest()
    with sqlite3.connect(run / "run.db") as db:
        for cell_id, request in db.execute("SELECT cell_id, request_json FROM cells").fetchall():
            body = json.loads(request)
            body["init_image"]["sha256"] = recorded
            db.execute("UPDATE cells SET request_json = ? WHERE cell_id = ?", (json.dumps(body, separators=(",", ":")), cell_id))
    summary = score_run(run, "tiny-random", progress=False)
    (problem,) = summary.problems
    assert f"images[0].image: {server.url}/photo.png now serves bytes (sha256 " in problem
    assert f"other than the run's requests recorded ({recorded[:12]}...); its images get no fidelity" in problem
    assert pd.read_parquet(run / "results.parquet")[["input_cosine", "input_ssim"]].isna().all().all()


async def test_the_review_page_shows_only_what_the_run_kept_and_asks_no_url(tmp_path, monkeypatch, server, trusted):
    """`lorascope review` shows an https input only once `score` has kept a copy: the page's
    server never fetches a URL itself, and says how to get the copy."""
    from lorascope.evals.scoring import score_run
    from lorascope.reports.review_server import _input_pictures

    run, _ = await _fal_run(tmp_path, monkeypatch, f"  - {{id: remote, image: '{server.url}/photo.png'}}\n")
    images = (run / "images").resolve()
    shown, notes = _input_pictures(run, {"remote"}, images)
    assert shown == {} and server.hits.get("/photo.png", 0) == 0
    assert any("is not kept in the run yet (`lorascope score RUN` fetches and keeps it)" in n for n in notes)
    assert not any("fidelity" in n for n in notes)
    assert score_run(run, "tiny-random", progress=False).problems == [] and server.hits["/photo.png"] == 1
    shown, notes = _input_pictures(run, {"remote"}, images)
    assert shown["remote"][1].read_bytes() == server.photo and notes == [] and server.hits["/photo.png"] == 1
