"""Errors the reports stage reports to the user (with the CLI's exit code)."""

from __future__ import annotations


class ReportError(Exception):
    """A report could not be written; the message names the folder or file and says why.
    `exit_code` 2 = usage (no such run folder), 1 = a check failed."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
