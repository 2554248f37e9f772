"""Jinja2 rendering: view model in, one self-contained HTML file out.

Autoescaping is on for every template and no template uses `|safe`: prompts, catalogue
text and provider messages are untrusted. The only markup passed in unescaped is our own
CSS and JavaScript, read from this package. A Content-Security-Policy pins the one script
by its hash, so even markup that slipped through could not run a script or load anything
from the network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from pydantic import BaseModel

TEMPLATE_DIR = Path(__file__).parent / "templates"


_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_script(model: BaseModel) -> Markup:
    """A view model as JSON for a `<script type="application/json">` block. The browser does
    not decode entities there, so escaping must be JSON's own: with `<`, `>` and `&` written
    as \\u escapes no run text can close the element or open a comment, and U+2028/9 are
    escaped for older JavaScript parsers. The page reads it with JSON.parse, never eval."""
    text = model.model_dump_json(exclude_defaults=True)
    return Markup(text.translate(_JSON_ESCAPES))


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json_script"] = json_script
    return env


@lru_cache(maxsize=1)
def _assets() -> tuple[Markup, Markup, str]:
    css = (TEMPLATE_DIR / "report.css").read_text(encoding="utf-8")
    js = (TEMPLATE_DIR / "report.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    return Markup(css), Markup(js), f"sha256-{digest}"


def render(template: str, view: BaseModel) -> str:
    css, js, script_hash = _assets()
    return environment().get_template(template).render(view=view, css=css, script=js, script_hash=script_hash)


def _umask() -> int:
    """The process umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_html(path: Path, html: str) -> Path:
    """Write atomically: a reader never sees half a report. The file gets the mode any file
    the user creates gets (0666 less the umask: 0644 under umask 022); mkstemp alone would
    leave it 0600, unreadable to a web server or a colleague."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
