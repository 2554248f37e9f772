"""Loopback fakes of the hosted providers, speaking their documented wire protocols.

Each fake is a real HTTP server (stdlib `ThreadingHTTPServer`) on 127.0.0.1:

    from tests.fakes import FalFake, NovitaFake, HighwayFake, AimlapiFake, Reply, MALFORMED

    with NovitaFake(key="k", latency=0.0, record="log.jsonl") as fake:   # starts a thread
        fake.url                      # "http://127.0.0.1:PORT": use as the provider root
        fake.book.outcome = "fail"    # next tasks: "succeed" | "fail" | "never" | "filtered"
        fake.book.fail_reason = "..." # FAILED task reason
        fake.book.polls_before_done = 2   # status polls answered QUEUED, then PROCESSING
        fake.expired_tokens = 1       # Novita/Highway: first signed image URL answers 403
        fake.returned_origin = "https://queue.fal.run"   # fal: origin of returned URLs
        fake.script("submit", Reply(429, {...}, {"Retry-After": "1"}), Reply(500, {...}))
        fake.script("result", Reply(200, MALFORMED))     # scripted answers come first
        fake.hits("submit")           # recorded requests: method, path, query, headers
                                      # (lower-case names), json, body, route, t

Routes: fal: submit, status, response, cancel, image; novita/highway: submit, result,
image; aimlapi: generate, image; replicate: model, submit, get, cancel, image; wavespeed:
submit, result, image. Scripted replies skip the auth check; otherwise a missing
key answers 401 and a wrong one 403 (fal: 401). Requests are appended to `record` as JSONL
(flushed and fsync'd per request) so a log survives a SIGKILLed client.

Standalone (crash/resume tests), from the repo root:

    python -m tests.fakes.run_server --protocol novita --port 0 --latency 0.2 \
        --record /path/log.jsonl [--key KEY] [--polls-before-done N]

prints its URL on stdout's first line and serves until killed. Images are real PNG/JPEG/
WebP bytes made with Pillow. Importing `tests.fakes` needs the repo root on sys.path (pytest
conftests in tests/providers add it; `python -m` from the root has it).
"""

from tests.fakes.aimlapi import AimlapiFake
from tests.fakes.fal import FalFake
from tests.fakes.novita import HighwayFake, NovitaFake
from tests.fakes.replicate import ReplicateFake
from tests.fakes.server import MALFORMED, FakeServer, Recorded, Reply
from tests.fakes.wavespeed import WavespeedFake

#: A key-shaped test credential (never a real key); tests assert it never leaks.
TEST_KEY = "sk-test-0123456789abcdef"

FAKES = {"fal": FalFake, "novita": NovitaFake, "highway": HighwayFake, "aimlapi": AimlapiFake,
         "replicate": ReplicateFake, "wavespeed": WavespeedFake}

__all__ = ["FAKES", "MALFORMED", "AimlapiFake", "FakeServer", "FalFake", "HighwayFake", "NovitaFake", "Recorded", "ReplicateFake", "Reply", "TEST_KEY",
           "WavespeedFake"]
