"""Every module is imported as `lorascope.<stage>...`: a bare `from harness ...` works in the
checkout only by accident (the repository root on sys.path) and breaks once installed."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = frozenset({"registry", "harness", "evals", "reports"})
NOT_SOURCE = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "runs", "test-artifacts", "node_modules"}


def python_sources() -> list[Path]:
    """The repository's .py files as git sees them (tracked and untracked, not ignored)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                              "--", "*.py"], capture_output=True, text=True, check=True).stdout
        files = [REPO / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        files = [p for p in REPO.rglob("*.py") if not set(p.relative_to(REPO).parts) & NOT_SOURCE]
    return [p for p in files if p.is_file()]


def bare_stage_imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, statement) for each absolute import whose first name is a bare stage."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in STAGES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in STAGES:
                found.append((node.lineno, f"from {node.module} import ..."))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.split(".")[0] in STAGES):
            found.append((node.lineno, f"import_module({node.args[0].value!r})"))
    return found


def test_the_checker_sees_every_form_of_a_bare_stage_import():
    code = (
        "import evals\nimport os, harness.runner as r\nfrom reports.render import x\n"
        "def f():\n    from registry import catalogue\n    importlib.import_module('harness.store')\n"
        "from lorascope.harness import store\nfrom . import sibling\nimport registryx\nfrom evalsy import z\n"
    )
    assert bare_stage_imports(code) == [
        (1, "import evals"), (2, "import harness.runner"), (3, "from reports.render import ..."),
        (5, "from registry import ..."), (6, "import_module('harness.store')"),
    ]


def test_no_source_file_imports_a_bare_top_level_stage():
    sources = python_sources()
    assert len(sources) > 50 and REPO / "harness" / "runner.py" in sources  # the scan sees the tree
    problems = []
    for path in sources:
        try:
            hits = bare_stage_imports(path.read_text(encoding="utf-8"), str(path))
        except SyntaxError as exc:
            pytest.fail(f"{path}: does not parse: {exc}")
        problems += [f"{path.relative_to(REPO)}:{line}: {stmt}" for line, stmt in hits]
    assert not problems, "bare stage imports (import them as lorascope.<stage>):\n" + "\n".join(problems)
