"""The console script's logging: every record passes through the key redactor."""

from __future__ import annotations

import logging

import pytest

from lorascope.harness import secrets
from lorascope.cli import configure_logging


def test_a_key_in_a_log_message_is_masked(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    key = "fal-0123456789abcdef-SECRET"
    secrets.register(key)
    monkeypatch.setenv("LORASCOPE_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    level = root.level
    handler = configure_logging()
    try:
        logging.getLogger("httpx").info("POST https://queue.fal.run headers={'authorization': 'Key %s'}", key)
        logging.getLogger("lorascope").warning("provider echoed %s back", key)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert key not in err
    assert "INFO httpx: POST https://queue.fal.run" in err and "WARNING lorascope: provider echoed *** back" in err
