"""The `packaging` marker: `pytest -m packaging` runs only the build-and-install checks
(they run in `make test` like every other test)."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds the wheel/sdist and installs it into a fresh virtualenv"
    )
