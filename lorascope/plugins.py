"""Plugins found by name: built-ins listed by import path (imported only when used, so the
CLI starts fast) and other packages' entry points in a group (`lorascope.providers`,
`lorascope.scorers`); an entry point of a built-in's name replaces it."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Mapping


def plugin_targets(group: str, builtin: Mapping[str, str]) -> dict[str, str]:
    """name -> "module:attribute" for the built-ins and every installed entry point of `group`."""
    targets = dict(builtin)
    for ep in entry_points(group=group):
        targets[ep.name] = ep.value
    return targets


def load_target(target: str) -> Any:
    """Import "module:attribute" and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
