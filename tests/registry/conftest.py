"""Fixtures for the registry tests; the builders live in registry_builders.py (a unique name)."""

from registry_builders import _isolated_caches, fake_hub, loopback  # noqa: F401
