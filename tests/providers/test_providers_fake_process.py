"""The fakes as standalone processes (used by crash/resume tests elsewhere): URL on the
first stdout line, per-task latency, and a JSONL request log that outlives the client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lorascope.harness.models import GenerationRequest
from lorascope.harness.providers.novita import NovitaProvider
from tests.fakes import TEST_KEY as KEY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def novita_process(tmp_path):
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.run_server", "--protocol", "novita", "--port", "0",
         "--latency", "0.2", "--record", str(log), "--key", KEY],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    url = proc.stdout.readline().strip()
    yield url, log, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


async def test_standalone_fake_serves_and_logs(novita_process):
    url, log, proc = novita_process
    assert url.startswith("http://127.0.0.1:")
    provider = NovitaProvider({"api_key": KEY, "base_url": url, "poll_interval_s": 0.05})
    async with provider:
        result = await provider.generate(GenerationRequest(prompt="a fox", width=256, height=256, seed=11))
    assert result.timings.total_s >= 0.2  # the configured task latency
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    routes = [line["route"] for line in lines]
    assert routes[0] == "submit" and routes[-1] == "image" and "result" in routes
    assert lines[0]["json"]["size"] == "256*256"
    assert lines[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert {"method", "path", "query", "headers", "json", "t"} <= set(lines[0])
