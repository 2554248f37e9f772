"""Fixtures for provider tests: loopback fakes, a virtual clock, providers wired to both."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from lorascope.harness.providers import provider_class  # noqa: E402
from tests.fakes import FAKES, TEST_KEY as KEY  # noqa: E402
ENV_VARS = ("FAL_KEY", "NOVITA_API_KEY", "HIGHWAY_API_KEY", "AIMLAPI_KEY", "REPLICATE_API_TOKEN", "WAVESPEED_API_KEY",
            "LORASCOPE_FAL_URL", "LORASCOPE_NOVITA_URL", "LORASCOPE_HIGHWAY_URL", "LORASCOPE_AIMLAPI_URL",
            "LORASCOPE_REPLICATE_URL", "LORASCOPE_WAVESPEED_URL")


class VirtualClock:
    """Monotonic time that only moves when the code under test sleeps: retries and polls
    run instantly, and every wait is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        import asyncio

        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake_factory():
    started = []

    def make(protocol: str, **kw):
        fake = FAKES[protocol](key=kw.pop("key", KEY), **kw).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fal(fake_factory, monkeypatch):
    """fal's loopback fake, with FAL_KEY and LORASCOPE_FAL_URL pointing the CLI at it."""
    fake = fake_factory("fal")
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("LORASCOPE_FAL_URL", fake.url)
    return fake


@pytest.fixture
def make_provider(clock):
    made = []

    def make(name: str, fake=None, **config):
        config.setdefault("api_key", KEY)
        if fake is not None:
            config.setdefault("base_url", fake.url)
        provider = provider_class(name)(config, sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
        made.append(provider)
        return provider

    yield make
    # clients are closed by each test's `async with` or left to GC in sync tests
