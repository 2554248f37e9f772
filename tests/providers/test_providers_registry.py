"""The provider registry: built-ins by name, and a third-party package adding a provider
through the `lorascope.providers` entry-point group (a real dist-info on sys.path)."""

from __future__ import annotations

import textwrap

import pytest

from lorascope.harness import providers
from lorascope.harness.errors import AuthError, ProviderError
from lorascope.harness.models import GenerationRequest


@pytest.fixture
def fresh_registry():
    providers._targets.cache_clear()
    yield
    providers._targets.cache_clear()


def test_builtins_by_name(fresh_registry):
    assert {"fal", "novita", "highway", "aimlapi", "diffusers"} <= set(providers.available())
    assert providers.provider_class("novita").name == "novita"
    with pytest.raises(KeyError, match="unknown provider 'nope'; known: aimlapi"):
        providers.provider_class("nope")


def test_a_plugin_package_adds_a_provider_in_one_module(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "acme_provider.py").write_text(textwrap.dedent("""\
        from lorascope.harness.models import Cost, Estimate
        from lorascope.harness.providers.base import Provider

        class AcmeProvider(Provider):
            name = "acme"
            def validate(self, request): return []
            def endpoint(self, request): return "acme/v1"
            def estimate(self, request): return Estimate(cost=Cost(usd=0.0, source="free"), seconds=1.0)
            async def generate(self, request, on_submitted=None): raise NotImplementedError
        """))
    dist = tmp_path / "acme_provider-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lorascope.providers]\nacme = acme_provider:AcmeProvider\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert "acme" in providers.available()
    cls = providers.provider_class("acme")
    assert cls.__name__ == "AcmeProvider" and cls().endpoint(None) == "acme/v1"


@pytest.mark.parametrize(("name", "key_var", "url_var", "default_root"), [
    ("fal", "FAL_KEY", "LORASCOPE_FAL_URL", "https://queue.fal.run"),
    ("novita", "NOVITA_API_KEY", "LORASCOPE_NOVITA_URL", "https://api.novita.ai"),
    ("highway", "HIGHWAY_API_KEY", "LORASCOPE_HIGHWAY_URL", "https://api.highwayapi.ai"),
    ("aimlapi", "AIMLAPI_KEY", "LORASCOPE_AIMLAPI_URL", "https://api.aimlapi.com"),
])
async def test_key_and_root_from_the_documented_variables(monkeypatch, fake_factory, name, key_var, url_var,
                                                          default_root):
    cls = providers.provider_class(name)
    assert cls().root == default_root
    with pytest.raises(AuthError, match=key_var):
        cls().require_key()
    fake = fake_factory(name)
    monkeypatch.setenv(url_var, f"{fake.url}/")
    monkeypatch.setenv(key_var, "env-key-0123456789")
    provider = cls()
    assert provider.root == fake.url
    # a suite's providers section wins over the environment
    from_suite = cls({"base_url": "http://127.0.0.1:9/gw", "api_key": "suite-key-0123456789"})
    assert from_suite.root == "http://127.0.0.1:9/gw" and from_suite.require_key() == "suite-key-0123456789"
    with pytest.raises(AuthError, match=key_var):  # the fake knows only the test key: the env key went over the wire
        async with provider:
            await provider.generate(GenerationRequest(prompt="a fox", width=512, height=512, seed=1))
    sent = fake.requests[0]
    assert sent.path.startswith(("/fal-ai/", "/v3/async/", "/v1/images/"))
    assert sent.headers["authorization"].endswith(" env-key-0123456789")
    assert "env-key-0123456789" not in repr(provider)
    monkeypatch.setenv(url_var, "https://user:proxy-secret@gateway.example/api")
    assert "proxy-secret" not in repr(cls())


async def test_a_root_without_a_scheme_is_a_problem_before_sending_and_never_retried(monkeypatch, clock):
    monkeypatch.setenv("LORASCOPE_NOVITA_URL", "api.novita.example")
    provider = providers.provider_class("novita")({"api_key": "k-0123456789"}, sleep=clock.sleep, clock=clock)
    request = GenerationRequest(prompt="a fox", width=512, height=512, seed=1)
    (problem,) = provider.validate(request)
    assert "LORASCOPE_NOVITA_URL" in problem and "'api.novita.example' is not an http(s) URL" in problem
    with pytest.raises(ProviderError, match="nothing was sent"):  # the transport refuses it outright
        async with provider:
            await provider.http.request("GET", f"{provider.root}/v3/async/task-result")
    assert clock.sleeps == []
