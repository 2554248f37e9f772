"""Hostile and damaged input at the provider edge (issue 19): a malformed key is refused
before anything is sent and never shown; `generate` checks where the image goes before it
pays, and never discards an image it paid for."""

from __future__ import annotations

import os
import stat
import traceback

import pytest
from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.harness import secrets
from lorascope.harness.errors import AuthError, NotSent
from lorascope.harness.models import GenerationRequest
from lorascope.harness.providers import provider_class
from lorascope.harness.providers._http import ProviderHttp, RetryPolicy
from tests.fakes import TEST_KEY as KEY

runner = CliRunner()

BAD_KEYS = [KEY + "\n", "   ", KEY + " ", "sk-\x01abcdef0123456789", "sk-é-0123456789abcdef", "\tsk-0123456789abcdef"]


def invoke(*args):
    return runner.invoke(app, ["generate", *args], catch_exceptions=False)


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_a_malformed_key_is_refused_before_sending_naming_the_variable(bad, fake_factory, monkeypatch, tmp_path):
    fake = fake_factory("fal")
    monkeypatch.setenv("FAL_KEY", bad)
    monkeypatch.setenv("LORASCOPE_FAL_URL", fake.url)
    result = invoke("--provider", "fal", "--seed", "1", "a fox", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    assert "FAL_KEY" in result.output and "nothing was sent" in result.output
    for shown in (bad.strip(), repr(bad)[1:-1].strip()):
        assert len(shown) < 4 or shown not in result.output
    assert fake.requests == []
    assert not (tmp_path / "o.png").exists()


def test_a_malformed_key_from_the_suite_names_the_suite_field(monkeypatch):
    monkeypatch.delenv("NOVITA_API_KEY", raising=False)
    provider = provider_class("novita")({"api_key": KEY + "\n", "base_url": "http://127.0.0.1:9"})
    problems = provider.validate(GenerationRequest(prompt="a fox", width=512, height=512, seed=1))
    assert any("providers.novita.api_key" in p for p in problems), problems
    assert not any(KEY in p for p in problems)
    with pytest.raises(AuthError) as info:
        provider.require_key()
    assert KEY not in str(info.value) and "providers.novita.api_key" in str(info.value)


async def test_a_header_httpx_refuses_is_not_sent_and_the_key_never_shows(fake_factory, clock):
    # below the shape check (a plugin or a proxy token could still carry a newline): h11 refuses
    # the header, and its error quotes the value escaped ("...\\n"), which must be masked too
    fake = fake_factory("novita")
    bad = "Bearer zz-leaky-key-0123456789\n"
    client = ProviderHttp("fake", env_var="FAKE_KEY", auth_header=("Authorization", bad),
                          policy=RetryPolicy(max_retries=3), sleep=clock.sleep, clock=clock)
    with pytest.raises(NotSent) as info:
        await client.request("POST", f"{fake.url}/v3/async/z-image-turbo", json_body={"prompt": "x"})
    text = "".join(traceback.format_exception(info.value))
    assert "zz-leaky-key" not in text and "nothing was sent" in text
    assert fake.requests == [] and clock.sleeps == []  # never retried, never reached the server
    await client.aclose()


def test_escaped_forms_of_a_registered_key_are_masked():
    secrets.register("zz-form-key-0123\n")
    for shown in ("b'Bearer zz-form-key-0123\\n'", "'zz-form-key-0123\\n'", "zz-form-key-0123 trailing"):
        assert "zz-form-key" not in secrets.redact_text(shown), shown


def test_describe_exception_masks_library_text():
    secrets.register("zz-lib-key-98765")
    assert "zz-lib-key" not in secrets.describe_exception(ValueError("header 'Bearer zz-lib-key-98765' refused"))


# -- money: check the output before paying, keep what was paid for -----------------------------


def _unwritable_outputs(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    parent_is_file = tmp_path / "plain-file"
    parent_is_file.write_text("x")
    cases = {"a folder": folder, "under a file": parent_is_file / "o.png"}
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / "read-only.png"
        ro.write_bytes(b"old")
        ro.chmod(stat.S_IRUSR)
        cases["a read-only file"] = ro
    if os.path.exists("/proc/version"):
        cases["/proc"] = __import__("pathlib").Path("/proc/version")
    return cases


def test_an_unwritable_output_is_refused_before_the_provider_is_paid(fal, tmp_path):
    for label, out in _unwritable_outputs(tmp_path).items():
        result = invoke("--provider", "fal", "--seed", "1", "a fox", "-o", str(out))
        assert result.exit_code == 1, (label, result.output)
        assert "-o" in result.output and "nothing was sent" in result.output, (label, result.output)
        assert "Traceback" not in result.output
    assert fal.requests == []


def test_a_paid_image_the_output_refuses_is_kept_and_the_user_told_where(fal, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out" / "o.png"
    import lorascope.harness.cli_generate as cli_generate

    real = cli_generate._write_atomic

    def fail_for_out(path, data):  # the disk fills up between the check and the write
        if path == out:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(cli_generate, "_write_atomic", fail_for_out)
    result = invoke("--provider", "fal", "--seed", "1", "a fox", "-o", str(out))
    assert result.exit_code == 1
    assert len(fal.hits("submit")) == 1
    kept = list((tmp_path / "cache" / "generated").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(kept[0]) in result.output.replace("\n", "") and "paid" in result.output
    assert "Traceback" not in result.output and not out.exists()


# -- smaller items --------------------------------------------------------------------------------


def test_an_id_with_a_bad_scale_says_the_scale_is_wrong_and_prints_as_typed(fal, tmp_path):
    catalogue = tmp_path / "loras.yaml"
    catalogue.write_text("version: 1\nloras:\n  - id: coloring-book\n    name: C\n    source: {repo: r/c, file: c.safetensors, "
                         "revision: v1}\n    kind: style\n    scale: {recommended: 0.7, range: [0.5, 0.9]}\n")
    for value, words in (("coloring-book:abc:", "scale 'abc:' is not a number"),
                         ("coloring-book:abc", "scale 'abc' is not a number"),
                         ("coloring-book:nan", "is not a finite number")):
        result = invoke("--provider", "fal", "--lora", value, "--seed", "1", "--catalogue", str(catalogue),
                        "x", "-o", str(tmp_path / "o.png"))
        assert result.exit_code == 1 and words in result.output, result.output
        assert f"--lora {value}" in result.output  # as typed: no emoji for ':abc:'
        assert "no entry" not in result.output
    assert fal.requests == []


def test_limits_print_as_whole_numbers():
    from lorascope.harness.providers._hosted import check_range

    problems: list[str] = []
    check_range(problems, "seed", 4294967296, 0, 2147483647)
    check_range(problems, "scale", 4.5, 0.0, 4.0)
    assert problems == ["seed 4294967296 is outside [0, 2147483647]", "scale 4.5 is outside [0, 4]"]


def test_words_after_basic_or_bearer_are_not_taken_for_credentials():
    for text in ("name: basic\nproviders:\n  - fal\n", "a basic illustration of a fox", "Bearer\nsomething-long"):
        assert secrets.redact_text(text) == text
    assert "abc123def456" not in secrets.redact_text("Authorization: Basic abc123def456==")
