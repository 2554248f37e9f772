"""Fixtures for the report tests: synthetic run folders (real PNGs, harness columns)."""

from __future__ import annotations

import pytest

from report_fixtures import make_run

XSS_PROMPT = 'A <script>alert("prompt")</script> beach "><img src=x onerror=alert(1)>'
XSS_NOTE = '</div><script>alert("note")</script><img src=x onerror="alert(2)">'
XSS_ERROR = 'HTTP 422: "><svg onload=alert(3)><script>alert("error")</script>'


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("scored-run"), scored=True)


@pytest.fixture(scope="module")
def unscored_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("unscored-run"), scored=False)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Untrusted text in a prompt, a catalogue note and a provider error."""
    return make_run(tmp_path_factory.mktemp("hostile-run"), scored=True,
                    prompt_text={"trex": XSS_PROMPT}, error_text=XSS_ERROR,
                    notes={"ink-wash": XSS_NOTE})
