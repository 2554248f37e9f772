"""lorascope's pytest plugin (entry point `pytest11`); being built, see issue 6."""

from __future__ import annotations
