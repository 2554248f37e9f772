"""Fixtures for the report tests: synthetic run folders (real PNGs, harness columns)."""

from __future__ import annotations

import pytest

from report_fixtures import XSS_ERROR, XSS_NOTE, XSS_PROMPT, make_run


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
