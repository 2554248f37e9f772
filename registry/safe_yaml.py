"""Load a catalogue or suite YAML file within limits, so a hostile or broken file gets one
pointed error instead of eating the machine.

Why each limit: an alias bomb ("billion laughs": nine anchors each aliasing the previous one
ten times) is a few hundred bytes that expands to 10^9 nodes once converted to plain Python,
so expansion is counted while the node graph is composed, before any plain Python object is
built (an alias counts the size of what it points at, though ruamel builds it once).
ruamel's composer recurses once per nesting level, so deep nesting ended in a RecursionError:
its own `max_depth` stops it first. Size is checked before the file is even read. One pass:
the limits cost nothing beyond the load itself.

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


def _composer_class(limits: Limits) -> type:
    """ruamel's Composer, counting as it builds: each collection's size with its aliases
    expanded (an alias costs the full size of what it points at, though it is built once),
    and every scalar checked for control characters. One pass; depth is ruamel's own
    `max_depth`, checked before each nested node is composed."""
    from ruamel.yaml.composer import Composer
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    class LimitedComposer(Composer):
        def compose_node(self, parent: Any, index: Any) -> Any:
            node = super().compose_node(parent, index)
            sizes: dict[int, int] = self.__dict__.setdefault("_sizes", {})
            if id(node) not in sizes:  # an alias returns a node already counted
                if isinstance(node, SequenceNode):
                    size = 1 + sum(sizes.get(id(child), 1) for child in node.value)
                elif isinstance(node, MappingNode):
                    size = 1 + sum(sizes.get(id(k), 1) + sizes.get(id(v), 1) for k, v in node.value)
                else:
                    size = 1
                if size > limits.max_nodes:
                    raise YamlLimitError(
                        f"expands to more than {limits.max_nodes:,} values (aliases of aliases, a 'billion laughs' "
                        "file?); write the values out or split the file", node.start_mark.line + 1)
                sizes[id(node)] = size
                self.__dict__.setdefault("_keep", []).append(node)  # ids stay unique while counted
            return node

        def compose_scalar_node(self, anchor: Any) -> Any:
            event = self.parser.peek_event()
            bad = control_character(event.value)
            if bad:
                raise YamlLimitError(
                    f"a value holds the control character {bad} (a terminal escape sequence?); "
                    "remove it: it would reach terminals, reports and provider requests", event.start_mark.line + 1)
            return super().compose_scalar_node(anchor)

    return LimitedComposer


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
    """Round-trip load (line numbers kept) within `limits`; YAML syntax errors become
    `YamlLimitError` with their line too, so callers handle one exception."""
    from ruamel.yaml import YAML
    from ruamel.yaml.composer import MaxDepthExceededError
    from ruamel.yaml.error import YAMLError

    if len(text) > limits.max_bytes:
        raise YamlLimitError(f"text is {len(text):,} characters; the limit is {limits.max_bytes:,}")
    yaml = YAML(typ="rt")
    yaml.Composer = _composer_class(limits)
    yaml.max_depth = limits.max_depth
    try:
        return yaml.load(io.StringIO(text))
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        raise YamlLimitError(f"nested more than {limits.max_depth} levels deep", mark.line + 1 if mark else None) from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        parts = [str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x]
        raise YamlLimitError(f"invalid YAML: {' '.join(parts) or exc}", mark.line + 1 if mark else None) from None
    except RecursionError:  # belt and braces: max_depth should have stopped it
        raise YamlLimitError(f"nested too deeply (limit {limits.max_depth})") from None


def load_file(path: Path, limits: Limits = Limits()) -> Any:
    return load(read_text(path, limits), limits)
