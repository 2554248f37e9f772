"""The provider registry: built-ins by name, and a third-party package adding a provider
through the `lorascope.providers` entry-point group (a real dist-info on sys.path)."""

from __future__ import annotations

import textwrap

import pytest

from harness import providers


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
        from harness.models import Cost, Estimate
        from harness.providers.base import Provider

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
