"""Starting `lorascope review` as its own process (a real uvicorn on loopback), reading the
URL it prints, and stopping it by its pid (SIGKILL for the crash tests)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str  # as printed, with ?rater= (and &token= off loopback)

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    @property
    def token(self) -> str | None:
        return parse_qs(urlsplit(self.url).query).get("token", [None])[0]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=20)


def start_server(run: Path, *, port: int = 0, host: str = "127.0.0.1", rater: str = "ann",
                 timeout: float = 60.0) -> Server:
    cmd = [sys.executable, "-c", "from lorascope.cli import main; main()", "review", str(run),
           "--host", host, "--port", str(port), "--rater", rater]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("review page: "):
                server = Server(proc, line.split("review page: ", 1)[1].strip())
                _wait_listening(server, deadline)
                return server
        elif proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("lorascope review did not start:\n" + "".join(lines) + (proc.stdout.read() or ""))


def _wait_listening(server: Server, deadline: float) -> None:
    import httpx

    params = {"token": server.token} if server.token else {}
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{server.port}/static/review.css", params=params, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the review server printed its URL but does not answer")


def rows(run: Path, sql: str = "SELECT * FROM ratings ORDER BY vote_id") -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(run / "run.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def cast_votes(run: Path, rater: str, n: int, prefer_high: bool = True, start: int = 0) -> list:
    """`n` votes as a person who prefers the higher scale (or the lower) would cast them."""
    from lorascope.evals.ratings import PairChooser, build_slots
    from lorascope.harness.ratings import Ratings, Vote
    from lorascope.harness.store import RunStore

    with RunStore.open(run) as store:
        frame = store.results_frame()
    chooser = PairChooser(build_slots(frame))
    cast = []
    with Ratings.open(run) as ratings:
        for i in range(n):
            pair = chooser.choose(ratings.votes(), rater)
            order = lambda ref: (ref.scale != "", float(ref.scale or 0))  # noqa: E731
            high = "left" if order(pair.left) > order(pair.right) else "right"
            choice = high if prefer_high else ("right" if high == "left" else "left")
            s = pair.slot
            vote = Vote(vote_id=f"{rater}-{start + i}", rater=rater, created_at=1000.0 + start + i, provider=s.provider,
                        lora=s.lora, prompt_id=s.prompt_id, seed=s.seed, options=s.options,
                        left_cell=pair.left.cell_id, left_index=pair.left.index, left_sha256=pair.left.sha256,
                        left_scale=pair.left.scale, left_generation=pair.left.generation_id,
                        right_cell=pair.right.cell_id, right_index=pair.right.index,
                        right_sha256=pair.right.sha256, right_scale=pair.right.scale,
                        right_generation=pair.right.generation_id, choice=choice)
            assert ratings.add_vote(vote)
            cast.append(vote)
    return cast
