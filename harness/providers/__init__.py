"""Provider registry. Built-ins are listed here by import path (imported only when used, so
the CLI starts fast); third-party packages add providers through the `lorascope.providers`
entry-point group, one `Provider` subclass per name.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from lorascope.plugins import load_target, plugin_targets

if TYPE_CHECKING:
    from lorascope.harness.providers.base import Provider

ENTRY_POINT_GROUP = "lorascope.providers"

BUILTIN: dict[str, str] = {
    "fal": "lorascope.harness.providers.fal:FalProvider",
    "novita": "lorascope.harness.providers.novita:NovitaProvider",
    "highway": "lorascope.harness.providers.highway:HighwayProvider",
    "aimlapi": "lorascope.harness.providers.aimlapi:AimlapiProvider",
    "replicate": "lorascope.harness.providers.replicate:ReplicateProvider",
    "wavespeed": "lorascope.harness.providers.wavespeed:WavespeedProvider",
    "diffusers": "lorascope.harness.providers.local:DiffusersProvider",
}


@lru_cache(maxsize=1)
def _targets() -> dict[str, str]:
    return plugin_targets(ENTRY_POINT_GROUP, BUILTIN)


def available() -> list[str]:
    return sorted(_targets())


def provider_class(name: str) -> "type[Provider]":
    target = _targets().get(name)
    if target is None:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(available())}")
    return load_target(target)
