"""`lorascope run` as a real process against loopback servers speaking the providers' own
protocols (tests/fakes, each in its own process). Every count is taken at the server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from lorascope.harness.store import integrity_ok
from tests.fakes import TEST_KEY

ROOT = Path(__file__).resolve().parents[2]
LORASCOPE = Path(sys.executable).parent / "lorascope"
ENV_KEY = {"novita": "NOVITA_API_KEY", "aimlapi": "AIMLAPI_KEY", "fal": "FAL_KEY", "highway": "HIGHWAY_API_KEY",
           "replicate": "REPLICATE_API_TOKEN", "wavespeed": "WAVESPEED_API_KEY"}
FAST_POLL = "poll_interval_s: 0.05, poll_max_interval_s: 0.1"
SUBMIT_ROUTE = {"novita": "submit", "highway": "submit", "fal": "submit", "aimlapi": "generate",
                "replicate": "submit", "wavespeed": "submit"}
#: where the fakes of the prediction APIs are polled, and the prediction id in that path
POLLED_ID = {"replicate": ("get", lambda path: path.rsplit("/", 1)[-1]),
             "wavespeed": ("result", lambda path: path.split("/")[4])}


class Fake:
    """A provider fake in its own process, recording every request (fsync'd JSONL)."""

    def __init__(self, protocol: str, tmp: Path, latency: float) -> None:
        self.protocol = protocol
        self.log = tmp / f"{protocol}-requests.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.run_server", "--protocol", protocol, "--port", "0",
             "--latency", str(latency), "--record", str(self.log), "--key", TEST_KEY],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def submits(self) -> list[dict]:
        """Submits the provider could accept (and bill): a client SIGKILLed mid-send leaves a
        truncated body, which the fake (like the real APIs) rejects with a 400."""
        return [r for r in self.requests() if r["route"] == SUBMIT_ROUTE[self.protocol] and r["json"] is not None]

    def hits(self, route: str) -> int:
        return sum(1 for r in self.requests() if r["route"] == route)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def fakes(tmp_path):
    started: list[Fake] = []

    def start(protocol: str, latency: float = 0.0) -> Fake:
        fake = Fake(protocol, tmp_path, latency)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def suite_file(project: Path, fake: Fake, *, seeds=(1, 2, 3), concurrency=4, name="rel", extra="") -> Path:
    text = (
        f"name: {name}\n"
        f"providers:\n  - {fake.protocol}: {{concurrency: {concurrency}, {FAST_POLL}}}\n"
        f"loras: [paint]\nscales: [0.5, 1.0]\n"
        f"prompts:\n  - {{id: cat, text: a cat on a mat}}\n  - {{id: dog, text: a dog in fog}}\n"
        f"seeds: {list(seeds)}\nsize: 512x512\nsteps: 8\n{extra}"
    )
    path = project / f"{name}.yaml"
    path.write_text(text)
    return path


def env_for(fake: Fake, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORASCOPE_", "FAL_", "NOVITA_", "HIGHWAY_", "AIMLAPI_", "REPLICATE_", "WAVESPEED_"))}
    env.update({
        ENV_KEY[fake.protocol]: TEST_KEY,
        f"LORASCOPE_{fake.protocol.upper()}_URL": fake.url,
        "LORASCOPE_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
    })
    return env


def lorascope(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(LORASCOPE), "run", *args, "--no-progress"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def start_run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(LORASCOPE), "run", *args, "--no-progress"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def body_key(request: dict) -> str:
    return json.dumps(request["json"], sort_keys=True)


def db_rows(run: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(run / "run.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count_status(run: Path, status: str) -> int:
    if not (run / "run.db").exists():
        return 0
    try:
        return db_rows(run, f"SELECT COUNT(*) FROM generations WHERE status = '{status}'")[0][0]
    except sqlite3.Error:
        return 0


N_CELLS = (1 + 2) * 2 * 3  # (baseline + paint x 2 scales) x 2 prompts x 3 seeds


@pytest.mark.parametrize("protocol", ["novita", "fal", "replicate", "wavespeed"])
def test_sigkill_mid_run_async_provider_never_submits_an_accepted_task_twice(fakes, project, tmp_path, protocol):
    fake = fakes(protocol, latency=0.6)
    suite = suite_file(project, fake)
    run = tmp_path / "run"
    env = env_for(fake, tmp_path / "cache")
    proc = start_run([str(suite), "--out", str(run)], env, project)
    # kill once some tasks finished and others are accepted and running
    wait_for(lambda: len(fake.submits()) >= 6 and count_status(run, "submitted") >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert integrity_ok(run / "run.db")
    accepted = {r[0] for r in db_rows(run, "SELECT task_id FROM generations WHERE task_id IS NOT NULL")}
    in_flight = db_rows(run, "SELECT task_id FROM generations WHERE status = 'submitted'")
    in_flight_with_id = len(in_flight)
    assert accepted and in_flight_with_id >= 1  # the kill landed while accepted tasks were running
    assert all(task_id for (task_id,) in in_flight)

    second = lorascope([str(suite), "--out", str(run)], env, project)
    assert second.returncode == 0, second.stderr + second.stdout

    submits = Counter(body_key(r) for r in fake.submits())
    assert len(submits) == N_CELLS, "\n".join(submits)
    duplicates = sum(n - 1 for n in submits.values())
    # only submits whose task id never reached run.db may have been sent again, and the run says so
    unconfirmed = db_rows(run, "SELECT COUNT(*) FROM generations WHERE error_kind = 'interrupted' AND task_id IS NULL")[0][0]
    assert duplicates <= unconfirmed
    if duplicates:
        assert "task id never came back" in second.stdout
    resumed = db_rows(run, "SELECT COUNT(*) FROM generations WHERE origin = 'resumed' AND status = 'succeeded'")[0][0]
    assert resumed == in_flight_with_id  # every accepted task collected by its id
    if protocol in POLLED_ID:  # and polled by that id at the provider
        route, id_of = POLLED_ID[protocol]
        polled = {id_of(r["path"]) for r in fake.requests() if r["route"] == route}
        assert {task_id for (task_id,) in in_flight} <= polled
    frame = pd.read_parquet(run / "results.parquet")
    assert len(frame) == N_CELLS and set(frame.status) == {"succeeded"}
    assert all((run / p).is_file() for p in frame.image_path)
    if protocol == "replicate":  # the version every prediction ran, in the results and on the wire
        from tests.fakes.replicate import VERSION

        assert set(frame.model_version) == {VERSION}
        assert {r["json"]["version"] for r in fake.submits()} == {VERSION}


def test_sigkill_mid_run_sync_provider_resends_only_in_flight_and_says_how_many(fakes, project, tmp_path):
    fake = fakes("aimlapi", latency=0.6)
    suite = suite_file(project, fake)
    run = tmp_path / "run"
    env = env_for(fake, tmp_path / "cache")
    proc = start_run([str(suite), "--out", str(run)], env, project)
    wait_for(lambda: len(fake.submits()) >= 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert integrity_ok(run / "run.db")
    left_in_flight = db_rows(run, "SELECT COUNT(*) FROM generations WHERE status = 'intent'")[0][0]
    done_before = db_rows(run, "SELECT COUNT(*) FROM generations WHERE status = 'succeeded'")[0][0]
    last_row_at_kill = db_rows(run, "SELECT MAX(id) FROM generations")[0][0]
    # Every request the server received had its intent committed first, and is either recorded
    # as succeeded or still an intent (answered but not yet stored counts: results are stored
    # off the provider slot). Intents the server never received hold a slot: at most 4.
    received_unrecorded = len(fake.submits()) - done_before
    assert 1 <= left_in_flight and received_unrecorded <= left_in_flight <= received_unrecorded + 4

    second = lorascope([str(suite), "--out", str(run)], env, project)
    assert second.returncode == 0, second.stderr + second.stdout
    submits = Counter(body_key(r) for r in fake.submits())
    duplicates = sum(n - 1 for n in submits.values())
    assert len(submits) == N_CELLS, "\n".join(submits)
    assert duplicates <= left_in_flight  # nothing finished was sent again
    assert f"{left_in_flight} request(s) were in flight when an earlier run stopped and were sent again" in second.stdout
    # the resumed run asked once for every cell that had not finished, and for nothing else
    sent_now = db_rows(run, f"SELECT COUNT(*) FROM generations WHERE id > {last_row_at_kill} AND origin = 'sent'")[0][0]
    assert sent_now == N_CELLS - done_before
    frame = pd.read_parquet(run / "results.parquet")
    assert set(frame.status) == {"succeeded"} and len(frame) == N_CELLS


def test_ctrl_c_stops_cancels_records_and_resumes(fakes, project, tmp_path):
    fake = fakes("fal", latency=1.0)
    suite = suite_file(project, fake)
    run = tmp_path / "run"
    env = env_for(fake, tmp_path / "cache")
    proc = start_run([str(suite), "--out", str(run)], env, project)
    wait_for(lambda: len(fake.submits()) >= 4)
    time.sleep(0.2)
    submitted_at_sigint = len(fake.submits())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert integrity_ok(run / "run.db")
    assert len(fake.submits()) == submitted_at_sigint  # stopped submitting
    assert fake.hits("cancel") >= 1  # in-flight tasks cancelled at the provider
    requested = db_rows(run, "SELECT COUNT(*) FROM generations WHERE cancel_requested = 1")[0][0]
    cancelled_ids = {r["path"].rstrip("/").split("/")[-2] for r in fake.requests() if r["route"] == "cancel"}
    recorded_ids = {r[0] for r in db_rows(run, "SELECT task_id FROM generations WHERE cancel_requested = 1")}
    assert requested >= 1 and cancelled_ids == recorded_ids  # (fal also cancels itself when its call is cancelled)

    second = lorascope([str(suite), "--out", str(run)], env, project)
    assert second.returncode == 0, second.stderr
    submits = Counter(body_key(r) for r in fake.submits())
    assert len(submits) == N_CELLS, "\n".join(submits)
    # only tasks we cancelled ourselves are asked for again
    assert sum(n - 1 for n in submits.values()) <= requested
    assert set(pd.read_parquet(run / "results.parquet").status) == {"succeeded"}


def test_dry_run_sends_nothing_and_cache_and_fresh_are_counted_at_the_server(fakes, project, tmp_path):
    fake = fakes("novita")
    suite = suite_file(project, fake, seeds=(1,))
    env = env_for(fake, tmp_path / "cache")
    dry = lorascope([str(suite), "--out", str(tmp_path / "a"), "--dry-run"], env, project)
    assert dry.returncode == 0, dry.stderr
    assert "nothing sent" in dry.stdout and "novita" in dry.stdout
    assert fake.requests() == [] and not (tmp_path / "a").exists()

    first = lorascope([str(suite), "--out", str(tmp_path / "a")], env, project)
    assert first.returncode == 0, first.stderr
    n = len(fake.submits())
    assert n == 6
    other = lorascope([str(suite), "--out", str(tmp_path / "b")], env, project)
    assert other.returncode == 0 and len(fake.submits()) == n  # the shared cache answered
    frame = pd.read_parquet(tmp_path / "b" / "results.parquet")
    assert set(frame.origin) == {"cache"} and set(frame.status) == {"succeeded"}

    dry = lorascope([str(suite), "--out", str(tmp_path / "a"), "--dry-run"], env, project)
    assert "6" in dry.stdout and len(fake.submits()) == n
    fresh = lorascope([str(suite), "--out", str(tmp_path / "b"), "--fresh"], env, project)
    assert fresh.returncode == 0 and len(fake.submits()) == 2 * n


def test_grid_with_problems_sends_nothing_and_lists_all(fakes, project, tmp_path):
    fake = fakes("novita")
    suite = suite_file(project, fake, extra="", seeds=(1,))
    text = suite.read_text().replace("size: 512x512", "size: 4000x100").replace("scales: [0.5, 1.0]", "scales: [0.5, 4.0]")
    suite.write_text(text)
    result = lorascope([str(suite), "--out", str(tmp_path / "r")], env_for(fake, tmp_path / "cache"), project)
    assert result.returncode == 1
    assert "nothing was sent" in result.stderr
    assert result.stderr.count("novita:") >= 2  # size and scale, together
    assert fake.requests() == [] and not (tmp_path / "r").exists()


def test_budget_cap_counted_at_the_server(fakes, project, tmp_path):
    fake = fakes("fal")
    suite = suite_file(project, fake, seeds=(1,), concurrency=1)
    env = env_for(fake, tmp_path / "cache")
    dry = subprocess.run([sys.executable, "-c", (
        "from lorascope.harness.suite import load_suite; from lorascope.harness.runner import run_suite;"
        f"s = run_suite(load_suite({str(suite)!r}), {str(tmp_path / 'x')!r}, dry_run=True, progress=False);"
        "print(s.providers['fal'].estimated_cost / s.providers['fal'].to_send)")],
        env=env, cwd=project, capture_output=True, text=True)
    per = float(dry.stdout.strip().splitlines()[-1])
    cap = per * 2.5
    result = lorascope([str(suite), "--out", str(tmp_path / "r"), "--max-cost", repr(cap)], env, project)
    assert result.returncode == 1
    assert "--max-cost" in result.stderr
    sent = len(fake.submits())
    assert 1 <= sent < 6  # 6 generations in the grid; it stopped before the cap
    spent = db_rows(tmp_path / "r", "SELECT SUM(COALESCE(cost_usd, estimate_usd)) FROM generations")[0][0]
    assert spent <= cap
    assert db_rows(tmp_path / "r", "SELECT COUNT(*) FROM generations")[0][0] == sent


def test_budget_cap_with_a_provider_that_publishes_no_price(fakes, project, tmp_path):
    fake = fakes("aimlapi")
    suite = suite_file(project, fake, seeds=(1,), concurrency=3)
    env = env_for(fake, tmp_path / "cache")
    nothing = lorascope([str(suite), "--out", str(tmp_path / "r0"), "--max-cost", "0"], env, project)
    assert nothing.returncode == 1 and fake.submits() == []
    # one probe learns the billed price (aimlapi reports it), then the cap holds with it
    first = lorascope([str(suite), "--out", str(tmp_path / "r1"), "--no-progress"], env, project)
    price = max(r[0] for r in db_rows(tmp_path / "r1", "SELECT cost_usd FROM generations"))
    capped = lorascope([str(suite), "--out", str(tmp_path / "r2"), "--fresh", "--max-cost", repr(price * 3.5)], env,
                       project)
    assert first.returncode == 0 and capped.returncode == 1
    billed = [r[0] for r in db_rows(tmp_path / "r2", "SELECT cost_usd FROM generations")]
    assert 1 <= len(billed) <= 3 and sum(billed) <= price * 3.5 + 1e-12


def test_failed_tasks_are_failed_cells_not_a_crash(fakes, project, tmp_path):
    fake = fakes("novita")
    fake.stop()  # restarted with --outcome fail: every task fails
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.run_server", "--protocol", "novita", "--port", "0",
         "--record", str(fake.log), "--key", TEST_KEY, "--outcome", "fail"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        fake.url = proc.stdout.readline().strip()
        suite = suite_file(project, fake, seeds=(1,))
        result = lorascope([str(suite), "--out", str(tmp_path / "r")], env_for(fake, tmp_path / "cache"), project)
        assert result.returncode == 1, result.stderr
        frame = pd.read_parquet(tmp_path / "r" / "results.parquet")
        assert set(frame.status) == {"failed"} and all(e.startswith("task_failed") for e in frame.error)
        assert integrity_ok(tmp_path / "r" / "run.db")
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_issue_suite_runs_as_written_against_all_four_protocols(fakes, tmp_path):
    servers = {p: fakes(p) for p in ("fal", "novita", "highway", "aimlapi")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORASCOPE_", "FAL_", "NOVITA_", "HIGHWAY_", "AIMLAPI_"))}
    for name, fake in servers.items():
        env[ENV_KEY[name]] = TEST_KEY
        env[f"LORASCOPE_{name.upper()}_URL"] = fake.url
    env["LORASCOPE_CACHE"] = str(tmp_path / "cache")
    result = lorascope([str(ROOT / "suites" / "styles-smoke.yaml"), "--out", str(tmp_path / "run"),
                        "--concurrency", "12"], env, ROOT)
    assert result.returncode == 0, result.stderr + result.stdout
    for name, fake in servers.items():
        bodies = [r["json"] for r in fake.submits()]
        assert len(bodies) == 36, name  # (baseline + 2 LoRAs x 4 scales) x 2 prompts x 2 seeds
        text = json.dumps(bodies)
        assert "class1cpa1nt" in text and "c0l0ringb00k" in text  # triggers reached the wire
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(frame) == 144 and set(frame.status) == {"succeeded"}
    assert sorted(frame.lora.unique()) == ["", "classic-painting", "coloring-book"]
    assert (frame.width == 1024).all() and (frame.height == 1024).all()


async def test_garbage_json_and_corrupt_image_bytes_are_failed_cells(project, tmp_path, monkeypatch):
    """The real AI/ML API provider against its fake (in a thread), scripted to answer one
    request with truncated JSON and another with an image that is not an image."""
    from lorascope.harness.runner import run_suite_async
    from lorascope.harness.suite import load_suite
    from tests.fakes import MALFORMED, AimlapiFake, Reply

    with AimlapiFake(key=TEST_KEY) as fake:
        monkeypatch.setenv("AIMLAPI_KEY", TEST_KEY)
        monkeypatch.setenv("LORASCOPE_AIMLAPI_URL", fake.url)
        fake.script("generate", Reply(200, MALFORMED))
        fake.script("image", Reply(200, b"\x89PNG\r\n\x1a\n garbage", {"Content-Type": "image/png"}))
        path = project / "garbage.yaml"
        path.write_text("name: garbage\nproviders:\n  - aimlapi: {concurrency: 1}\n"
                        "prompts: [one, two, three, four]\nseeds: [1]\nsize: 512x512\n")
        summary = await run_suite_async(load_suite(path), tmp_path / "r", progress=False, handle_sigint=False)
        assert len(fake.hits("generate")) == 4  # nothing re-sent
    ps = summary.providers["aimlapi"]
    assert (ps.succeeded, ps.failed) == (2, 2) and summary.exit_code == 1
    frame = pd.read_parquet(tmp_path / "r" / "results.parquet")
    failed = frame[frame.status == "failed"]
    assert set(failed.error_kind) == {"bad_response"}
    assert all(failed.image_path == "")
    assert integrity_ok(tmp_path / "r" / "run.db")
