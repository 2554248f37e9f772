"""The provider tests' loopback fakes, virtual clock and provider factory, reused here."""

from tests.providers.conftest import _clean_env, clock, fake_factory, fal, make_provider  # noqa: F401
