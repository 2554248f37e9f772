"""The last line of defence of the `lorascope` command: an exception no command handled
becomes one line on stderr that names the file and the fix, never a traceback (a traceback
can quote a key or a prompt's escape sequences, and tells a user nothing they can act on).

`LORASCOPE_TRACEBACK=1` lets the traceback through, for bug reports.
"""

from __future__ import annotations

import os
import sqlite3
import sys

from lorascope.harness.secrets import describe_exception, redact_text

EXIT_FAILED = 1


def explain(exc: BaseException) -> str:
    """One line saying what went wrong, where, and what to do."""
    from lorascope.harness.store import StoreError

    if isinstance(exc, StoreError):
        return f"error: {exc}"
    if isinstance(exc, sqlite3.DatabaseError):
        return (f"error: a run.db is damaged or not a lorascope database ({exc}); restore it from a copy, "
                "or run the suite again into a new --out folder")
    if isinstance(exc, MemoryError):
        return "error: out of memory; the input is too large (split the suite, or trim its grid)"
    if isinstance(exc, OSError) and exc.filename is not None:
        action = {
            IsADirectoryError: "is a folder, not a file: give a file name",
            NotADirectoryError: "lies under a file, not a folder: fix the path",
            PermissionError: "is not writable (or not readable) by you: pick another path or fix its permissions",
            FileNotFoundError: "does not exist: check the path",
        }.get(type(exc), "could not be used: check the path and the disk")
        return f"error: {exc.filename} {action} ({exc.strerror or exc})"
    if isinstance(exc, OSError):
        return f"error: {exc.strerror or exc}; check the paths given and the free disk space"
    return (f"error: {describe_exception(exc)} (unexpected: please report it; LORASCOPE_TRACEBACK=1 "
            "shows where it happened)")


def run_guarded(app) -> None:  # type: ignore[no-untyped-def]
    """Run the typer `app`; turn an unhandled exception into `explain`'s line and exit 1."""
    try:
        app()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if os.environ.get("LORASCOPE_TRACEBACK") == "1":
            raise
        print(redact_text(explain(exc)), file=sys.stderr)
        sys.exit(EXIT_FAILED)
