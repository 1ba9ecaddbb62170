"""The scope gate: who is calling, and may they use this tool.

The caller is identified again on every call (a revoked or expired key stops working at once, even
in a server that is already running); a tool is shown only to a caller whose scopes include the
tool's scope, and checked again before it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mcp_bridge.keys import KeyRecord, KeyStore, Rejected
from mcp_bridge.scopes import Scope, allows, format_scopes
from mcp_bridge.tools.base import Tool

DEFAULT_KEY_NAME = "default"


@dataclass(frozen=True)
class Caller:
    key_id: str | None
    """None for the key-less default identity."""
    name: str
    scopes: frozenset[Scope]


@dataclass(frozen=True)
class Refusal:
    tool: str
    reason: str


class Gate:
    def __init__(self, keys: KeyStore, presented_key: str | None, default_scopes: frozenset[Scope]) -> None:
        self._keys = keys
        self._key = presented_key
        # The HMAC of a fixed key never changes: compute it once, not per call.
        self._digest = keys.digest(presented_key) if presented_key else None
        self._default = Caller(None, DEFAULT_KEY_NAME, default_scopes)

    def identify(self) -> Caller | Rejected:
        if self._key is None:
            return self._default
        found = self._keys.authenticate(self._key, digest=self._digest)
        if isinstance(found, Rejected):
            return found
        return _caller(found)

    @staticmethod
    def visible(tools: Iterable[Tool], caller: Caller) -> list[Tool]:
        return [t for t in tools if allows(caller.scopes, t.scope)]

    @staticmethod
    def check(tool: Tool, caller: Caller) -> Refusal | None:
        if allows(caller.scopes, tool.scope):
            return None
        return Refusal(
            tool.name,
            f"refused: tool '{tool.name}' needs the '{tool.scope}' scope, and the bridge key "
            f"'{caller.name}' has {format_scopes(caller.scopes)}. Ask the user for a key with "
            f"'{tool.scope}' (`compass-bridge keys create --name NAME --scopes {tool.scope}`) "
            "or use a tool this key allows.",
        )


def _caller(record: KeyRecord) -> Caller:
    return Caller(record.id, record.name, record.scopes)
