"""Provider registry. Built-ins are listed here by import path (imported only when used, so
the CLI starts fast); third-party packages add providers through the `lorascope.providers`
entry-point group, one `Provider` subclass per name.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

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
    targets = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets[ep.name] = ep.value
    return targets


def available() -> list[str]:
    return sorted(_targets())


def provider_class(name: str) -> "type[Provider]":
    target = _targets().get(name)
    if target is None:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(available())}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
