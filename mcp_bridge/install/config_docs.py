"""Client config documents (JSON/JSONC and YAML) edited one member at a time, keeping the user's comments.

Each document offers the same four operations on a path of member names, so a client spec only says which
format its file is in and where its servers live.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

from mcp_bridge.install import jsonc
from mcp_bridge.install.places import Format


class DocumentError(ValueError):
    """The file cannot be parsed as its format; the message says where."""


class Document(Protocol):
    def get(self, path: tuple[str, ...]) -> Any: ...

    def set(self, path: tuple[str, ...], value: Any) -> None: ...

    def delete(self, path: tuple[str, ...]) -> None: ...

    def data(self) -> Any:
        """The whole document as plain Python data."""
        ...

    def dump(self) -> str: ...


def _walk(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


class JsoncDocument:
    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._data = jsonc.loads(text) if text.strip() else {}
        except jsonc.JsoncError as exc:
            raise DocumentError(f"not JSON or JSONC: {exc}") from None

    def get(self, path: tuple[str, ...]) -> Any:
        return _walk(self._data, path)

    def set(self, path: tuple[str, ...], value: Any) -> None:
        self.text = jsonc.set_value(self.text, path, value)
        self._data = jsonc.loads(self.text)

    def delete(self, path: tuple[str, ...]) -> None:
        self.text = jsonc.delete_value(self.text, path)
        self._data = jsonc.loads(self.text) if self.text.strip() else {}

    def data(self) -> Any:
        return self._data

    def dump(self) -> str:
        return self.text


class YamlDocument:
    """YAML through ruamel's round-trip mode, which keeps comments, key order and style."""

    def __init__(self, text: str) -> None:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        self._yaml = YAML(typ="rt")
        self._yaml.preserve_quotes = True
        try:
            self._doc: Any = self._yaml.load(text) if text.strip() else None
        except YAMLError as exc:
            raise DocumentError(f"not YAML: {exc}") from None
        if self._doc is None:
            from ruamel.yaml.comments import CommentedMap

            self._doc = CommentedMap()

    def get(self, path: tuple[str, ...]) -> Any:
        return _walk(self._doc, path)

    def set(self, path: tuple[str, ...], value: Any) -> None:
        from ruamel.yaml.comments import CommentedMap

        node: Any = self._doc
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = CommentedMap()
            node = node[key]
        node[path[-1]] = value

    def delete(self, path: tuple[str, ...]) -> None:
        parent = _walk(self._doc, path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)

    def data(self) -> Any:
        return _plain(self._doc)

    def dump(self) -> str:
        out = io.StringIO()
        self._yaml.dump(self._doc, out)
        return out.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse(fmt: Format, text: str) -> Document:
    return JsoncDocument(text) if fmt is Format.JSON else YamlDocument(text)
