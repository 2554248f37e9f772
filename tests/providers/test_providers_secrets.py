"""Keys never appear in text, mappings, headers or log lines that pass through redaction."""

from __future__ import annotations

import logging

from lorascope.harness import secrets


def test_registered_keys_are_masked_everywhere():
    secrets.register("zz-registered-key-42")
    assert secrets.redact_text("echo zz-registered-key-42 back") == "echo *** back"
    nested = {"a": ["x zz-registered-key-42 y", {"b": ("zz-registered-key-42",)}], "n": 3}
    assert "zz-registered-key-42" not in repr(secrets.redact(nested))
    assert secrets.redact(nested)["n"] == 3


def test_credential_shapes_are_masked_without_registration():
    text = "Authorization: Bearer abcdefgh12345678 and Key fal-abc:def123456 and api_key=s3cr3tvalue&x=1"
    clean = secrets.redact_text(text)
    for leaked in ("abcdefgh12345678", "fal-abc:def123456", "s3cr3tvalue"):
        assert leaked not in clean
    assert "x=1" in clean


def test_headers_and_secret_fields():
    headers = secrets.redact_headers({"Authorization": "Key anything", "X-Api-Key": "k", "Accept": "json"})
    assert headers == {"Authorization": "***", "X-Api-Key": "***", "Accept": "json"}
    assert secrets.redact({"api_key": "plain", "API-KEY": "x", "prompt": "a fox"}) == {
        "api_key": "***", "API-KEY": "***", "prompt": "a fox"}


def test_log_filter(caplog):
    secrets.register("log-secret-value-77")
    logger = logging.getLogger("lorascope.test.secrets")
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    logger.addHandler(handler)
    secrets.install_log_filter(logger)
    logger.warning("calling with %s", "log-secret-value-77")
    assert records and "log-secret-value-77" not in records[0].getMessage()
    logger.removeHandler(handler)


def test_ordinary_prompts_are_left_alone():
    for prompt in ("a key lighting setup, low key photography", "Bearer of good news", "secret garden at dawn",
                   "a token of love"):
        assert secrets.redact_text(prompt) == prompt


def test_json_shaped_credentials():
    text = '{"api_key": "abcd1234efgh", "Authorization": "Key 1234abcd-5678:abcdef0123456789"}'
    clean = secrets.redact_text(text)
    assert "abcd1234efgh" not in clean and "abcdef0123456789" not in clean
