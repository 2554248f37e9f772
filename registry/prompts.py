"""Put LoRAs' trigger words into a prompt.

The rule: go through the entries in order and collect each trigger that is not already in the
prompt (case-insensitive, as a whole word where the trigger starts/ends with a letter or digit)
and not already collected. Triggers of `prefix` entries go before the prompt, those of `suffix`
entries after it, joined with ", ": `"trig1, trig2, a cat on a sofa, trig3"`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lorascope.registry.models import LoraEntry


def _contains(prompt: str, trigger: str) -> bool:
    left = r"(?<![A-Za-z0-9])" if trigger[:1].isascii() and trigger[:1].isalnum() else ""
    right = r"(?![A-Za-z0-9])" if trigger[-1:].isascii() and trigger[-1:].isalnum() else ""
    return re.search(left + re.escape(trigger) + right, prompt, flags=re.IGNORECASE) is not None


def apply_triggers(prompt: str, entries: Sequence[LoraEntry]) -> str:
    """The prompt with every entry's triggers at its trigger_position, each trigger once."""
    prefix: list[str] = []
    suffix: list[str] = []
    seen: list[str] = []
    for entry in entries:
        for trigger in entry.triggers:
            trigger = trigger.strip()
            if _contains(prompt, trigger) or any(trigger.lower() == s.lower() for s in seen):
                continue
            seen.append(trigger)
            (prefix if entry.trigger_position == "prefix" else suffix).append(trigger)
    parts = [*prefix, prompt.strip(), *suffix]
    return ", ".join(p for p in parts if p)
