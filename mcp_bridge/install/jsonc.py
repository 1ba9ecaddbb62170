"""Edit one member of a JSONC document (JSON with comments and trailing commas) and keep everything else.

VS Code, Zed and OpenCode read their settings as JSONC, and people comment them. Rewriting such a file
through `json.loads`/`json.dumps` would drop every comment and reorder nothing useful, so edits here are
splices: the document is parsed into spans, and only the bytes of the member being set or deleted change.
Plain JSON is a subset, so the same code edits Cursor's or Claude Desktop's files just as faithfully.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"')
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
_INDENT = "  "


class JsoncError(ValueError):
    """The text is not JSONC; the message gives the line and column."""


@dataclass
class _Node:
    start: int
    end: int
    kind: str  # "object", "array" or "scalar"
    members: list[_Member] = field(default_factory=list)
    items: list[_Node] = field(default_factory=list)


@dataclass
class _Member:
    key: str
    key_start: int
    value: _Node


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> JsoncError:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        return JsoncError(f"{what} at line {line}, column {column}")

    def skip(self) -> None:
        """Skip whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t\r\n\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline + 1
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = close + 2
            else:
                return

    def document(self) -> _Node:
        self.skip()
        node = self.value()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the document")
        return node

    def value(self) -> _Node:
        if self.pos >= len(self.text):
            raise self.fail("unexpected end of text")
        ch = self.text[self.pos]
        if ch == "{":
            return self.object()
        if ch == "[":
            return self.array()
        if ch == '"':
            start = self.pos
            self.string()
            return _Node(start, self.pos, "scalar")
        match = _SCALAR.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a value")
        self.pos = match.end()
        return _Node(match.start(), match.end(), "scalar")

    def string(self) -> str:
        match = _STRING.match(self.text, self.pos)
        try:
            value = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError as exc:
            raise self.fail(f"bad string ({exc.msg})") from None
        if not isinstance(value, str):
            raise self.fail("unterminated or malformed string")
        self.pos = match.end()  # type: ignore[union-attr]
        return value

    def object(self) -> _Node:
        node = _Node(self.pos, -1, "object")
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith("}", self.pos):
                break
            if not self.text.startswith('"', self.pos):
                raise self.fail("expected a member name in double quotes")
            key_start = self.pos
            key = self.string()
            self.skip()
            if not self.text.startswith(":", self.pos):
                raise self.fail("expected ':'")
            self.pos += 1
            self.skip()
            node.members.append(_Member(key, key_start, self.value()))
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("}", self.pos):
                raise self.fail("expected ',' or '}'")
        self.pos += 1
        node.end = self.pos
        return node

    def array(self) -> _Node:
        node = _Node(self.pos, -1, "array")
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith("]", self.pos):
                break
            node.items.append(self.value())
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("]", self.pos):
                raise self.fail("expected ',' or ']'")
        self.pos += 1
        node.end = self.pos
        return node


def _evaluate(text: str, node: _Node) -> Any:
    if node.kind == "object":
        return {m.key: _evaluate(text, m.value) for m in node.members}
    if node.kind == "array":
        return [_evaluate(text, item) for item in node.items]
    return json.loads(text[node.start:node.end])


def _root(text: str) -> _Node:
    node = _Parser(text).document()
    if node.kind != "object":
        raise JsoncError("the document is not an object")
    return node


def loads(text: str) -> Any:
    """The data in a JSONC text (comments and trailing commas allowed); JsoncError if it is not JSONC."""
    return _evaluate(text, _Parser(text).document())


def _line_indent(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    return re.match(r"[ \t]*", text[start:]).group(0)  # type: ignore[union-attr]


def _render(value: Any, indent: str) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)


def _comma_after(text: str, pos: int) -> int | None:
    """The position of the ',' that follows a value ending at `pos` (past comments), or None."""
    parser = _Parser(text)
    parser.pos = pos
    parser.skip()
    return parser.pos if text.startswith(",", parser.pos) else None


def _keeping_line_ends(text: str, edit: Callable[[str], str]) -> str:
    """Edit a CRLF document (Windows) as LF and give it back with CRLF, so new lines match the old ones."""
    if "\r\n" not in text:
        return edit(text)
    return edit(text.replace("\r\n", "\n")).replace("\n", "\r\n")


def set_value(text: str, path: tuple[str, ...], value: Any) -> str:
    """`text` with the member at `path` set to `value`, creating the objects on the way; nothing else changes."""
    return _keeping_line_ends(text, lambda lf: _set_value(lf, path, value))


def delete_value(text: str, path: tuple[str, ...]) -> str:
    """`text` without the member at `path` (unchanged when there is none); nothing else changes."""
    return _keeping_line_ends(text, lambda lf: _delete_value(lf, path))


def _set_value(text: str, path: tuple[str, ...], value: Any) -> str:
    if not text.strip():
        text = "{}\n"
    node = _root(text)
    for depth, key in enumerate(path):
        member = next((m for m in reversed(node.members) if m.key == key), None)
        if member is None:
            rest: Any = value
            for inner in reversed(path[depth + 1:]):
                rest = {inner: rest}
            return _insert(text, node, key, rest)
        if depth == len(path) - 1:
            indent = _line_indent(text, member.key_start)
            return text[:member.value.start] + _render(value, indent) + text[member.value.end:]
        if member.value.kind != "object":
            raise JsoncError(f"`{'.'.join(path[:depth + 1])}` is not an object")
        node = member.value
    raise JsoncError("an empty path names no member")


def _insert(text: str, node: _Node, key: str, value: Any) -> str:
    if node.members:
        last = node.members[-1]
        indent = _line_indent(text, last.key_start)
        member = f"{json.dumps(key)}: {_render(value, indent)}"
        comma = _comma_after(text, last.value.end)
        if comma is None:
            text = text[:last.value.end] + "," + text[last.value.end:]
            comma = last.value.end
        # After a comment that ends the last member's line, so that comment stays with its member.
        pos = comma + 1
        newline = text.find("\n", pos)
        rest = text[pos:len(text) if newline < 0 else newline]
        if newline >= 0 and (not rest.strip() or rest.lstrip().startswith("//")):
            pos = newline - 1 if text[newline - 1:newline] == "\r" else newline
        return text[:pos] + f"\n{indent}{member}" + text[pos:]
    outer = _line_indent(text, node.start)
    indent = outer + _INDENT
    member = f"{json.dumps(key)}: {_render(value, indent)}"
    close = node.end - 1
    between = text[node.start + 1:close]
    if between.strip():  # only comments inside: keep them, put ours after
        return text[:close].rstrip() + f"\n{indent}{member}\n{outer}" + text[close:]
    return text[:node.start + 1] + f"\n{indent}{member}\n{outer}" + text[close:]


def _delete_value(text: str, path: tuple[str, ...]) -> str:
    if not text.strip():
        return text
    node = _root(text)
    for depth, key in enumerate(path):
        index = next((i for i in range(len(node.members) - 1, -1, -1) if node.members[i].key == key), None)
        if index is None:
            return text
        member = node.members[index]
        if depth < len(path) - 1:
            if member.value.kind != "object":
                return text
            node = member.value
            continue
        comma = _comma_after(text, member.value.end)
        start = text.rfind("\n", 0, member.key_start) + 1
        if text[start:member.key_start].strip():
            start = member.key_start  # something else on the line before the key: cut from the key
        if comma is not None:
            end = comma + 1
            newline = re.match(r"[ \t]*(?:\r?\n)?", text[end:])
            end += newline.end() if newline else 0
            return text[:start] + text[end:]
        end = member.value.end
        newline = re.match(r"[ \t]*(?:\r?\n)?", text[end:])
        text = text[:start] + text[end + (newline.end() if newline else 0):]
        if index > 0:  # the last member: the comma before it goes too (comments around it stay)
            cut = _comma_after(text, node.members[index - 1].value.end)
            assert cut is not None  # members are separated by commas
            text = text[:cut] + text[cut + 1:]
        return text
    return text
