"""Number and label formatting for reports (one place, so every table reads the same)."""

from __future__ import annotations

import json
import math

import pandas as pd
from typing import Any

DASH = "–"


def is_missing(value: Any) -> bool:
    """None, NaN, pandas NA/NaT (nullable columns from the store)."""
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def number(value: Any) -> float | None:
    """A stored number as a float; None for missing, NaN or not a number."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def num(value: Any, spec: str = ".3f") -> str:
    if is_missing(value):
        return DASH
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def signed(value: Any, spec: str = "+.3f") -> str:
    return num(value, spec)


def scale(value: Any) -> str:
    if is_missing(value):
        return DASH
    return f"{float(value):g}"


def seconds(value: Any) -> str:
    if is_missing(value):
        return DASH
    v = float(value)
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 120:
        return f"{v:.2f} s"
    minutes, secs = divmod(v, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def usd(value: Any) -> str:
    if is_missing(value):
        return DASH
    v = float(value)
    if v == 0:
        return "$0"
    if abs(v) < 0.01:
        return f"${v:.5f}"
    return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def percent(value: Any) -> str:
    if is_missing(value):
        return DASH
    return f"{float(value) * 100:.1f}%"


def seed(value: Any) -> str:
    if is_missing(value):
        return "random"
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return str(value)


def options_text(value: Any) -> str:
    """Provider options as `k=v, k=v` ('' for none); accepts a dict or its JSON text."""
    if is_missing(value) or value in ("", "{}", "null"):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)
