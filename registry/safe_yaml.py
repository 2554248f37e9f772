"""Load a catalogue or suite YAML file within limits, so a hostile or broken file gets one
pointed error instead of eating the machine.

Why each limit: an alias bomb ("billion laughs": nine anchors each aliasing the previous one
ten times) is a few hundred bytes that expands to 10^9 nodes once converted to plain Python,
so expansion is counted *before* anything is built, from the parser's event stream (aliases
count the size of what they point at). ruamel's composer recurses once per nesting level, so
deep nesting ends in a RecursionError: depth is checked on the same event stream, which is
produced without recursion. Size is checked before the file is even read.

Values may not hold control characters (ESC and friends, written as YAML escapes): a name or
a prompt is printed to terminals and written into reports and requests.

Catalogues and suites are small (the project's 32-LoRA catalogue is ~40 KB, ~1,500 nodes), so
the limits are far above any real file.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Largest file read, in bytes.
MAX_BYTES = 2 * 1024 * 1024
#: Deepest nesting of mappings/sequences.
MAX_DEPTH = 40
#: Most nodes after aliases are expanded.
MAX_NODES = 200_000


class YamlLimitError(ValueError):
    """The file breaks a limit (or is not readable YAML); `line` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES


def read_text(path: Path, limits: Limits = Limits()) -> str:
    """The file's text, refusing one larger than the limit without reading it."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise YamlLimitError(f"file is {size:,} bytes; the limit is {limits.max_bytes:,} (is this the right file?)")
    with path.open("rb") as fh:
        data = fh.read(limits.max_bytes + 1)  # a file growing while we read is still bounded
    if len(data) > limits.max_bytes:
        raise YamlLimitError(f"file is larger than the limit of {limits.max_bytes:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLimitError(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def check_limits(text: str, limits: Limits = Limits()) -> None:
    """Raise `YamlLimitError` if `text` is too large, too deep, or expands too far."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent

    if len(text) > limits.max_bytes:
        raise YamlLimitError(f"text is {len(text):,} characters; the limit is {limits.max_bytes:,}")
    # one counter per open collection; a closed one adds its total to its parent and, if it
    # carried an anchor, is remembered so each alias of it counts its full size
    stack: list[list[Any]] = [[0, None]]  # [nodes, anchor]
    anchored: dict[str, int] = {}
    for event in YAML(typ="rt").parse(io.StringIO(text)):
        if isinstance(event, CollectionStartEvent):
            if len(stack) > limits.max_depth:
                raise YamlLimitError(f"nested more than {limits.max_depth} levels deep", _line(event))
            stack.append([1, event.anchor])
        elif isinstance(event, CollectionEndEvent):
            nodes, anchor = stack.pop()
            if anchor:
                anchored[anchor] = nodes
            stack[-1][0] += nodes
        elif isinstance(event, AliasEvent):
            stack[-1][0] += anchored.get(event.anchor, 1)
        elif isinstance(event, NodeEvent):  # a scalar
            stack[-1][0] += 1
            bad = control_character(getattr(event, "value", None))
            if bad:
                raise YamlLimitError(
                    f"a value holds the control character {bad} (a terminal escape sequence?); "
                    "remove it: it would reach terminals, reports and provider requests", _line(event))
            if event.anchor:
                anchored[event.anchor] = 1
        else:
            continue
        total = sum(frame[0] for frame in stack)
        if total > limits.max_nodes:
            raise YamlLimitError(
                f"expands to more than {limits.max_nodes:,} values (aliases of aliases, a 'billion laughs' "
                "file?); write the values out or split the file", _line(event))


#: C0 and C1 control characters and DEL, except tab and newline (which text may hold).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def control_character(text: str | None) -> str | None:
    """The first control character in `text` as `U+001B`, or None. YAML's reader refuses raw
    ones; this catches those written as escapes ("\\e[31m", "\\x1b")."""
    if not text:
        return None
    match = _CONTROL.search(text)
    return f"U+{ord(match.group()):04X}" if match else None


def strip_controls(text: str) -> str:
    """`text` without control characters (tab and newline kept): what outside text (a
    provider's message, a file's value) becomes before a terminal or a report shows it."""
    return _CONTROL.sub("", text) if text else text


def load(text: str, limits: Limits = Limits()) -> Any:
    """Round-trip load (line numbers kept) after `check_limits`; YAML syntax errors become
    `YamlLimitError` with their line too, so callers handle one exception."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        check_limits(text, limits)
        return YAML(typ="rt").load(io.StringIO(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        parts = [str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x]
        raise YamlLimitError(f"invalid YAML: {' '.join(parts) or exc}", mark.line + 1 if mark else None) from None
    except RecursionError:  # belt and braces: the depth check should have caught it
        raise YamlLimitError(f"nested too deeply (limit {limits.max_depth})") from None


def load_file(path: Path, limits: Limits = Limits()) -> Any:
    return load(read_text(path, limits), limits)


def _line(event: Any) -> int | None:
    mark = getattr(event, "start_mark", None)
    return mark.line + 1 if mark is not None else None
